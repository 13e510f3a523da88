"""CO-RE as pure functions on hand-made BTF (no compiler, no kernel): each relocation kind,
candidate matching (flavors, kinds, anonymous members, agreement), poisoning, and the
checks that make libbpf refuse an object. Expected values follow libbpf's relo_core.c."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lwt_agent.bpf.btf_index import BtfIndex, essential_name
from lwt_agent.bpf.core import (
    POISON_IMM,
    Applied,
    CoreRelo,
    Kind,
    parse_core_relos,
    relocate,
)
from lwt_agent.bpf.errors import CoreRelocationError, LoaderError, MalformedObjectError

from .btf_builder import (
    LDX_DW,
    LDX_H,
    LDX_W,
    MOV64_IMM,
    BtfBuilder,
    decode,
    insn,
    ld_imm64,
)

CALL = 0x85


def run(local: BtfBuilder, target: BtfBuilder, relos: list[tuple[int, int, str, Kind]],
        insns: bytes, modules: list[BtfIndex] | None = None) -> tuple[bytes, list[Applied]]:
    """relos: (insn index, local type id, access string, kind)."""
    records = [(i, CoreRelo("sec", i * 8, t, a, k)) for i, t, a, k in relos]
    return relocate(BtfIndex(local.build(), label="obj"), records, insns,
                    [BtfIndex(target.build(), label="vmlinux")],
                    (lambda: modules) if modules is not None else None)


def one(local: BtfBuilder, target: BtfBuilder, type_id: int, access: str, kind: Kind,
        code: bytes) -> tuple[bytes, Applied]:
    out, applied = run(local, target, [(0, type_id, access, kind)], code)
    return out, applied[0]


def pair(local_members: list[tuple[str, int]], target_members: list[tuple[str, int]],
         name: str = "foo", target_name: str = "foo") -> tuple[BtfBuilder, int, BtfBuilder]:
    """struct name { int/char/long fields } locally and in the target; members as (name,
    size); natural layout."""
    def build(members: list[tuple[str, int]], sname: str) -> tuple[BtfBuilder, int]:
        b = BtfBuilder()
        ints = {1: b.int_("char", 1), 2: b.int_("short", 2), 4: b.int_("unsigned int", 4),
                8: b.int_("unsigned long", 8)}
        off, fields = 0, []
        for mname, size in members:
            fields.append((mname, ints[size], off * 8, 0))
            off += size
        return b, b.struct(sname, off, fields)
    lb, lid = build(local_members, name)
    tb, _ = build(target_members, target_name)
    return lb, lid, tb


# ---------------------------------------------------------------- fields


def test_field_offset_follows_the_target_layout_through_a_flavor() -> None:
    lb, lid, tb = pair([("a", 4), ("b", 4)], [("x", 4), ("a", 4), ("b", 4)], name="foo___v2")
    out, a = one(lb, tb, lid, "0:1", Kind.FIELD_BYTE_OFFSET, insn(LDX_W, 0, 1, off=4))
    assert decode(out, 0) == (LDX_W, 0, 1, 8, 0)
    assert (a.old, a.new, a.poisoned, a.target) == (4, 8, False, "vmlinux")
    assert a.spec == "struct foo___v2.b (0:1 @ offset 4)"


def test_field_found_through_anonymous_members() -> None:
    lb, lid, _ = pair([("b", 4)], [])
    tb = BtfBuilder()
    u32 = tb.int_("unsigned int", 4)
    inner = tb.struct("", 8, [("y", u32, 0, 0), ("b", u32, 32, 0)])
    tb.struct("foo", 12, [("x", u32, 0, 0), ("", inner, 32, 0)])
    out, a = one(lb, tb, lid, "0:0", Kind.FIELD_BYTE_OFFSET, insn(LDX_W, 0, 1, off=0))
    assert a.new == 8 and decode(out, 0)[3] == 8


def test_unsigned_field_that_grew_gets_a_wider_load() -> None:
    lb, lid, tb = pair([("a", 4)], [("a", 8)])
    out, a = one(lb, tb, lid, "0:0", Kind.FIELD_BYTE_OFFSET, insn(LDX_W, 0, 1, off=0))
    assert decode(out, 0)[0] == LDX_DW and not a.poisoned
    out, a = one(lb, tb, lid, "0:0", Kind.FIELD_BYTE_SIZE, insn(MOV64_IMM, 0, imm=4))
    assert decode(out, 0) == (MOV64_IMM, 0, 0, 0, 8)


def test_signed_field_of_another_size_is_poisoned() -> None:
    lb = BtfBuilder()
    lid = lb.struct("foo", 4, [("a", lb.int_("int", 4, signed=True), 0, 0)])
    tb = BtfBuilder()
    tb.struct("foo", 2, [("a", tb.int_("short", 2, signed=True), 0, 0)])
    out, a = one(lb, tb, lid, "0:0", Kind.FIELD_BYTE_OFFSET, insn(LDX_W, 0, 1, off=0))
    assert a.poisoned and decode(out, 0) == (CALL, 0, 0, 0, POISON_IMM)


def test_load_of_the_wrong_size_is_refused() -> None:
    lb, lid, tb = pair([("a", 4)], [("a", 8)])
    with pytest.raises(CoreRelocationError, match="reads 2 bytes, expected 4"):
        one(lb, tb, lid, "0:0", Kind.FIELD_BYTE_OFFSET, insn(LDX_H, 0, 1, off=0))


def test_field_exists_and_missing_field_poisoning() -> None:
    lb, lid, tb = pair([("a", 4), ("gone", 4)], [("a", 4)])
    code = insn(MOV64_IMM, 0, imm=1) + insn(LDX_W, 0, 1, off=4) + insn(MOV64_IMM, 2, imm=1)
    out, applied = run(lb, tb, [(0, lid, "0:1", Kind.FIELD_EXISTS),
                                (1, lid, "0:1", Kind.FIELD_BYTE_OFFSET),
                                (2, lid, "0:0", Kind.FIELD_EXISTS)], code)
    assert decode(out, 0) == (MOV64_IMM, 0, 0, 0, 0)  # missing: exists = 0
    assert decode(out, 1) == (CALL, 0, 0, 0, POISON_IMM)  # the guarded read: poisoned
    assert decode(out, 2) == (MOV64_IMM, 2, 0, 0, 1)  # present: exists = 1
    assert [a.poisoned for a in applied] == [False, True, False]


@pytest.mark.parametrize(("signed", "expected"), [(True, 1), (False, 0)])
def test_field_signedness(signed: bool, expected: int) -> None:
    lb = BtfBuilder()
    lid = lb.struct("foo", 4, [("a", lb.int_("int", 4, signed=True), 0, 0)])
    tb = BtfBuilder()
    tb.struct("foo", 4, [("a", tb.int_("int", 4, signed=signed), 0, 0)])
    out, a = one(lb, tb, lid, "0:0", Kind.FIELD_SIGNED, insn(MOV64_IMM, 0, imm=1))
    assert a.new == expected and decode(out, 0)[4] == expected


def test_signed_enum_field_by_kflag() -> None:
    lb = BtfBuilder()
    lid = lb.struct("foo", 4, [("e", lb.enum("mode", [("A", 0)], signed=True), 0, 0)])
    tb = BtfBuilder()
    tb.struct("foo", 4, [("e", tb.enum("mode", [("A", 0)], signed=True), 0, 0)])
    _out, a = one(lb, tb, lid, "0:0", Kind.FIELD_SIGNED, insn(MOV64_IMM, 0, imm=1))
    assert a.new == 1


def _bitfield_target(bit_off: int, bits: int) -> BtfBuilder:
    tb = BtfBuilder()
    u32 = tb.int_("unsigned int", 4)
    tb.struct("foo", 8, [("x", u32, 0, 0), ("flags", u32, bit_off, bits)])
    return tb


@pytest.mark.parametrize(("bit_off", "bits", "byte_off", "byte_sz", "lshift", "rshift"), [
    (35, 3, 4, 4, 58, 61),  # inside the second u32
    (30, 4, 0, 8, 30, 60),  # crosses a u32 boundary: one 64-bit load from byte 0
])
def test_bitfield_relocations(bit_off: int, bits: int, byte_off: int, byte_sz: int,
                              lshift: int, rshift: int) -> None:
    lb = BtfBuilder()
    u32 = lb.int_("unsigned int", 4)
    lid = lb.struct("foo", 4, [("flags", u32, 0, 2)])
    tb = _bitfield_target(bit_off, bits)
    code = b"".join(insn(MOV64_IMM, r, imm=v) for r, v in enumerate([0, 4, 62, 62]))
    out, applied = run(lb, tb, [(0, lid, "0:0", Kind.FIELD_BYTE_OFFSET),
                                (1, lid, "0:0", Kind.FIELD_BYTE_SIZE),
                                (2, lid, "0:0", Kind.FIELD_LSHIFT_U64),
                                (3, lid, "0:0", Kind.FIELD_RSHIFT_U64)], code)
    assert [decode(out, i)[4] for i in range(4)] == [byte_off, byte_sz, lshift, rshift]
    assert [a.new for a in applied] == [byte_off, byte_sz, lshift, rshift]


def test_bitfield_that_no_64_bit_load_covers_is_refused() -> None:
    lb = BtfBuilder()
    lid = lb.struct("foo", 4, [("flags", lb.int_("unsigned long", 8), 0, 2)])
    tb = BtfBuilder()
    tb.struct("foo", 16, [("flags", tb.int_("unsigned long", 8), 62, 4)])
    with pytest.raises(CoreRelocationError, match="64-bit load"):
        one(lb, tb, lid, "0:0", Kind.FIELD_LSHIFT_U64, insn(MOV64_IMM, 0, imm=0))


def test_array_element_access() -> None:
    lb = BtfBuilder()
    u32 = lb.int_("unsigned int", 4)
    lid = lb.struct("foo", 16, [("arr", lb.array(u32, 4), 0, 0)])
    tb = BtfBuilder()
    t32 = tb.int_("unsigned int", 4)
    tb.struct("foo", 24, [("pad", t32, 0, 0), ("arr", tb.array(t32, 5), 64, 0)])
    out, a = one(lb, tb, lid, "0:0:2", Kind.FIELD_BYTE_OFFSET, insn(LDX_W, 0, 1, off=8))
    assert a.new == 8 + 8 and decode(out, 0)[3] == 16
    assert a.spec == "struct foo.arr[2] (0:0:2 @ offset 8)"
    tb2 = BtfBuilder()
    t32 = tb2.int_("unsigned int", 4)
    tb2.struct("foo", 8, [("arr", tb2.array(t32, 2), 0, 0)])  # index 2 is out of range
    out, a = one(lb, tb2, lid, "0:0:2", Kind.FIELD_BYTE_OFFSET, insn(LDX_W, 0, 1, off=8))
    assert a.poisoned


def test_incompatible_field_type_is_no_match() -> None:
    lb, lid, _ = pair([("a", 4)], [])
    tb = BtfBuilder()
    u32 = tb.int_("unsigned int", 4)
    tb.struct("foo", 4, [("a", tb.struct("inner", 4, [("z", u32, 0, 0)]), 0, 0)])
    _out, a = one(lb, tb, lid, "0:0", Kind.FIELD_EXISTS, insn(MOV64_IMM, 0, imm=1))
    assert a.new == 0


# ---------------------------------------------------------------- candidates


def test_agreeing_candidates_and_kind_mismatch() -> None:
    lb, lid, _ = pair([("a", 4)], [])
    tb = BtfBuilder()
    u32 = tb.int_("unsigned int", 4)
    tb.struct("foo", 8, [("x", u32, 0, 0), ("a", u32, 32, 0)])
    tb.struct("foo___other", 8, [("y", u32, 0, 0), ("a", u32, 32, 0)])
    tb.struct("foo", 4, [("a", u32, 0, 0)], union=True)  # a union: not a candidate
    _out, a = one(lb, tb, lid, "0:0", Kind.FIELD_BYTE_OFFSET, insn(LDX_W, 0, 1, off=0))
    assert a.new == 4


def test_disagreeing_candidates_are_refused() -> None:
    lb, lid, _ = pair([("a", 4)], [])
    tb = BtfBuilder()
    u32 = tb.int_("unsigned int", 4)
    tb.struct("foo", 8, [("x", u32, 0, 0), ("a", u32, 32, 0)])
    tb.struct("foo___v2", 4, [("a", u32, 0, 0)])
    with pytest.raises(CoreRelocationError, match="ambiguity"):
        one(lb, tb, lid, "0:0", Kind.FIELD_BYTE_OFFSET, insn(LDX_W, 0, 1, off=0))


def test_module_btf_only_when_vmlinux_has_no_candidate() -> None:
    lb, lid, vm = pair([("a", 4)], [("zz", 4)], target_name="bar")
    base = BtfIndex(vm.build(), label="vmlinux")
    mod = BtfBuilder(first_id=base.count, base_strings=len(vm.strings))
    u32 = mod.int_("unsigned int", 4)
    mod.struct("foo", 8, [("x", u32, 0, 0), ("a", u32, 32, 0)])
    module = BtfIndex(mod.build(), base=base, label="my_mod")
    record = [(0, CoreRelo("sec", 0, lid, "0:0", Kind.FIELD_BYTE_OFFSET))]
    _out, applied = relocate(BtfIndex(lb.build()), record, insn(LDX_W, 0, 1, off=0), [base],
                             lambda: [module])
    assert applied[0].new == 4 and applied[0].target == "my_mod"
    calls: list[int] = []
    relocate(BtfIndex(lb.build()), record, insn(LDX_W, 0, 1, off=0), [module],
             lambda: calls.append(1) or [])  # type: ignore[func-returns-value]
    assert calls == []  # found in the first group: modules never read


def test_anonymous_local_type_is_refused() -> None:
    lb = BtfBuilder()
    lid = lb.struct("", 4, [("a", lb.int_("int", 4), 0, 0)])
    with pytest.raises(CoreRelocationError, match="anonymous"):
        one(lb, BtfBuilder(), lid, "0:0", Kind.FIELD_BYTE_OFFSET, insn(LDX_W, 0, 1))


# ---------------------------------------------------------------- types and enums


def test_type_relocations() -> None:
    lb = BtfBuilder()
    lb.int_("int", 4, signed=True)
    lid = lb.struct("foo", 4, [("a", 1, 0, 0)])
    missing = lb.struct("nope", 4, [("a", 1, 0, 0)])
    tb = BtfBuilder()
    tb.int_("char", 1)
    tb.int_("int", 4, signed=True)
    tid = tb.struct("foo", 12, [("a", 2, 0, 0)])
    code = ld_imm64(0, lid) + ld_imm64(1, lid) + b"".join(insn(MOV64_IMM, r, imm=v)
                                                           for r, v in [(2, 1), (3, 4),
                                                                        (4, 1), (5, 4)])
    out, applied = run(lb, tb, [(0, lid, "0", Kind.TYPE_ID_LOCAL),
                                (2, lid, "0", Kind.TYPE_ID_TARGET),
                                (4, lid, "0", Kind.TYPE_EXISTS),
                                (5, lid, "0", Kind.TYPE_SIZE),
                                (6, missing, "0", Kind.TYPE_EXISTS),
                                (7, missing, "0", Kind.TYPE_SIZE)],
                       code)
    assert [a.new for a in applied] == [lid, tid, 1, 12, 0, 0]
    assert decode(out, 2)[4] == tid and decode(out, 3)[4] == 0  # both ld_imm64 halves
    assert decode(out, 5)[4] == 12 and decode(out, 6)[4] == 0


def test_type_relocation_needs_access_string_zero() -> None:
    lb = BtfBuilder()
    lid = lb.struct("foo", 4, [("a", lb.int_("int", 4), 0, 0)])
    with pytest.raises(CoreRelocationError, match='expected "0"'):
        one(lb, BtfBuilder(), lid, "0:0", Kind.TYPE_EXISTS, insn(MOV64_IMM, 0, imm=1))


@pytest.mark.parametrize(("target_size", "target_signed", "matches"), [
    (4, True, 1), (8, True, 0), (4, False, 0)])
def test_type_matches(target_size: int, target_signed: bool, matches: int) -> None:
    lb = BtfBuilder()
    lint = lb.int_("int", 4, signed=True)
    lid = lb.struct("foo", 4, [("a", lint, 0, 0)])
    tb = BtfBuilder()
    tint = tb.int_("int", target_size, signed=target_signed)
    tb.struct("foo", target_size + 4, [("pad", tint, 0, 0), ("a", tint, 32, 0)])
    _out, a = one(lb, tb, lid, "0", Kind.TYPE_MATCHES, insn(MOV64_IMM, 0, imm=1))
    assert a.new == matches


def test_type_exists_compares_function_prototypes() -> None:
    lb = BtfBuilder()
    lint = lb.int_("int", 4, signed=True)
    lid = lb.typedef("handler_t", lb.ptr(lb.func_proto(lint, [lint, lint])))
    tb = BtfBuilder()
    tint = tb.int_("int", 4, signed=True)
    tb.typedef("handler_t", tb.ptr(tb.func_proto(tint, [tint])))  # one parameter fewer
    _out, a = one(lb, tb, lid, "0", Kind.TYPE_EXISTS, insn(MOV64_IMM, 0, imm=1))
    assert a.new == 0


def test_enum_values() -> None:
    lb = BtfBuilder()
    lid = lb.enum("mode", [("M_A", 1), ("M_B", 2), ("M_GONE", 3)])
    l64 = lb.enum64("big", [("B_X", 1)])
    tb = BtfBuilder()
    tb.enum("mode", [("M_B", -5), ("M_A", 10)])
    tb.enum64("big", [("B_X", 1 << 40)])
    code = (insn(MOV64_IMM, 0, imm=2) + insn(MOV64_IMM, 1, imm=1) + insn(MOV64_IMM, 2, imm=1)
            + ld_imm64(3, 1) + ld_imm64(4, 3))
    out, applied = run(lb, tb, [(0, lid, "1", Kind.ENUMVAL_VALUE),
                                (1, lid, "2", Kind.ENUMVAL_EXISTS),
                                (2, lid, "0", Kind.ENUMVAL_VALUE),
                                (3, l64, "0", Kind.ENUMVAL_VALUE),
                                (5, lid, "2", Kind.ENUMVAL_VALUE)], code)
    assert decode(out, 0)[4] == -5  # s32, as libbpf reads it
    assert decode(out, 1)[4] == 0  # M_GONE does not exist
    assert decode(out, 2)[4] == 10
    assert (decode(out, 3)[4], decode(out, 4)[4]) == (0, 1 << 8)  # 1 << 40 in two halves
    assert decode(out, 5)[:5] == decode(out, 6)[:5] == (CALL, 0, 0, 0, POISON_IMM)
    assert applied[-1].poisoned


# ---------------------------------------------------------------- refusals


def test_instruction_that_does_not_hold_the_local_value_is_refused() -> None:
    lb, lid, tb = pair([("a", 4), ("b", 4)], [("b", 4)])
    with pytest.raises(CoreRelocationError, match="has offset 0, expected 4") as info:
        one(lb, tb, lid, "0:1", Kind.FIELD_BYTE_OFFSET, insn(LDX_W, 0, 1, off=0))
    assert "section 'sec'" in str(info.value) and "struct foo.b" in str(info.value)


@pytest.mark.parametrize("access", ["", "0:x", "0:9", "-1", "0:" + ":".join(["0"] * 70)])
def test_bad_access_strings_are_refused(access: str) -> None:
    lb, lid, tb = pair([("a", 4)], [("a", 4)])
    with pytest.raises(CoreRelocationError):
        one(lb, tb, lid, access, Kind.FIELD_BYTE_OFFSET, insn(LDX_W, 0, 1))


def test_relocation_on_a_jump_is_refused() -> None:
    lb, lid, tb = pair([("a", 4)], [("a", 4)])
    with pytest.raises(CoreRelocationError, match="cannot be relocated"):
        one(lb, tb, lid, "0:0", Kind.FIELD_BYTE_OFFSET, insn(0x05, off=0))


# ---------------------------------------------------------------- parsing


def test_essential_names_follow_libbpf() -> None:
    assert essential_name("task_struct___v1") == "task_struct"
    assert essential_name("foo___bar___baz") == "foo___bar"
    assert essential_name("__u32") == "__u32"
    assert essential_name("a____b") == "a____b"
    assert essential_name("x___") == "x___"


def _ext(records: bytes, count: int, rec_size: int = 16) -> bytes:
    core = struct.pack("<I", rec_size) + struct.pack("<II", 1, count) + records
    header = struct.pack("<HBBIIIIIII", 0xEB9F, 1, 0, 32, 0, 0, 0, 0, 0, len(core))
    return header + core


def test_core_records_are_parsed_by_section() -> None:
    strings = {1: "lwt/x", 7: "0:1"}
    ext = _ext(struct.pack("<IIII", 16, 3, 7, 0) + struct.pack("<IIII", 24, 3, 7, 2), 2)
    found = parse_core_relos(ext, lambda off: strings[off])
    assert found == {"lwt/x": [CoreRelo("lwt/x", 16, 3, "0:1", Kind.FIELD_BYTE_OFFSET),
                               CoreRelo("lwt/x", 24, 3, "0:1", Kind.FIELD_EXISTS)]}


@pytest.mark.parametrize(("ext", "problem"), [
    (_ext(struct.pack("<IIII", 16, 3, 7, 99), 1), "kind 99"),
    (_ext(struct.pack("<IIII", 3, 3, 7, 0), 1), "not on an instruction"),
    (_ext(struct.pack("<IIII", 16, 3, 7, 0), 5), "run past"),
    (_ext(b"", 0, rec_size=8), "record size"),
])
def test_corrupt_core_records_are_refused(ext: bytes, problem: str) -> None:
    with pytest.raises(MalformedObjectError, match=problem):
        parse_core_relos(ext, lambda off: "x")


def test_btf_index_refuses_corrupt_btf() -> None:
    good = BtfBuilder()
    good.int_("int", 4)
    data = bytearray(good.build())
    data[24 + 7] = 25 << 0  # kind byte of type 1 -> kind 25 (info's top byte)
    with pytest.raises(MalformedObjectError, match="unknown kind"):
        BtfIndex(bytes(data))
    with pytest.raises(MalformedObjectError):
        BtfIndex(good.build()[:30])


def test_name_index_agrees_with_name_searches() -> None:
    """Past 64 distinct names the index of every name replaces per-name searches: same
    answers either way."""
    b = BtfBuilder()
    u32 = b.int_("unsigned int", 4)
    for n in range(100):
        b.struct(f"s{n}", 4, [("a", u32, 0, 0)])
        b.struct(f"s{n}___flavor", 4, [("a", u32, 0, 0)])
    searched, indexed = BtfIndex(b.build()), BtfIndex(b.build())
    first = {f"s{n}": searched.by_essential_name(f"s{n}") for n in range(60)}
    for n in range(100):
        indexed.by_essential_name(f"s{n}")
    assert indexed._full_index and not searched._full_index
    for name, ids in first.items():
        assert indexed.by_essential_name(name) == ids and len(ids) == 2
    assert indexed.by_essential_name("nope") == searched.by_essential_name("nope") == []


def _fuzz_btf() -> tuple[BtfBuilder, BtfBuilder]:
    lb, tb = BtfBuilder(), BtfBuilder()
    for b, extra in ((lb, 0), (tb, 1)):
        u32 = b.int_("unsigned int", 4)
        arr = b.array(u32, 3 + extra)
        inner = b.struct("inner", 8, [("p", u32, 0, 0), ("q", u32, 32 + extra, 2)])
        ptr = b.ptr(inner)
        foo = b.struct("foo", 32, [("a", u32, 0, 0), ("arr", arr, 32 * (1 + extra), 0),
                                   ("", inner, 160, 0), ("ptr", ptr, 192, 0)])
        b.enum("mode", [("M_A", 1), ("M_B", -2)])
        b.typedef("foo_t", b.const(foo))
    return lb, tb


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(list(Kind)), type_id=st.integers(0, 12),
       access=st.lists(st.integers(0, 5), min_size=0, max_size=5).map(
           lambda xs: ":".join(map(str, xs))),
       code=st.sampled_from([LDX_W, LDX_DW, MOV64_IMM, 0x18, 0x05, 0x85, 0x07, 0x0F]),
       off=st.integers(-4, 40), imm=st.integers(-3, 40))
def test_hostile_records_fail_cleanly(kind: Kind, type_id: int, access: str, code: int,
                                      off: int, imm: int) -> None:
    """Any record on any instruction: patched instructions, or a LoaderError; never
    another exception, and never more or fewer instructions."""
    lb, tb = _fuzz_btf()
    program = insn(code, 1, 2, off, imm) + insn(0, imm=0) + insn(MOV64_IMM, 0, imm=0)
    try:
        out, _ = run(lb, tb, [(0, type_id, access, kind)], program)
    except LoaderError:
        return
    assert len(out) == len(program)


def test_kernel_without_btf_is_a_clear_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    from lwt_agent.bpf import btf_index

    btf_index.kernel_btf.cache_clear()
    monkeypatch.setattr(btf_index, "VMLINUX_BTF", "/nonexistent/vmlinux")
    try:
        with pytest.raises(CoreRelocationError, match="CONFIG_DEBUG_INFO_BTF"):
            btf_index.kernel_btf()
    finally:
        btf_index.kernel_btf.cache_clear()
