"""CO-RE: rewrite the instructions clang marked in .BTF.ext so they fit the running kernel's
types, with libbpf's semantics (tools/lib/bpf/relo_core.c; cilium/ebpf btf/core.go).

Pure: (local BTF, target BTF(s), relocation records, instructions) -> patched instructions
and one `Applied` per record. Nothing here touches the kernel: loader.py supplies the
kernel's BTF (btf_index.kernel_btf) and the program's instructions.

How a record is resolved, as libbpf does it:
- the access string ("0:1:2") is walked over the LOCAL type: the first number indexes the
  root as an array, each next one a member (struct/union) or an element (array);
- candidates are the target types whose name, without a `___flavor` suffix, equals the
  local one's, of a compatible kind (same kind, or both enums); vmlinux first, kernel
  modules only if vmlinux has none;
- each candidate is matched (fields by name, through anonymous members, with compatible
  types; types by structure; enumerators by name); every matching candidate must give the
  same value, or the relocation is ambiguous (an error);
- with no match, existence checks give 0 and other kinds poison the instruction: it
  becomes `call 0xbad2310`, which the verifier accepts only in dead code, so a
  `bpf_core_field_exists()` guard keeps loading (an ld_imm64 loses both halves).
"""
from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .btf_index import (
    ARRAY,
    BTF_INT_SIGNED,
    ENUM,
    ENUM64,
    FLOAT,
    FUNC_PROTO,
    FWD,
    INT,
    PTR,
    STRUCT,
    UNION,
    UNKN,
    BtfIndex,
    essential_name,
)
from .errors import CoreRelocationError, MalformedObjectError

INSN_SIZE = 8
POISON_IMM = 0xBAD2310  # libbpf's "bad relo" helper id: "invalid func unknown#195896080"
BPF_JMP_CALL = 0x85
BPF_LD_IMM64 = 0x18
SPEC_MAX_LEN = 64  # libbpf's BPF_CORE_SPEC_MAX_LEN
CORE_RELO_SIZE = 16
_MAX_DEPTH = 32
_BPF_LD, _BPF_LDX, _BPF_ST, _BPF_STX, _BPF_ALU, _BPF_ALU64 = 0, 1, 2, 3, 4, 7
_SIZE_BITS = {1: 0x10, 2: 0x08, 4: 0x00, 8: 0x18}  # bytes -> BPF_B/H/W/DW
_BITS_SIZE = {v: k for k, v in _SIZE_BITS.items()}
_INSN = struct.Struct("<BBhi")


class Kind(enum.IntEnum):
    """enum bpf_core_relo_kind; `str()` gives libbpf's name."""

    FIELD_BYTE_OFFSET = 0
    FIELD_BYTE_SIZE = 1
    FIELD_EXISTS = 2
    FIELD_SIGNED = 3
    FIELD_LSHIFT_U64 = 4
    FIELD_RSHIFT_U64 = 5
    TYPE_ID_LOCAL = 6
    TYPE_ID_TARGET = 7
    TYPE_EXISTS = 8
    TYPE_SIZE = 9
    ENUMVAL_EXISTS = 10
    ENUMVAL_VALUE = 11
    TYPE_MATCHES = 12

    def __str__(self) -> str:
        return _KIND_NAMES[self]

    @property
    def is_field(self) -> bool:
        return self <= Kind.FIELD_RSHIFT_U64

    @property
    def is_type(self) -> bool:
        return self in (Kind.TYPE_ID_LOCAL, Kind.TYPE_ID_TARGET, Kind.TYPE_EXISTS,
                        Kind.TYPE_SIZE, Kind.TYPE_MATCHES)

    @property
    def is_enumval(self) -> bool:
        return self in (Kind.ENUMVAL_EXISTS, Kind.ENUMVAL_VALUE)


_KIND_NAMES = {
    Kind.FIELD_BYTE_OFFSET: "byte_off", Kind.FIELD_BYTE_SIZE: "byte_sz",
    Kind.FIELD_EXISTS: "field_exists", Kind.FIELD_SIGNED: "signed",
    Kind.FIELD_LSHIFT_U64: "lshift_u64", Kind.FIELD_RSHIFT_U64: "rshift_u64",
    Kind.TYPE_ID_LOCAL: "local_type_id", Kind.TYPE_ID_TARGET: "target_type_id",
    Kind.TYPE_EXISTS: "type_exists", Kind.TYPE_SIZE: "type_size",
    Kind.ENUMVAL_EXISTS: "enumval_exists", Kind.ENUMVAL_VALUE: "enumval_value",
    Kind.TYPE_MATCHES: "type_matches",
}


@dataclass(frozen=True)
class CoreRelo:
    """One bpf_core_relo record of .BTF.ext: `insn_off` in bytes within its section."""

    section: str
    insn_off: int
    type_id: int
    access: str
    kind: Kind


@dataclass(frozen=True)
class Applied:
    """What one relocation did: `insn` indexes the instructions handed to relocate()."""

    insn: int
    relo: CoreRelo
    type: str  # "struct sk_buff"
    spec: str  # "struct sk_buff.len (0:0 @ offset 0)", as libbpf prints a spec
    old: int
    new: int
    poisoned: bool
    target: str  # where the type was found ("vmlinux", a module) or "" when nowhere


# ---------------------------------------------------------------------- .BTF.ext records

def parse_core_relos(ext: bytes, read: Callable[[int], str]) -> dict[str, list[CoreRelo]]:
    """The CO-RE records of .BTF.ext by section name. `read(offset)` reads the object's
    BTF string table (section names and access strings live there)."""
    found: dict[str, list[CoreRelo]] = {}
    try:
        if len(ext) < 8:
            raise MalformedObjectError(f"corrupt BTF: .BTF.ext is {len(ext)} bytes")
        hdr_len = struct.unpack_from("<I", ext, 4)[0]
        if hdr_len < 32:  # no core_relo_off/len fields: no CO-RE
            return found
        core_off, core_len = struct.unpack_from("<II", ext, 24)
        if core_len == 0:
            return found
        start = hdr_len + core_off
        if start + core_len > len(ext):
            raise MalformedObjectError("corrupt BTF: .BTF.ext CO-RE area runs past the "
                                       "section")
        area = ext[start:start + core_len]
        rec_size = struct.unpack_from("<I", area, 0)[0]
        if rec_size < CORE_RELO_SIZE or rec_size > 256:
            raise MalformedObjectError(f"corrupt BTF: .BTF.ext CO-RE record size {rec_size}")
        pos = 4
        while pos < len(area):
            sec_name_off, num = struct.unpack_from("<II", area, pos)
            pos += 8
            if pos + num * rec_size > len(area):
                raise MalformedObjectError("corrupt BTF: .BTF.ext CO-RE records run past "
                                           "their area")
            section = read(sec_name_off)
            records = found.setdefault(section, [])
            for _ in range(num):
                insn_off, type_id, access_off, kind = struct.unpack_from("<IIII", area, pos)
                pos += rec_size
                if kind not in Kind._value2member_map_:
                    raise MalformedObjectError(f"corrupt BTF: CO-RE relocation kind {kind} "
                                               "is unknown")
                if insn_off % INSN_SIZE:
                    raise MalformedObjectError(f"corrupt BTF: CO-RE relocation at byte "
                                               f"{insn_off} is not on an instruction")
                records.append(CoreRelo(section, insn_off, type_id, read(access_off),
                                        Kind(kind)))
    except struct.error as exc:
        raise MalformedObjectError(f"corrupt BTF: .BTF.ext truncated ({exc})") from None
    return found


# ---------------------------------------------------------------------- specs

@dataclass
class _Acc:
    type_id: int  # the composite / array / enum the accessor indexes
    idx: int
    name: str  # "" for an array index


@dataclass
class _Spec:
    btf: BtfIndex
    root_type_id: int
    accs: list[_Acc]
    raw: list[int]
    bit_offset: int = 0


def _is_composite(btf: BtfIndex, type_id: int) -> bool:
    return btf.kind(type_id) in (STRUCT, UNION)


def _is_any_enum(kind: int) -> bool:
    return kind in (ENUM, ENUM64)


def _kinds_compat(btf1: BtfIndex, id1: int, btf2: BtfIndex, id2: int) -> bool:
    k1, k2 = btf1.kind(id1), btf2.kind(id2)
    return k1 == k2 or (_is_any_enum(k1) and _is_any_enum(k2))


def _is_flex_array(btf: BtfIndex, acc: _Acc | None, nelems: int) -> bool:
    """A zero-length array that is the last member of its struct."""
    if nelems != 0 or acc is None or not acc.name:
        return False
    return acc.idx == btf.vlen(acc.type_id) - 1


def parse_spec(btf: BtfIndex, relo: CoreRelo) -> _Spec:
    """bpf_core_parse_spec: the local side of a relocation."""
    if len(relo.access) > 12 * SPEC_MAX_LEN:  # checked before splitting a hostile string
        raise CoreRelocationError(f"CO-RE access string of {len(relo.access)} characters "
                                  "is too long")
    try:
        raw = [int(part) for part in relo.access.split(":")]
    except ValueError:
        raise CoreRelocationError(f"CO-RE access string {relo.access!r} is not "
                                  "colon-separated numbers") from None
    if not raw or len(raw) > SPEC_MAX_LEN or min(raw) < 0:
        raise CoreRelocationError(f"CO-RE access string {relo.access!r} is invalid")
    if not 0 < relo.type_id < btf.count:
        raise CoreRelocationError(f"CO-RE relocation refers to type #{relo.type_id}, "
                                  "which the object's BTF does not have")
    spec = _Spec(btf, relo.type_id, [], raw)
    if relo.kind.is_type:
        if relo.access != "0":
            raise CoreRelocationError(f"type relocation with access string {relo.access!r} "
                                      "(expected \"0\")")
        return spec
    type_id = btf.skip_mods_and_typedefs(relo.type_id)
    if relo.kind.is_enumval:
        if not _is_any_enum(btf.kind(type_id)) or len(raw) > 1 or raw[0] >= btf.vlen(type_id):
            raise CoreRelocationError(f"enum value relocation {relo.access!r} on "
                                      f"{btf.describe(type_id)} is invalid")
        spec.accs.append(_Acc(type_id, raw[0], btf.enumerators(type_id)[raw[0]][0]))
        return spec
    size = btf.resolve_size(type_id)
    if size < 0:
        raise CoreRelocationError(f"{btf.describe(type_id)} has no size")
    spec.accs.append(_Acc(type_id, raw[0], ""))
    spec.bit_offset = raw[0] * size * 8
    for access_idx in raw[1:]:
        type_id = btf.skip_mods_and_typedefs(type_id)
        kind = btf.kind(type_id)
        if kind in (STRUCT, UNION):
            if access_idx >= btf.vlen(type_id):
                raise CoreRelocationError(f"member {access_idx} of {btf.describe(type_id)} "
                                          f"does not exist (access string {relo.access!r})")
            member = btf.member(type_id, access_idx)
            spec.bit_offset += member.bit_offset
            if member.name:
                spec.accs.append(_Acc(type_id, access_idx, member.name))
            type_id = member.type
        elif kind == ARRAY:
            elem, _index, nelems = btf.array(type_id)
            flex = _is_flex_array(btf, spec.accs[-1] if spec.accs else None, nelems)
            if not flex and access_idx >= nelems:
                raise CoreRelocationError(f"index {access_idx} is past the {nelems} elements "
                                          f"of an array (access string {relo.access!r})")
            type_id = btf.skip_mods_and_typedefs(elem)
            spec.accs.append(_Acc(type_id, access_idx, ""))  # the element type, as libbpf
            size = btf.resolve_size(type_id)
            if size < 0:
                raise CoreRelocationError(f"array element {btf.describe(type_id)} has no size")
            spec.bit_offset += access_idx * size * 8
        else:
            raise CoreRelocationError(f"access string {relo.access!r} goes into "
                                      f"{btf.describe(type_id)}, which has no members")
    return spec


def describe_spec(spec: _Spec, kind: Kind) -> str:
    """libbpf's spec text: `struct sk_buff.len (0:0 @ offset 0)`."""
    btf = spec.btf
    text = btf.describe(spec.root_type_id)
    if kind.is_type:
        return text
    if kind.is_enumval:
        acc = spec.accs[0]
        return f"{text}::{acc.name} = {btf.enumerators(acc.type_id)[acc.idx][1] & 0xFFFFFFFF}"
    parts = "".join(f".{a.name}" if a.name else f"[{a.idx}]" for a in spec.accs[1:])
    if spec.accs and spec.accs[0].idx:
        parts = f"[{spec.accs[0].idx}]" + parts
    access = ":".join(str(i) for i in spec.raw)
    return f"{text}{parts} ({access} @ offset {spec.bit_offset // 8})"


# ---------------------------------------------------------------------- compatibility

def fields_compat(lb: BtfIndex, lid: int, tb: BtfIndex, tid: int) -> bool:
    """bpf_core_fields_are_compat."""
    for _ in range(_MAX_DEPTH):
        lid, tid = lb.skip_mods_and_typedefs(lid), tb.skip_mods_and_typedefs(tid)
        if _is_composite(lb, lid) and _is_composite(tb, tid):
            return True
        if not _kinds_compat(lb, lid, tb, tid):
            return False
        kind = lb.kind(lid)
        if kind in (PTR, FLOAT):
            return True
        if kind in (FWD, ENUM, ENUM64):
            ln, tn = essential_name(lb.name(lid)), essential_name(tb.name(tid))
            return not ln or not tn or ln == tn
        if kind == INT:
            return lb.int_encoding(lid)[1] == 0 and tb.int_encoding(tid)[1] == 0
        if kind == ARRAY:
            lid, tid = lb.array(lid)[0], tb.array(tid)[0]
            continue
        return False
    raise CoreRelocationError("types nest too deeply for CO-RE")


def types_compat(lb: BtfIndex, lid: int, tb: BtfIndex, tid: int, level: int = _MAX_DEPTH
                 ) -> bool:
    """bpf_core_types_are_compat (TYPE_EXISTS, TYPE_SIZE, TYPE_ID_TARGET)."""
    if not _kinds_compat(lb, lid, tb, tid):
        return False
    for _ in range(_MAX_DEPTH):
        lid, tid = lb.skip_mods_and_typedefs(lid), tb.skip_mods_and_typedefs(tid)
        if not _kinds_compat(lb, lid, tb, tid):
            return False
        kind = lb.kind(lid)
        if kind in (UNKN, STRUCT, UNION, ENUM, ENUM64, FWD):
            return True
        if kind == INT:
            return lb.int_encoding(lid)[1] == 0 and tb.int_encoding(tid)[1] == 0
        if kind == PTR:
            lid, tid = lb.size_or_type(lid), tb.size_or_type(tid)
        elif kind == ARRAY:
            lid, tid = lb.array(lid)[0], tb.array(tid)[0]
        elif kind == FUNC_PROTO:
            lp, tp = lb.params(lid), tb.params(tid)
            if len(lp) != len(tp):
                return False
            for lparam, tparam in zip(lp, tp, strict=True):
                if level <= 0:
                    raise CoreRelocationError("function prototypes nest too deeply")
                if not types_compat(lb, lb.skip_mods_and_typedefs(lparam), tb,
                                    tb.skip_mods_and_typedefs(tparam), level - 1):
                    return False
            lid, tid = lb.size_or_type(lid), tb.size_or_type(tid)
        else:
            return False
    raise CoreRelocationError("types nest too deeply for CO-RE")


def _names_match(lb: BtfIndex, lname: str, tname: str) -> bool:
    if not tname:
        return not lname
    return essential_name(lname) == essential_name(tname)


def types_match(lb: BtfIndex, lid: int, tb: BtfIndex, tid: int, behind_ptr: bool = False,
                level: int = _MAX_DEPTH) -> bool:
    """bpf_core_types_match (TYPE_MATCHES): stricter than types_compat (sizes, signedness,
    members and enumerators by name)."""
    if level <= 0:
        raise CoreRelocationError("types nest too deeply for CO-RE")
    for _ in range(_MAX_DEPTH):
        lid, tid = lb.skip_mods_and_typedefs(lid), tb.skip_mods_and_typedefs(tid)
        if not _names_match(lb, lb.name(lid), tb.name(tid)):
            return False
        lk, tk = lb.kind(lid), tb.kind(tid)
        if lk == UNKN:
            return lk == tk
        if lk == FWD:
            lflag = lb.kflag(lid)
            if behind_ptr:
                if lk == tk:
                    return lflag == tb.kflag(tid)
                return (tk == STRUCT and not lflag) or (tk == UNION and lflag)
            return lk == tk and lflag == tb.kflag(tid)
        if lk in (ENUM, ENUM64):
            return _is_any_enum(tk) and _enums_match(lb, lid, tb, tid)
        if lk in (STRUCT, UNION):
            if behind_ptr:
                if lk == tk:
                    return True
                return tk == FWD and (lk == UNION) == tb.kflag(tid)
            return lk == tk and _composites_match(lb, lid, tb, tid, behind_ptr, level)
        if lk == INT:
            if lk != tk:
                return False
            return (lb.size_or_type(lid) == tb.size_or_type(tid)
                    and lb.int_encoding(lid)[0] & BTF_INT_SIGNED
                    == tb.int_encoding(tid)[0] & BTF_INT_SIGNED)
        if lk == PTR:
            if lk != tk:
                return False
            behind_ptr = True
            lid, tid = lb.size_or_type(lid), tb.size_or_type(tid)
        elif lk == ARRAY:
            if lk != tk or lb.array(lid)[2] != tb.array(tid)[2]:
                return False
            lid, tid = lb.array(lid)[0], tb.array(tid)[0]
        elif lk == FUNC_PROTO:
            if lk != tk:
                return False
            lp, tp = lb.params(lid), tb.params(tid)
            if len(lp) != len(tp):
                return False
            for lparam, tparam in zip(lp, tp, strict=True):
                if not types_match(lb, lparam, tb, tparam, behind_ptr, level - 1):
                    return False
            lid, tid = lb.size_or_type(lid), tb.size_or_type(tid)
        else:
            return False
    raise CoreRelocationError("types nest too deeply for CO-RE")


def _enums_match(lb: BtfIndex, lid: int, tb: BtfIndex, tid: int) -> bool:
    if lb.size_or_type(lid) != tb.size_or_type(tid) or lb.vlen(lid) > tb.vlen(tid):
        return False
    target_names = [name for name, _v in tb.enumerators(tid)]
    return all(any(_names_match(lb, name, t) for t in target_names)
               for name, _v in lb.enumerators(lid))


def _composites_match(lb: BtfIndex, lid: int, tb: BtfIndex, tid: int, behind_ptr: bool,
                      level: int) -> bool:
    if lb.vlen(lid) > tb.vlen(tid):
        return False
    targets = tb.members(tid)
    for lm in lb.members(lid):
        if not any(_names_match(lb, lm.name, tm.name)
                   and types_match(lb, lm.type, tb, tm.type, behind_ptr, level - 1)
                   for tm in targets):
            return False
    return True


# ---------------------------------------------------------------------- matching

def _match_member(local: _Spec, acc: _Acc, tb: BtfIndex, tid: int, targ: _Spec,
                  depth: int = 0) -> tuple[bool, int]:
    """bpf_core_match_member: find local member `acc` in target composite `tid` (through
    anonymous members); on success the accessor is pushed onto `targ`. Returns (found,
    the member's type id)."""
    if depth > _MAX_DEPTH:
        raise CoreRelocationError("anonymous members nest too deeply for CO-RE")
    lb = local.btf
    local_member = lb.member(acc.type_id, acc.idx)
    tid = tb.skip_mods_and_typedefs(tid)
    if not _is_composite(tb, tid):
        return False, 0
    for i, member in enumerate(tb.members(tid)):
        if len(targ.raw) >= SPEC_MAX_LEN:
            raise CoreRelocationError("CO-RE access nests too deeply")
        targ.bit_offset += member.bit_offset
        targ.raw.append(i)
        if not member.name:
            found, next_id = _match_member(local, acc, tb, member.type, targ, depth + 1)
            if found:
                return found, next_id
        elif member.name == local_member.name:
            if fields_compat(lb, local_member.type, tb, member.type):
                targ.accs.append(_Acc(tid, i, member.name))
                return True, member.type
            return False, 0
        targ.bit_offset -= member.bit_offset
        targ.raw.pop()
    return False, 0


def match_spec(local: _Spec, kind: Kind, tb: BtfIndex, tid: int) -> _Spec | None:
    """bpf_core_spec_match: the target side for candidate `tid`, or None."""
    targ = _Spec(tb, tid, [], [])
    lb = local.btf
    if kind.is_type:
        if kind == Kind.TYPE_MATCHES:
            ok = types_match(lb, local.root_type_id, tb, tid)
        else:
            ok = types_compat(lb, local.root_type_id, tb, tid)
        return targ if ok else None
    if kind.is_enumval:
        tid = tb.skip_mods_and_typedefs(tid)
        if not _is_any_enum(tb.kind(tid)):
            return None
        want = essential_name(local.accs[0].name)
        for i, (name, _value) in enumerate(tb.enumerators(tid)):
            if essential_name(name) == want:
                targ.accs.append(_Acc(tid, i, name))
                targ.raw.append(i)
                return targ
        return None
    for i, acc in enumerate(local.accs):
        tid = tb.skip_mods_and_typedefs(tid)
        if acc.name:
            found, tid = _match_member(local, acc, tb, tid, targ)
            if not found:
                return None
            continue
        if i > 0:
            if tb.kind(tid) != ARRAY:
                return None
            elem, _index, nelems = tb.array(tid)
            if not _is_flex_array(tb, targ.accs[-1] if targ.accs else None, nelems) \
                    and acc.idx >= nelems:
                return None
            tid = tb.skip_mods_and_typedefs(elem)
        if len(targ.raw) >= SPEC_MAX_LEN:
            raise CoreRelocationError("CO-RE access nests too deeply")
        targ.accs.append(_Acc(tid, acc.idx, ""))
        targ.raw.append(acc.idx)
        size = tb.resolve_size(tid)
        if size < 0:
            raise CoreRelocationError(f"target {tb.describe(tid)} has no size")
        targ.bit_offset += acc.idx * size * 8
    return targ


# ---------------------------------------------------------------------- values

class _Poison(Exception):
    """The relocation cannot be satisfied: poison the instruction (libbpf's -EUCLEAN)."""


@dataclass
class _Res:
    orig: int = 0
    new: int = 0
    poison: bool = False
    validate: bool = True
    orig_sz: int = 0
    new_sz: int = 0
    fail_memsz_adjust: bool = False


def _field_value(kind: Kind, spec: _Spec | None, where: str) -> tuple[int, int, int, bool]:
    """bpf_core_calc_field_relo: (value, field size, field type id, validate)."""
    if kind == Kind.FIELD_EXISTS:
        return (1 if spec else 0), 0, 0, True
    if spec is None:
        raise _Poison
    btf, acc = spec.btf, spec.accs[-1]
    if not acc.name:
        if kind not in (Kind.FIELD_BYTE_OFFSET, Kind.FIELD_BYTE_SIZE):
            raise CoreRelocationError(f"{where}: {kind} cannot be applied to an array "
                                      "element")
        size = btf.resolve_size(acc.type_id)
        if size < 0:
            raise CoreRelocationError(f"{where}: {btf.describe(acc.type_id)} has no size")
        if kind == Kind.FIELD_BYTE_OFFSET:
            return spec.bit_offset // 8, size, acc.type_id, True
        return size, 0, 0, True
    member = btf.member(acc.type_id, acc.idx)
    field_type = btf.skip_mods_and_typedefs(member.type)
    bit_off, bit_sz = spec.bit_offset, member.bitfield_size
    bitfield = bit_sz > 0
    if bitfield:
        byte_sz = btf.size_or_type(field_type)
        byte_off = bit_off // 8 // byte_sz * byte_sz
        while bit_off + bit_sz - byte_off * 8 > byte_sz * 8:
            if byte_sz >= 8:
                raise CoreRelocationError(f"{where}: the bitfield cannot be read with one "
                                          "64-bit load")
            byte_sz *= 2
            byte_off = bit_off // 8 // byte_sz * byte_sz
    else:
        byte_sz = btf.resolve_size(field_type)
        if byte_sz < 0:
            raise CoreRelocationError(f"{where}: {btf.describe(field_type)} has no size")
        byte_off = bit_off // 8
        bit_sz = byte_sz * 8
    validate = not bitfield
    if kind == Kind.FIELD_BYTE_OFFSET:
        return byte_off, (0 if bitfield else byte_sz), (0 if bitfield else field_type), validate
    if kind == Kind.FIELD_BYTE_SIZE:
        return byte_sz, 0, 0, validate
    if kind == Kind.FIELD_SIGNED:
        ftk = btf.kind(field_type)
        signed = ((_is_any_enum(ftk) and btf.kflag(field_type))
                  or (ftk == INT and bool(btf.int_encoding(field_type)[0] & BTF_INT_SIGNED)))
        return int(signed), 0, 0, True
    if kind == Kind.FIELD_LSHIFT_U64:
        return 64 - (bit_off + bit_sz - byte_off * 8), 0, 0, validate
    return 64 - bit_sz, 0, 0, True  # FIELD_RSHIFT_U64


def _type_value(kind: Kind, spec: _Spec | None) -> int:
    if spec is None:
        return 0
    if kind == Kind.TYPE_ID_TARGET:
        return spec.root_type_id
    if kind in (Kind.TYPE_EXISTS, Kind.TYPE_MATCHES):
        return 1
    size = spec.btf.resolve_size(spec.root_type_id)  # TYPE_SIZE
    if size < 0:
        raise CoreRelocationError(f"{spec.btf.describe(spec.root_type_id)} has no size")
    return size


def _enum_value(kind: Kind, spec: _Spec | None) -> int:
    if kind == Kind.ENUMVAL_EXISTS:
        return 1 if spec else 0
    if spec is None:
        raise _Poison
    acc = spec.accs[0]
    return spec.btf.enumerators(acc.type_id)[acc.idx][1]


def _is_int_unsigned(btf: BtfIndex, type_id: int) -> bool:
    return btf.kind(type_id) == INT and btf.int_encoding(type_id)[0] != BTF_INT_SIGNED


def calc(kind: Kind, local: _Spec, targ: _Spec | None, where: str) -> _Res:
    """bpf_core_calc_relo: the value the instruction holds (local) and must hold (target)."""
    res = _Res()
    try:
        if kind.is_field:
            res.orig, res.orig_sz, orig_type, res.validate = _field_value(kind, local, where)
            res.new, res.new_sz, new_type, _ = _field_value(kind, targ, where)
            if res.orig_sz != res.new_sz:
                assert targ is not None
                lb, tb = local.btf, targ.btf
                both_ptrs = lb.kind(orig_type) == PTR and tb.kind(new_type) == PTR
                both_unsigned = _is_int_unsigned(lb, orig_type) and _is_int_unsigned(tb,
                                                                                   new_type)
                res.fail_memsz_adjust = not (both_ptrs or both_unsigned)
        elif kind.is_type:
            res.orig, res.new = _type_value(kind, local), _type_value(kind, targ)
        else:
            res.orig, res.new = _enum_value(kind, local), _enum_value(kind, targ)
    except _Poison:
        res.poison = True
    return res


# ---------------------------------------------------------------------- patching

def _poison(buf: bytearray, index: int) -> None:
    _INSN.pack_into(buf, index * INSN_SIZE, BPF_JMP_CALL, 0, 0, POISON_IMM)


def patch_insn(buf: bytearray, index: int, res: _Res, where: str) -> tuple[int, bool]:
    """bpf_core_patch_insn; returns (the instruction's previous value, poisoned)."""
    if index * INSN_SIZE + INSN_SIZE > len(buf):
        raise CoreRelocationError(f"{where}: instruction {index} is past the program")
    code, regs, off, imm = _INSN.unpack_from(buf, index * INSN_SIZE)
    is_ldimm64 = code == BPF_LD_IMM64
    cls = code & 0x07
    if res.poison:
        if is_ldimm64 and index * INSN_SIZE + 2 * INSN_SIZE <= len(buf):
            _poison(buf, index + 1)
        _poison(buf, index)
        return imm, True
    new = res.new
    if cls in (_BPF_ALU, _BPF_ALU64):
        if code & 0x08:  # BPF_X: a register operand has no immediate to relocate
            raise CoreRelocationError(f"{where}: instruction {index} (ALU) uses a register")
        if res.validate and imm & 0xFFFFFFFFFFFFFFFF != res.orig & 0xFFFFFFFFFFFFFFFF:
            raise CoreRelocationError(f"{where}: instruction {index} (ALU) holds {imm}, "
                                      f"expected {res.orig}")
        _INSN.pack_into(buf, index * INSN_SIZE, code, regs, off, _s32(new))
        return imm, False
    if cls in (_BPF_LDX, _BPF_ST, _BPF_STX):
        if res.validate and off != res.orig:
            raise CoreRelocationError(f"{where}: instruction {index} (LDX/ST/STX) has offset "
                                      f"{off}, expected {res.orig}")
        if new > 0x7FFF:
            raise CoreRelocationError(f"{where}: offset {new} does not fit instruction "
                                      f"{index}")
        if res.fail_memsz_adjust:
            # libbpf: a load of another size would read a wrong value; poison instead
            _poison(buf, index)
            return off, True
        if res.new_sz != res.orig_sz:
            size_bits = code & 0x18
            if _BITS_SIZE[size_bits] != res.orig_sz:
                raise CoreRelocationError(f"{where}: instruction {index} reads "
                                          f"{_BITS_SIZE[size_bits]} bytes, expected "
                                          f"{res.orig_sz}")
            if res.new_sz not in _SIZE_BITS:
                raise CoreRelocationError(f"{where}: the field is {res.new_sz} bytes on this "
                                          "kernel, which no load can read")
            code = (code & ~0x18) | _SIZE_BITS[res.new_sz]
        _INSN.pack_into(buf, index * INSN_SIZE, code, regs, new, imm)
        return off, False
    if cls == _BPF_LD:
        if not is_ldimm64 or (index + 2) * INSN_SIZE > len(buf) or regs >> 4 or off:
            raise CoreRelocationError(f"{where}: instruction {index} (LDIMM64) has an "
                                      "unexpected form")
        code2, regs2, off2, imm2 = _INSN.unpack_from(buf, (index + 1) * INSN_SIZE)
        if code2 or regs2 or off2:
            raise CoreRelocationError(f"{where}: instruction {index} (LDIMM64) has an "
                                      "unexpected form")
        old = (imm & 0xFFFFFFFF) | (imm2 & 0xFFFFFFFF) << 32
        if res.validate and old != res.orig & 0xFFFFFFFFFFFFFFFF:
            raise CoreRelocationError(f"{where}: instruction {index} (LDIMM64) holds {old}, "
                                      f"expected {res.orig}")
        _INSN.pack_into(buf, index * INSN_SIZE, code, regs, off, _s32(new & 0xFFFFFFFF))
        _INSN.pack_into(buf, (index + 1) * INSN_SIZE, 0, 0, 0, _s32(new >> 32 & 0xFFFFFFFF))
        return old, False
    raise CoreRelocationError(f"{where}: instruction {index} (code {code:#04x}) cannot be "
                              "relocated")


def _s32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


# ---------------------------------------------------------------------- driver

Candidates = Sequence[tuple[BtfIndex, int]]


Fallbacks = Callable[[], Sequence[BtfIndex]]


def find_candidates(local: BtfIndex, type_id: int, targets: Sequence[BtfIndex],
                    fallbacks: Fallbacks | None = None) -> list[tuple[BtfIndex, int]]:
    """bpf_core_find_cands: target types named like the local one (ignoring `___flavor`)
    of a compatible kind; in `targets` (vmlinux), else in `fallbacks()` (kernel modules,
    only read when needed)."""
    name = essential_name(local.name(type_id))
    found = [(btf, tid) for btf in targets for tid in btf.by_essential_name(name)
             if _kinds_compat(local, type_id, btf, tid)]
    if found or fallbacks is None:
        return found
    return [(btf, tid) for btf in fallbacks() for tid in btf.by_essential_name(name)
            if _kinds_compat(local, type_id, btf, tid)]


def relocate(local: BtfIndex, relos: Sequence[tuple[int, CoreRelo]], insns: bytes,
             targets: Sequence[BtfIndex], fallbacks: Fallbacks | None = None
             ) -> tuple[bytes, list[Applied]]:
    """Apply `relos` ((instruction index in `insns`, record) pairs) against the target
    BTF: the patched instructions and what each relocation did. Raises
    CoreRelocationError when libbpf would refuse the object."""
    buf = bytearray(insns)
    applied: list[Applied] = []
    cands_cache: dict[int, list[tuple[BtfIndex, int]]] = {}
    for index, relo in relos:
        where = f"section {relo.section!r} CO-RE relocation {relo.kind} at instruction {index}"
        local_spec = parse_spec(local, relo)
        type_text = local.describe(relo.type_id)
        where += f" ({describe_spec(local_spec, relo.kind)})"
        target_label = ""
        if relo.kind == Kind.TYPE_ID_LOCAL:
            res = _Res(relo.type_id, relo.type_id, validate=False)
        else:
            if not local.name(relo.type_id):
                raise CoreRelocationError(f"{where}: CO-RE cannot relocate anonymous types")
            cands = cands_cache.get(relo.type_id)
            if cands is None:
                cands = cands_cache[relo.type_id] = find_candidates(
                    local, relo.type_id, targets, fallbacks)
            res, chosen = _resolve(relo, local_spec, cands, where)
            target_label = chosen.btf.label if chosen is not None else ""
        old, poisoned = patch_insn(buf, index, res, where)
        applied.append(Applied(index, relo, type_text, describe_spec(local_spec, relo.kind),
                               old, res.new, poisoned, target_label))
    return bytes(buf), applied


def _resolve(relo: CoreRelo, local: _Spec, cands: Candidates, where: str
             ) -> tuple[_Res, _Spec | None]:
    """Every matching candidate must agree (bit offset, value, poisoning)."""
    chosen: _Spec | None = None
    result: _Res | None = None
    for btf, tid in cands:
        targ = match_spec(local, relo.kind, btf, tid)
        if targ is None:
            continue
        res = calc(relo.kind, local, targ, where)
        if result is None:
            chosen, result = targ, res
        elif chosen is not None and targ.bit_offset != chosen.bit_offset:
            raise CoreRelocationError(f"{where}: field offset ambiguity: "
                                      f"{chosen.bit_offset // 8} != {targ.bit_offset // 8} "
                                      f"({btf.describe(tid)} matches twice)")
        elif res.poison != result.poison or res.new != result.new:
            raise CoreRelocationError(f"{where}: relocation decision ambiguity: "
                                      f"{result.new} != {res.new} between candidates")
    if result is None:
        return calc(relo.kind, local, None, where), None
    return result, chosen
