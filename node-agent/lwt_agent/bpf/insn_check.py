"""Instruction checks made before bpf(2): what the kernel would accept from a process with
the agent's capabilities but a tenant's program must not get.

- ``ld_imm64`` with a pseudo source (map fd, map value, map index, BTF id, function) that no
  relocation produced. The kernel resolves BPF_PSEUDO_MAP_FD against the *loading process's*
  fd table, so a raw ``imm=7, src_reg=1`` binds whatever map the agent has open as fd 7:
  another tenant's map. Only the loader may set these, from a relocation to the object's
  own maps (programs.apply_map_relocations).
- Helper calls outside helpers_allowlist.ALLOWED_HELPER_IDS (the agent holds CAP_PERFMON,
  which unlocks kernel-memory helpers for every program it loads).
- kfunc calls: a raw BPF_PSEUDO_KFUNC_CALL always, and relocated ones unless their name is
  in helpers_allowlist.ALLOWED_KFUNCS.

Pure functions over the raw instructions of each piece of a linked program.
"""
from __future__ import annotations

from .errors import ForbiddenInstructionError
from .helpers_allowlist import ALLOWED_HELPER_IDS, ALLOWED_KFUNCS, helper_name
from .programs import (
    BPF_CALL,
    BPF_LD_IMM64,
    BPF_PSEUDO_CALL,
    INSN_SIZE,
    LinkedProgram,
    ProgramSpec,
    RelocKind,
)

BPF_CALLX = 0x8D  # BPF_JMP | BPF_CALL | BPF_X
BPF_PSEUDO_KFUNC_CALL = 2

LD_IMM64_PSEUDO = {
    1: "BPF_PSEUDO_MAP_FD", 2: "BPF_PSEUDO_MAP_VALUE", 3: "BPF_PSEUDO_BTF_ID",
    4: "BPF_PSEUDO_FUNC", 5: "BPF_PSEUDO_MAP_IDX", 6: "BPF_PSEUDO_MAP_IDX_VALUE",
}


def check_linked(linked: LinkedProgram) -> None:
    """Raise ForbiddenInstructionError for the first refused instruction of any piece
    (the main program and each reachable sub-program) that would reach the kernel."""
    for piece, _base in linked.placements:
        check_piece(piece)


def check_piece(prog: ProgramSpec) -> None:
    insns = prog.insns
    count = len(insns) // INSN_SIZE
    i = 0
    while i < count:
        code = insns[i * INSN_SIZE]
        src = insns[i * INSN_SIZE + 1] >> 4
        rel = prog.relocs.get(i)
        if code == BPF_LD_IMM64:
            if src and rel is None:
                kind = LD_IMM64_PSEUDO.get(src, f"unknown pseudo source {src}")
                raise ForbiddenInstructionError(
                    prog.name, i,
                    f"ld_imm64 with src_reg={src} ({kind}) that no relocation produced; the "
                    "kernel would resolve it against the loader's own fds or ids (another "
                    "tenant's map). Reference maps and globals by symbol so the compiler "
                    "emits a relocation")
            i += 2  # the second half of ld_imm64 is not an instruction of its own
            continue
        if code == BPF_CALLX:
            raise ForbiddenInstructionError(prog.name, i, "indirect call (callx) is not "
                                            "allowed")
        if code == BPF_CALL:
            _check_call(prog, i, src, rel)
        i += 1


def _check_call(prog: ProgramSpec, i: int, src: int, rel: object) -> None:
    imm = int.from_bytes(prog.insns[i * INSN_SIZE + 4:i * INSN_SIZE + 8], "little",
                         signed=True)
    if src == 0:
        if imm not in ALLOWED_HELPER_IDS:
            raise ForbiddenInstructionError(
                prog.name, i,
                f"helper {helper_name(imm)} is not allowed for LWT programs (allowed: map "
                "access, time, randomness, packet and encap helpers, ring buffer/perf output, "
                "bpf_loop; see docs/loader.md 'Loader rules')")
        return
    if src == BPF_PSEUDO_CALL:
        target = getattr(rel, "target", None)
        if getattr(rel, "kind", None) is RelocKind.EXTERN and target not in ALLOWED_KFUNCS:
            raise ForbiddenInstructionError(
                prog.name, i, f"call to kernel function (kfunc) {target!r} is not allowed")
        return  # bpf-to-bpf call: programs.link resolved it inside .text
    if src == BPF_PSEUDO_KFUNC_CALL:
        raise ForbiddenInstructionError(
            prog.name, i, f"raw kfunc call (BTF id {imm}) without a relocation naming it "
            "is not allowed")
    raise ForbiddenInstructionError(prog.name, i, f"call with unknown src_reg={src}")
