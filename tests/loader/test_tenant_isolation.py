"""Issue 12, kernel side: what a hostile tenant's object tried, refused before bpf(2).

Each attack is first shown to work against the kernel itself (the instructions the loader
would have handed over, loaded directly with bpf(2) as the agent could), then shown refused
by the loader, with the victim untouched. Real kernel, test bpffs, no mocks.
"""
from __future__ import annotations

import os
import re
import struct
from pathlib import Path

import pytest
from lwt_agent.bpf import (
    ForbiddenInstructionError,
    Hook,
    ObjectSpec,
    PinNameError,
    syscall,
)
from lwt_agent.bpf.helpers_allowlist import HELPER_IDS, HELPER_NAMES, LWT_ALLOWED
from lwt_agent.bpf.insn_check import check_piece
from lwt_agent.bpf.loader import prepare
from lwt_agent.bpf.maps import BPF_MAP_TYPE_HASH, BpfMap, create_map
from lwt_agent.bpf.programs import ProgramSpec, ProgReloc, RelocKind, apply_map_relocations
from lwt_policy.catalogue import CATALOGUE, builtin_object_dir

from .conftest import program_gone

pytestmark = pytest.mark.kernel

RAW_FD_PLACEHOLDER = bytes.fromhex("18110000ffffff7f")  # ld_imm64 r1, MAP_FD, 0x7fffffff
KEY22 = struct.pack("<I", 22)
# an Ethernet frame carrying an IPv4/TCP header to port 22 (BPF_PROG_TEST_RUN input)
PACKET = (b"\0" * 12 + b"\x08\x00"
          + bytes.fromhex("45000028000040004006" "0000" "0a000001" "0a000002")
          + struct.pack(">HHIIBBHHH", 40000, 22, 0, 0, 0x50, 0x02, 1024, 0, 0))


def _attacks(testobj: Path) -> bytes:
    return (testobj / "tenant_attacks.o").read_bytes()


def _victim_map() -> BpfMap:
    """Tenant A's port-filter map: "deny TCP 22" (key 22 -> 1)."""
    victim = BpfMap(syscall.map_create(BPF_MAP_TYPE_HASH, 4, 1, 16, 0, "deny_ports"))
    victim.update(KEY22, b"\x01")
    return victim


def _load_unchecked(spec: ObjectSpec, section: str) -> tuple[int, list[BpfMap]]:
    """What the loader handed the kernel before the checks: maps created, references
    patched, bpf(2) PROG_LOAD. Returns the program fd and the maps (caller closes)."""
    linked = spec.link(section)
    created = [create_map(spec.maps[name], None).map
               for name in dict.fromkeys(rel.target for _pos, rel in linked.relocs)]
    insns = apply_map_relocations(linked, {m.name: m.fd for m in created})
    fd, _ = syscall.prog_load(Hook.OUT.prog_type, insns, spec.license, "attack")
    return fd, created


def test_raw_map_fd_binds_another_tenants_map_and_is_refused(testobj: Path) -> None:
    data = _attacks(testobj)
    assert data.count(RAW_FD_PLACEHOLDER) == 1
    with _victim_map() as victim:
        hostile = data.replace(RAW_FD_PLACEHOLDER,
                               RAW_FD_PLACEHOLDER[:4] + struct.pack("<i", victim.fd))
        spec = ObjectSpec.from_bytes(hostile, "tenant_b.o")

        # the kernel resolves the raw fd in the loading process: it binds the victim, and
        # one packet through the program deletes tenant A's "deny TCP 22"
        prog_fd, maps = _load_unchecked(spec, "lwt_out_rawfd")
        try:
            info = syscall.prog_info(prog_fd)
            assert victim.id in info.map_ids
            assert syscall.prog_test_run(prog_fd, PACKET) == 0  # BPF_OK
            assert victim.lookup(KEY22) is None
            victim.update(KEY22, b"\x01")  # tenant A's rule, back for the loader's turn
        finally:
            os.close(prog_fd)
            for m in maps:
                m.close()
        assert program_gone(info.id)

        with pytest.raises(ForbiddenInstructionError, match="BPF_PSEUDO_MAP_FD") as refused:
            spec.load("lwt_out_rawfd", Hook.OUT)
        assert "no relocation produced" in str(refused.value)
        with pytest.raises(ForbiddenInstructionError):
            prepare(spec, "lwt_out_rawfd", Hook.OUT)  # refused without touching the kernel
        assert victim.lookup(KEY22) == b"\x01"


def test_kernel_memory_helpers_are_refused(testobj: Path) -> None:
    spec = ObjectSpec.from_bytes(_attacks(testobj), "tenant_b.o")
    # as root (CAP_PERFMON) the kernel itself accepts these helpers on an LWT program, and
    # one packet copies the current task's address (and a word of it) into the .bss
    prog_fd, maps = _load_unchecked(spec, "lwt_out_snoop")
    prog_id = syscall.prog_info(prog_fd).id
    try:
        assert syscall.prog_test_run(prog_fd, PACKET) == 0
        [bss] = [m for m in maps if m.name.endswith(".bss")]
        value = bss.lookup(b"\0\0\0\0")
        assert value is not None
        task = max(struct.unpack("<QQ", value))  # the order of the two globals is clang's
        assert task >= 0xFFFF000000000000  # a kernel address, handed to a tenant
    finally:
        os.close(prog_fd)
        for m in maps:
            m.close()
    assert program_gone(prog_id)

    with pytest.raises(ForbiddenInstructionError,
                       match=r"bpf_get_current_task#35 is not allowed for LWT programs"):
        spec.load("lwt_out_snoop", Hook.OUT)


def _insn(code: int, src: int = 0, dst: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, 0, imm)


EXIT = _insn(0x95)


@pytest.mark.parametrize(("insns", "expected"), [
    (_insn(0x18, src=3, dst=1, imm=5) + _insn(0) + EXIT, "BPF_PSEUDO_BTF_ID"),
    (_insn(0x18, src=5, dst=1, imm=0) + _insn(0) + EXIT, "BPF_PSEUDO_MAP_IDX"),
    (_insn(0x18, src=2, dst=1, imm=3) + _insn(0) + EXIT, "BPF_PSEUDO_MAP_VALUE"),
    (_insn(0x18, src=6, dst=1) + _insn(0) + EXIT, "BPF_PSEUDO_MAP_IDX_VALUE"),
    (_insn(0x85, src=2, imm=1234) + EXIT, "raw kfunc call"),
    (_insn(0x85, imm=HELPER_IDS["probe_read_kernel"]) + EXIT, "bpf_probe_read_kernel#113"),
    (_insn(0x85, imm=HELPER_IDS["trace_printk"]) + EXIT, "bpf_trace_printk#6"),
    (_insn(0x85, imm=HELPER_IDS["snprintf_btf"]) + EXIT, "bpf_snprintf_btf#149"),
    (_insn(0x85, imm=HELPER_IDS["trace_vprintk"]) + EXIT, "bpf_trace_vprintk#177"),
    (_insn(0x85, imm=HELPER_IDS["get_current_task_btf"]) + EXIT, "get_current_task_btf"),
    (_insn(0x85, imm=HELPER_IDS["tail_call"]) + EXIT, "bpf_tail_call#12"),
    (_insn(0x85, imm=9999) + EXIT, "helper #9999"),
    (_insn(0x8D) + EXIT, "callx"),
])
def test_forbidden_instructions(insns: bytes, expected: str) -> None:
    with pytest.raises(ForbiddenInstructionError, match=re.escape(expected)):
        check_piece(ProgramSpec("p", "lwt/p", 0, insns))


def test_relocated_pseudo_refs_and_allowed_helpers_pass() -> None:
    ld_map = _insn(0x18, src=1, dst=1) + _insn(0)  # src set, but from a relocation
    calls = b"".join(_insn(0x85, imm=HELPER_IDS[name]) for name in sorted(LWT_ALLOWED))
    prog = ProgramSpec("p", "lwt/p", 0, ld_map + calls + EXIT,
                       relocs={0: ProgReloc(0, RelocKind.MAP, "m", 0)})
    check_piece(prog)
    # a kfunc call needs a relocation naming an allowed kfunc (none are)
    kfunc = ProgramSpec("k", "lwt/k", 0, _insn(0x85, src=1, imm=-1) + EXIT,
                        relocs={0: ProgReloc(0, RelocKind.EXTERN, "bpf_rdonly_cast", 0)})
    with pytest.raises(ForbiddenInstructionError, match="bpf_rdonly_cast"):
        check_piece(kfunc)


def test_every_builtin_passes_the_checks_on_every_hook() -> None:
    for builtin in CATALOGUE.values():
        spec = ObjectSpec.from_file(builtin_object_dir() / builtin.object)
        for hook in builtin.hooks:
            prepare(spec, builtin.section, hook)


def test_helper_ids_match_the_system_header() -> None:
    header = Path("/usr/include/linux/bpf.h").read_text()
    mapper = header[header.index("#define __BPF_FUNC_MAPPER(FN)"):]
    mapper = mapper[:mapper.index("\n\n")]
    names = re.findall(r"FN\((\w+)", mapper)
    assert len(names) > 200
    assert list(HELPER_NAMES[:len(names)]) == names


def test_map_name_escaping_the_pin_dir_cannot_reuse_another_tenants_pin(
        testobj: Path, pin_dir: Path) -> None:
    tenant_a, tenant_b = pin_dir / "a", pin_dir / "b"
    tenant_a.mkdir()
    tenant_b.mkdir()
    hostile = _attacks(testobj).replace(b"zzza_deny_ports", b"../a/deny_ports")
    spec = ObjectSpec.from_bytes(hostile, "tenant_b.o")
    assert "../a/deny_ports" in spec.maps
    try:
        with _victim_map() as victim:
            victim.pin(tenant_a / "deny_ports")
            with pytest.raises(PinNameError, match="cannot be pinned"):
                spec.load("lwt_out_pinescape", Hook.OUT, pin_dir=tenant_b)
            assert list(tenant_b.iterdir()) == []
            assert sorted(p.name for p in tenant_a.iterdir()) == ["deny_ports"]
            assert victim.lookup(KEY22) == b"\x01"
    finally:
        for sub in (tenant_a, tenant_b):
            for entry in sub.iterdir():
                entry.unlink()
            sub.rmdir()


def test_allowlist_has_no_kernel_memory_or_printing_helpers() -> None:
    for name in LWT_ALLOWED:
        assert name in HELPER_IDS, name
        assert not name.startswith(("probe_", "get_current_", "trace_", "snprintf",
                                    "copy_from_user", "skc_to_", "per_cpu", "this_cpu",
                                    "tail_call", "sys_", "kallsyms", "d_path")), name
