"""Programs: ProgramSpec (a function's instructions and its relocations), linking the
reachable .text sub-programs the way libbpf does, and patching map references.

Why libbpf's order matters: the kernel's program tag is a hash of the submitted
instructions, and "same tag as iproute2 (libbpf)" is how we prove we load the same program.
libbpf appends a sub-program at the end of the main program the first time a call to it is
met while walking the instructions, and walks the appended sub-program right away (depth
first). Only reachable sub-programs are appended.
"""
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

from .core import CoreRelo
from .errors import MalformedObjectError

INSN_SIZE = 8
BPF_LD_IMM64 = 0x18  # BPF_LD | BPF_IMM | BPF_DW
BPF_CALL = 0x85  # BPF_JMP | BPF_CALL (| BPF_K)
BPF_PSEUDO_MAP_FD = 1
BPF_PSEUDO_MAP_VALUE = 2
BPF_PSEUDO_FUNC = 4
BPF_PSEUDO_CALL = 1


class RelocKind(enum.Enum):
    MAP = "map"  # ld_imm64 of a map (BPF_PSEUDO_MAP_FD)
    DATA = "data"  # ld_imm64 of an address in global data (BPF_PSEUDO_MAP_VALUE + offset)
    CALL = "call"  # bpf-to-bpf call into .text
    SUBPROG_ADDR = "subprog_addr"  # ld_imm64 of a .text function (callback)
    EXTERN = "extern"  # ksym / kfunc / kconfig: refused


@dataclass(frozen=True)
class ProgReloc:
    insn: int  # index relative to the start of its function
    kind: RelocKind
    target: str  # map name, data map name, or the extern symbol's name
    sym_off: int  # the symbol's value (offset in its section)


@dataclass
class ProgramSpec:
    """One function: an entry program (any section but .text) or a .text sub-program."""

    name: str  # the function's symbol name
    section: str
    sec_insn_off: int  # where the function starts in its section, in instructions
    insns: bytes
    relocs: dict[int, ProgReloc] = field(default_factory=dict)
    core_relos: list[tuple[int, CoreRelo]] = field(default_factory=list)  # (insn, record)

    @property
    def insn_count(self) -> int:
        return len(self.insns) // INSN_SIZE

    @property
    def is_subprogram(self) -> bool:
        return self.section == ".text"


def _imm(buf: bytearray | bytes, index: int) -> int:
    return int(struct.unpack_from("<i", buf, index * INSN_SIZE + 4)[0])


def _set_imm(buf: bytearray, index: int, value: int) -> None:
    struct.pack_into("<i", buf, index * INSN_SIZE + 4, value)


def _set_src_reg(buf: bytearray, index: int, src: int) -> None:
    pos = index * INSN_SIZE + 1
    buf[pos] = (buf[pos] & 0x0F) | (src << 4)


@dataclass
class LinkedProgram:
    """The main program with its reachable sub-programs appended, map references pending."""

    main: ProgramSpec
    insns: bytearray
    subprograms: list[str]  # names, in the order they were appended
    relocs: list[tuple[int, ProgReloc]]  # (absolute insn index, MAP/DATA/EXTERN reloc)
    placements: list[tuple[ProgramSpec, int]]  # every piece and its first instruction


def link(main: ProgramSpec, text_funcs: list[ProgramSpec]) -> LinkedProgram:
    """Append reachable .text functions to `main` in libbpf's order and fix call offsets."""
    buf = bytearray(main.insns)
    placed: dict[str, int] = {}
    order: list[str] = []
    placements: list[tuple[ProgramSpec, int]] = [(main, 0)]
    pending: list[tuple[int, ProgReloc]] = []

    def find_subprog(sec_insn: int, caller: ProgramSpec, at: int) -> ProgramSpec:
        for func in text_funcs:
            if func.sec_insn_off <= sec_insn < func.sec_insn_off + func.insn_count:
                return func
        raise MalformedObjectError(
            f"{caller.section}: instruction {at} of {caller.name!r} calls instruction "
            f"{sec_insn} of .text, which is not inside any function (sub-programs must be "
            f"functions in .text)")

    def process(prog: ProgramSpec, base: int, depth: int) -> None:
        if depth > 64:
            raise MalformedObjectError(f"sub-program calls nest deeper than 64 from "
                                       f"{main.name!r}")
        for i in range(prog.insn_count):
            pos = base + i
            rel = prog.relocs.get(i)
            if rel is not None and rel.kind in (RelocKind.MAP, RelocKind.DATA,
                                                RelocKind.EXTERN):
                pending.append((pos, rel))
                continue
            code = buf[pos * INSN_SIZE]
            src = buf[pos * INSN_SIZE + 1] >> 4
            is_call = code == BPF_CALL and src == BPF_PSEUDO_CALL
            is_func_addr = rel is not None and rel.kind is RelocKind.SUBPROG_ADDR
            if not (is_call or is_func_addr):
                continue
            imm = _imm(buf, pos)
            if rel is not None and rel.kind is RelocKind.CALL:
                target = rel.sym_off // INSN_SIZE + imm + 1
            elif is_func_addr:
                assert rel is not None
                target = (rel.sym_off + imm) // INSN_SIZE
            elif prog.is_subprogram:
                # a call inside .text needs no relocation: imm is relative to the call
                target = prog.sec_insn_off + i + imm + 1
            else:
                raise MalformedObjectError(
                    f"{prog.section}: instruction {i} of {prog.name!r} is a bpf-to-bpf call "
                    "without a relocation into .text (sub-programs must be in .text)")
            sub = find_subprog(target, prog, i)
            if sub.name not in placed:
                placed[sub.name] = len(buf) // INSN_SIZE
                order.append(sub.name)
                placements.append((sub, placed[sub.name]))
                buf.extend(sub.insns)
                process(sub, placed[sub.name], depth + 1)
            _set_imm(buf, pos, placed[sub.name] - pos - 1)
            if is_func_addr:
                _set_src_reg(buf, pos, BPF_PSEUDO_FUNC)

    process(main, 0, 0)
    return LinkedProgram(main, buf, order, pending, placements)


def apply_map_relocations(linked: LinkedProgram, map_fds: dict[str, int]) -> bytes:
    """Point every map / global-data reference at the fd of the map created for it."""
    buf = bytearray(linked.insns)
    for pos, rel in linked.relocs:
        fd = map_fds[rel.target]
        if rel.kind is RelocKind.MAP:
            _set_src_reg(buf, pos, BPF_PSEUDO_MAP_FD)
            _set_imm(buf, pos, fd)
        elif rel.kind is RelocKind.DATA:
            offset = _imm(buf, pos) + rel.sym_off
            _set_src_reg(buf, pos, BPF_PSEUDO_MAP_VALUE)
            _set_imm(buf, pos, fd)
            _set_imm(buf, pos + 1, offset)
    return bytes(buf)
