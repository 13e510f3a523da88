"""Loading one program of a parsed object (objects.ObjectSpec): its maps created (and pinned),
references patched, BTF with func/line info handed over, bpf(2) PROG_LOAD with libbpf's
log-retry. The parsing side never touches the kernel; this side is the only one that does
(as cilium/ebpf splits its ELF reader from its collection loader)."""
from __future__ import annotations

import contextlib
import os
import re
import struct
from typing import TYPE_CHECKING

from . import bpffs, insn_check, pins, syscall
from .btf import BtfExt, ExtRecord
from .btf_index import kernel_btf, module_btfs
from .core import POISON_IMM, Applied, relocate
from .errors import (
    KernelError,
    PinConflictError,
    PinDirError,
    PinNameError,
    UnsatisfiedRelocationError,
    VerifierError,
)
from .hooks import Hook
from .maps import BpfMap, CreatedMap, create_map, kernel_name
from .programs import INSN_SIZE, LinkedProgram, apply_map_relocations

if TYPE_CHECKING:
    from .objects import ObjectSpec

# The verifier log: one retry with this much room (the kernel keeps the tail when it
# overflows), and at most this much kept in VerifierError.log.
VERIFIER_LOG_SIZE = 1 << 20
VERIFIER_LOG_KEEP = 64 << 10


def load(spec: ObjectSpec, section: str, hook: Hook | str,
         pin_dir: str | os.PathLike[str] | None = None) -> LoadedProgram:
    """Create the maps `section`'s program uses and load it as `hook`'s program type.

    With `pin_dir` (a directory on bpffs) the maps and the program are pinned there;
    see docs/loader.md for reuse and conflicts. On any failure everything this call
    opened or pinned is closed/removed again.
    """
    hook = Hook.parse(hook)
    linked = prepare(spec, section, hook)
    core_applied = apply_core(spec, linked)
    pin_path = os.fspath(pin_dir) if pin_dir is not None else None
    if pin_path is not None:
        problem = bpffs.pin_dir_problem(pin_path)
        if problem:
            raise PinDirError(problem)
    prog_name = kernel_name(linked.main.name)
    prog_pin = pins.child_path(pin_path, pins.program_pin_name(prog_name)) if pin_path else None
    if prog_pin and os.path.lexists(prog_pin):
        raise PinConflictError(prog_pin, [
            "a pin with the program's name already exists; unpin it (rm) or use another "
            "pin directory"])

    created: list[CreatedMap] = []
    prog_fd = -1
    btf: syscall.BtfInfo | None = None
    try:
        btf = _program_btf(spec, linked)
        for name in dict.fromkeys(rel.target for _pos, rel in linked.relocs):
            created.append(create_map(spec.maps[name], pin_path))
        fds = {c.map.name: c.map.fd for c in created}
        insns = apply_map_relocations(linked, fds)
        try:
            prog_fd = _prog_load(hook, insns, prog_name, spec.license, btf)
        except VerifierError as exc:
            raise _unsatisfied(exc, prog_name, core_applied) or exc from None
        info = syscall.prog_info(prog_fd)
        if prog_pin:
            syscall.obj_pin(prog_fd, prog_pin)
        return LoadedProgram(
            fd=prog_fd, id=info.id, tag=info.tag, name=info.name or prog_name,
            section=linked.main.section, hook=hook,
            maps={c.map.name: c.map for c in created},
            pinned=prog_pin, subprograms=linked.subprograms, btf=btf is not None,
            core_relocations=core_applied)
    except BaseException:
        if prog_fd >= 0:
            os.close(prog_fd)
        for c in created:
            c.map.close()
            if c.new_pin:
                _unlink_quietly(c.new_pin)
        raise
    finally:
        if btf is not None:
            os.close(btf.btf_fd)  # the program holds its own reference


def prepare(spec: ObjectSpec, section: str, hook: Hook | str) -> LinkedProgram:
    """Everything a load decides before bpf(2), without touching the kernel: the linked
    program, refused if it uses an unsupported feature, an instruction insn_check forbids,
    or a map or program name that cannot be pinned (docs/loader.md, 'Loader rules')."""
    Hook.parse(hook)
    linked = spec.link(section)
    problems = spec.unsupported_for(linked)
    if problems:
        raise problems[0].error()
    insn_check.check_linked(linked)
    prog_pin = pins.program_pin_name(kernel_name(linked.main.name))
    for name in dict.fromkeys(rel.target for _pos, rel in linked.relocs):
        if pins.pin_name(name) == prog_pin:
            raise PinNameError(f"map {name!r} and program {linked.main.name!r} would share "
                               f"the pin name {prog_pin!r}; rename one of them")
    return linked


def apply_core(spec: ObjectSpec, linked: LinkedProgram) -> list[Applied]:
    """CO-RE: patch the linked program's instructions for the running kernel's types
    (vmlinux, else a module's). Each piece's records move with the piece, as libbpf
    relocates a sub-program before appending it. Runs after insn_check on purpose: CO-RE
    only rewrites offsets and immediates of loads, stores, ALU and ld_imm64 (src_reg 0)
    instructions, or turns one into `call 0xbad2310`, which the verifier refuses unless
    dead, so nothing it produces needs checking again."""
    relos = [(base + index, core) for piece, base in linked.placements
             for index, core in piece.core_relos]
    if not relos:
        return []
    assert spec.btf_types is not None  # records come from .BTF.ext, which needs .BTF
    insns, applied = relocate(spec.btf_types, relos, bytes(linked.insns), [kernel_btf()],
                              module_btfs)
    linked.insns[:] = insns
    return applied


_POISON_CALL = re.compile(rf"^(\d+): \(85\) call unknown#{POISON_IMM}\b", re.M)


def _unsatisfied(exc: VerifierError, program: str,
                 applied: list[Applied]) -> UnsatisfiedRelocationError | None:
    """When the verifier stopped at a poisoned instruction, name the relocation (type,
    access string, section) instead of the verifier's `invalid func unknown#195896080`."""
    poisoned = {a.insn: a for a in applied if a.poisoned}
    for match in _POISON_CALL.finditer(exc.log):
        hit = poisoned.get(int(match.group(1)))
        if hit is not None:
            what = (f"CO-RE relocation {hit.relo.kind} of {hit.spec} (access string "
                    f"{hit.relo.access!r}) in section {hit.relo.section!r}")
            return UnsatisfiedRelocationError(exc.errno or 22, program, exc.log,
                                              exc.log_truncated, what)
    return None


def _program_btf(spec: ObjectSpec, linked: LinkedProgram) -> syscall.BtfInfo | None:
    """BTF, func_info and line_info for the program, as libbpf passes them (the verifier
    needs them for callbacks and global functions, and annotates its log with source
    lines). None when the object has none or the kernel refuses its BTF: like libbpf,
    the program is then loaded without."""
    if spec.btf is None:
        return None
    sizes = {sec.name: sec.size for sec in spec.elf.sections if sec.name}
    offsets: dict[str, dict[str, int]] = {}
    for sym in spec.elf.symbols:
        if sym.type == "STT_OBJECT" and sym.name and 0 < sym.shndx < len(spec.elf.sections):
            offsets.setdefault(spec.elf.sections[sym.shndx].name, {})[sym.name] = sym.value
    try:
        btf_fd = syscall.btf_load(spec.btf.for_kernel(sizes, offsets))
    except KernelError:
        return None
    ext = spec.btf_ext or BtfExt()
    return syscall.BtfInfo(
        btf_fd,
        _relocate_ext(ext.func_info, linked), ext.func_info_rec_size,
        _relocate_ext(ext.line_info, linked), ext.line_info_rec_size)


def _prog_load(hook: Hook, insns: bytes, name: str, license: str,
               btf: syscall.BtfInfo | None) -> int:
    """Load like libbpf: first without a log; on failure again with a bounded log."""
    try:
        fd, _ = syscall.prog_load(hook.prog_type, insns, license, name, btf=btf)
        return fd
    except KernelError as first:
        if first.errno not in (13, 22, 7, 28):  # EACCES EINVAL E2BIG ENOSPC: verifier
            raise
    try:
        fd, _ = syscall.prog_load(hook.prog_type, insns, license, name,
                                  log_level=1, log_size=VERIFIER_LOG_SIZE, btf=btf)
    except VerifierError as exc:
        if len(exc.log) > VERIFIER_LOG_KEEP:
            exc.log = "[...]\n" + exc.log[-VERIFIER_LOG_KEEP:]
            exc.log_truncated = True
        raise
    return fd  # loaded on the second attempt (should not happen; keep it)


def _relocate_ext(records: dict[str, list[ExtRecord]], linked: LinkedProgram) -> bytes:
    """func_info/line_info records of every piece of the linked program, with offsets
    moved from bytes-in-section to instructions-in-the-final-program (as libbpf does)."""
    out = bytearray()
    for piece, base in linked.placements:
        start = piece.sec_insn_off * INSN_SIZE
        end = start + piece.insn_count * INSN_SIZE
        for rec in records.get(piece.section, []):
            if start <= rec.insn_off < end:
                out += struct.pack("<I", base + (rec.insn_off - start) // INSN_SIZE) + rec.rest
    return bytes(out)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


class LoadedProgram:
    """A loaded program and the maps it uses; close() releases every fd it holds.

    Closing does not unload a program that is pinned or attached to a route: the kernel
    keeps it while anything references it.
    """

    def __init__(self, fd: int, id: int, tag: str, name: str, section: str, hook: Hook,
                 maps: dict[str, BpfMap], pinned: str | None,
                 subprograms: list[str], btf: bool = False,
                 core_relocations: list[Applied] | None = None) -> None:
        self.fd = fd
        self.id = id
        self.tag = tag
        self.name = name
        self.section = section
        self.hook = hook
        self.maps = maps
        self.pinned = pinned
        self.subprograms = subprograms
        self.btf = btf  # loaded with BTF func/line info (False: the kernel refused the BTF)
        self.core_relocations = core_relocations or []  # what CO-RE did, per record

    def close(self) -> None:
        for m in self.maps.values():
            m.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> LoadedProgram:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"LoadedProgram(name={self.name!r}, id={self.id}, tag={self.tag}, "
                f"hook={self.hook.value}, maps={sorted(self.maps)})")
