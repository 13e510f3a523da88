"""Read-only, lazily decoded BTF for CO-RE: the object's own .BTF and the kernel's
(/sys/kernel/btf/vmlinux, ~100k types, module BTF split on top of it).

Opening walks the type area once to record where each type starts (an array of offsets:
the only way to find type N in variable-length records); names, members and enumerators
are decoded per type when asked, and the name index (essential name -> ids, what CO-RE's
candidate search needs) is built on the first lookup. `kernel_btf()` caches the kernel's
per process. Every inconsistency raises MalformedObjectError("corrupt BTF: ...").
"""
from __future__ import annotations

import os
import struct
from array import array
from dataclasses import dataclass
from functools import lru_cache

from .errors import CoreRelocationError, MalformedObjectError

BTF_MAGIC = 0xEB9F
VMLINUX_BTF = "/sys/kernel/btf/vmlinux"
MODULE_BTF_DIR = "/sys/kernel/btf"

UNKN, INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(12)
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(12, 20)

KIND_NAMES = ("unknown", "int", "ptr", "array", "struct", "union", "enum", "fwd", "typedef",
              "volatile", "const", "restrict", "func", "func_proto", "var", "datasec",
              "float", "decl_tag", "type_tag", "enum64")
BTF_INT_SIGNED = 1
MODIFIERS = frozenset({TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG})
_MAX_CHAIN = 32  # libbpf's recursion depth for type chains
_HDR = struct.Struct("<III")
_U32 = struct.Struct("<I")
_S32 = struct.Struct("<i")
_NAME_INFO = struct.Struct("<II")
_SEARCHES_BEFORE_INDEX = 64
# Bytes of kind-specific data after the 12-byte header, by kind: fixed, and per vlen entry.
# An unknown kind (20-31) jumps past any type area, which _walk reports.
_FIXED = [0] * 20 + [1 << 40] * 12
_PER_VLEN = [0] * 32
for _kind, _size in ((INT, 4), (ARRAY, 12), (VAR, 4), (DECL_TAG, 4)):
    _FIXED[_kind] = _size
for _kind, _size in ((STRUCT, 12), (UNION, 12), (ENUM, 8), (FUNC_PROTO, 8), (DATASEC, 12),
                     (ENUM64, 12)):
    _PER_VLEN[_kind] = _size


def _corrupt(problem: str) -> MalformedObjectError:
    return MalformedObjectError(f"corrupt BTF: {problem}")


def essential_name(name: str) -> str:
    """`task_struct___v1` -> `task_struct`: CO-RE ignores a `___flavor` suffix. As libbpf's
    bpf_core_essential_name_len: cut at the LAST `X___Y` with X and Y not underscores."""
    if "___" not in name:
        return name
    for i in range(len(name) - 5, -1, -1):
        if name[i] != "_" and name[i + 1:i + 4] == "___" and name[i + 4] != "_":
            return name[:i + 1]
    return name


@dataclass(frozen=True)
class Member:
    name: str
    type: int
    bit_offset: int
    bitfield_size: int  # 0 when not a bitfield


class BtfIndex:
    """Types by id (0 is void). With `base`, a split BTF (a kernel module's): its ids and
    string offsets continue after the base's."""

    def __init__(self, data: bytes, base: BtfIndex | None = None, label: str = "") -> None:
        self.label = label  # "vmlinux", a module name, or the object
        self.base = base
        self._data = memoryview(data)
        if len(data) < 24:
            raise _corrupt(f"{len(data)} bytes, shorter than the 24-byte header")
        magic, version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != BTF_MAGIC or version != 1:
            raise _corrupt(f"bad magic {magic:#06x} or version {version}")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        if hdr_len < 24 or hdr_len > len(data) or \
                hdr_len + max(type_off + type_len, str_off + str_len) > len(data):
            raise _corrupt("header describes areas past the end of the data")
        self._types = self._data[hdr_len + type_off:hdr_len + type_off + type_len]
        self._strings = bytes(self._data[hdr_len + str_off:hdr_len + str_off + str_len])
        self.first_id = base.count if base is not None else 1
        self._str_base = len(base._strings) if base is not None else 0
        self._offsets = array("I")  # where each type starts in the type area
        self._name_offs = array("I")  # each type's name offset
        self._walk()
        self.count = self.first_id + len(self._offsets)
        self._name_bytes: bytes | None = None
        self._by_name: dict[str, list[int]] = {}
        self._full_index = False

    def _walk(self) -> None:
        # The one loop over every type (126k in a 6.18 vmlinux): kept tight on purpose.
        offsets, names = self._offsets, self._name_offs
        add_offset, add_name = offsets.append, names.append
        fixed, per_vlen, unpack = _FIXED, _PER_VLEN, _NAME_INFO.unpack_from
        types = self._types
        pos, end = 0, len(types)
        while pos + 12 <= end:
            name_off, info = unpack(types, pos)
            add_offset(pos)
            add_name(name_off)
            kind = info >> 24 & 0x1F
            pos += 12 + fixed[kind] + per_vlen[kind] * (info & 0xFFFF)
        if pos != end:
            bad = [i for i, off in enumerate(offsets)
                   if (_NAME_INFO.unpack_from(types, off)[1] >> 24 & 0x1F) > ENUM64]
            what = (f"type #{self.first_id + bad[0]} has an unknown kind" if bad
                    else "the last type runs past the end of the type area")
            raise _corrupt(what)

    # ------------------------------------------------------------------ per type

    def _where(self, type_id: int) -> tuple[BtfIndex, int]:
        btf: BtfIndex | None = self
        while btf is not None:
            if type_id >= btf.first_id:
                index = type_id - btf.first_id
                if index >= len(btf._offsets):
                    raise _corrupt(f"type id {type_id} out of range")
                return btf, btf._offsets[index]
            btf = btf.base
        raise _corrupt(f"type id {type_id} out of range")

    def _header(self, type_id: int) -> tuple[BtfIndex, int, int, int, int]:
        """(owner, offset, name_off, info, size_or_type); type 0 is void."""
        if type_id == 0:
            return self, -1, 0, 0, 0
        owner, pos = self._where(type_id)
        name_off, info, size_or_type = _HDR.unpack_from(owner._types, pos)
        return owner, pos, name_off, info, size_or_type

    def kind(self, type_id: int) -> int:
        return (self._header(type_id)[3] >> 24) & 0x1F

    def vlen(self, type_id: int) -> int:
        return self._header(type_id)[3] & 0xFFFF

    def kflag(self, type_id: int) -> bool:
        return bool(self._header(type_id)[3] >> 31)

    def size_or_type(self, type_id: int) -> int:
        return self._header(type_id)[4]

    def name(self, type_id: int) -> str:
        return self.string(self._header(type_id)[2])

    def string(self, offset: int) -> str:
        btf: BtfIndex = self
        while offset < btf._str_base and btf.base is not None:
            btf = btf.base
        local = offset - btf._str_base
        if local >= len(btf._strings):
            raise _corrupt(f"string offset {offset} is past the string table")
        end = btf._strings.find(b"\0", local)
        if end < 0:
            raise _corrupt(f"string at offset {offset} is not NUL-terminated")
        return btf._strings[local:end].decode(errors="replace")

    def describe(self, type_id: int) -> str:
        """`struct sk_buff`, `typedef u32`, `int`: how libbpf names a type in messages."""
        kind = self.kind(type_id)
        name = self.name(type_id) or "(anon)"
        return name if kind in (INT, FLOAT) else f"{KIND_NAMES[kind]} {name}"

    def int_encoding(self, type_id: int) -> tuple[int, int, int]:
        """(encoding flags, bit offset, bits) of an INT."""
        owner, pos, *_ = self._header(type_id)
        raw = _U32.unpack_from(owner._types, pos + 12)[0]
        return (raw >> 24) & 0x0F, (raw >> 16) & 0xFF, raw & 0xFF

    def array(self, type_id: int) -> tuple[int, int, int]:
        """(element type, index type, nelems) of an ARRAY."""
        owner, pos, *_ = self._header(type_id)
        return struct.unpack_from("<III", owner._types, pos + 12)

    def members(self, type_id: int) -> list[Member]:
        owner, pos, _n, info, _s = self._header(type_id)
        kflag = bool(info >> 31)
        out = []
        for i in range(info & 0xFFFF):
            name_off, m_type, off = _HDR.unpack_from(owner._types, pos + 12 + 12 * i)
            bits = off >> 24 if kflag else 0
            out.append(Member(self.string(name_off), m_type,
                              off & 0xFFFFFF if kflag else off, bits))
        return out

    def member(self, type_id: int, index: int) -> Member:
        owner, pos, _n, info, _s = self._header(type_id)
        if not 0 <= index < info & 0xFFFF:
            raise _corrupt(f"member {index} of type #{type_id} does not exist")
        kflag = bool(info >> 31)
        name_off, m_type, off = _HDR.unpack_from(owner._types, pos + 12 + 12 * index)
        return Member(self.string(name_off), m_type, off & 0xFFFFFF if kflag else off,
                      off >> 24 if kflag else 0)

    def enumerators(self, type_id: int) -> list[tuple[str, int]]:
        """(name, value) of an ENUM (values as libbpf reads them: s32 sign-extended to
        u64) or ENUM64 (hi32 << 32 | lo32)."""
        owner, pos, _n, info, _s = self._header(type_id)
        kind = (info >> 24) & 0x1F
        out = []
        for i in range(info & 0xFFFF):
            if kind == ENUM:
                name_off, val = struct.unpack_from("<Ii", owner._types, pos + 12 + 8 * i)
                out.append((self.string(name_off), val & 0xFFFFFFFFFFFFFFFF))
            else:
                name_off, lo, hi = _HDR.unpack_from(owner._types, pos + 12 + 12 * i)
                out.append((self.string(name_off), hi << 32 | lo))
        return out

    def params(self, type_id: int) -> list[int]:
        """Parameter types of a FUNC_PROTO."""
        owner, pos, _n, info, _s = self._header(type_id)
        return [_U32.unpack_from(owner._types, pos + 12 + 8 * i + 4)[0]
                for i in range(info & 0xFFFF)]

    # ------------------------------------------------------------------ chains

    def skip_mods_and_typedefs(self, type_id: int) -> int:
        for _ in range(_MAX_CHAIN):
            if self.kind(type_id) not in MODIFIERS:
                return type_id
            type_id = self.size_or_type(type_id)
        raise _corrupt(f"modifier chain from type #{type_id} is too long (a cycle?)")

    def resolve_size(self, type_id: int) -> int:
        """btf__resolve_size: the byte size of a type (-1 when it has none)."""
        nelems = 1
        for _ in range(_MAX_CHAIN):
            kind = self.kind(type_id)
            if kind in (INT, STRUCT, UNION, ENUM, ENUM64, DATASEC, FLOAT):
                return nelems * self.size_or_type(type_id)
            if kind == PTR:
                return nelems * 8
            if kind in MODIFIERS or kind == VAR:
                type_id = self.size_or_type(type_id)
            elif kind == ARRAY:
                elem, _index, count = self.array(type_id)
                nelems *= count
                type_id = elem
            else:
                return -1
        raise _corrupt(f"type #{type_id} nests too deeply (a cycle?)")

    # ------------------------------------------------------------------ names

    def by_essential_name(self, name: str) -> list[int]:
        """Ids of this BTF's own types (not the base's) whose name without its `___flavor`
        suffix is `name`: CO-RE's candidates, before their kinds are checked. Found by
        searching the string tables (BTF stores each distinct name once) and then the
        name-offset array, both at C speed; no index of all names is ever built."""
        found = self._by_name.get(name)
        if found is None:
            if self._full_index:
                return []
            if len(self._by_name) >= _SEARCHES_BEFORE_INDEX:
                # Many distinct names (a big or hostile object): one index of every name
                # (~0.3 s for vmlinux) bounds the cost instead of a search per name.
                self._by_name = self._build_name_index()
                self._full_index = True
                return self._by_name.get(name, [])
            found = self._by_name[name] = self._find_by_name(name) if name else []
        return found

    def _build_name_index(self) -> dict[str, list[int]]:
        by_off: dict[int, list[int]] = {}
        for index, name_off in enumerate(self._name_offs):
            if name_off:
                ids = by_off.get(name_off)
                if ids is None:
                    by_off[name_off] = [self.first_id + index]
                else:
                    ids.append(self.first_id + index)
        by_name: dict[str, list[int]] = {}
        for name_off, ids in by_off.items():
            by_name.setdefault(essential_name(self.string(name_off)), []).extend(ids)
        for ids in by_name.values():
            ids.sort()
        return by_name

    def _find_by_name(self, name: str) -> list[int]:
        encoded = name.encode()
        wanted: list[int] = []
        btf: BtfIndex | None = self
        while btf is not None:
            table = btf._strings
            for pattern in (b"\0" + encoded + b"\0", b"\0" + encoded + b"___"):
                at = table.find(pattern)
                while at >= 0:
                    offset = btf._str_base + at + 1
                    if essential_name(self.string(offset)) == name:
                        wanted.append(offset)
                    at = table.find(pattern, at + 1)
            btf = btf.base
        if self._name_bytes is None:
            self._name_bytes = self._name_offs.tobytes()
        names = self._name_bytes
        ids = []
        for offset in wanted:
            needle = _U32.pack(offset)
            at = names.find(needle)
            while at >= 0:
                if at % 4 == 0:
                    ids.append(self.first_id + at // 4)
                at = names.find(needle, at + 1)
        return sorted(ids)


@lru_cache(maxsize=1)
def kernel_btf() -> BtfIndex:
    """The running kernel's BTF, read once per process."""
    try:
        with open(VMLINUX_BTF, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise CoreRelocationError(
            f"cannot read the kernel's BTF {VMLINUX_BTF}: {exc.strerror}; CO-RE programs "
            "need a kernel built with CONFIG_DEBUG_INFO_BTF (and /sys mounted)") from None
    return BtfIndex(data, label="vmlinux")


def module_btfs() -> list[BtfIndex]:
    """BTF of every loaded kernel module (split on vmlinux), read when asked: CO-RE looks
    there only for a type vmlinux lacks, as libbpf does."""
    return list(_module_btfs(tuple(sorted(os.listdir(MODULE_BTF_DIR)))))


@lru_cache(maxsize=4)
def _module_btfs(names: tuple[str, ...]) -> tuple[BtfIndex, ...]:
    base = kernel_btf()
    found = []
    for name in names:
        if name == "vmlinux":
            continue
        try:
            with open(os.path.join(MODULE_BTF_DIR, name), "rb") as f:
                found.append(BtfIndex(f.read(), base=base, label=name))
        except (OSError, MalformedObjectError):
            continue  # a module unloaded meanwhile, or BTF we cannot read: skip it
    return tuple(found)
