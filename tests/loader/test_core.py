"""CO-RE on the real kernel: objects built against this kernel's vmlinux.h (bpf/testobj/core)
load with the same tag and the same xlated instructions (with the same source lines) as
libbpf gives them through iproute2, and are accepted or refused alike.

Program budget: each section is loaded once by us and once by iproute2 (one route each,
in the module's private netns).
"""
from __future__ import annotations

import json
import re
import struct
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from lwt_agent.bpf import Hook, ObjectSpec, UnsatisfiedRelocationError

from .conftest import IpRoute2
from .test_cli import lwt_agent

pytestmark = pytest.mark.kernel

# (object under bpf/build/testobj/core, section, hook, function, relocation kinds it covers)
CASES = [
    ("kinds.o", "lwt_core_offset", "out", "core_offset", {"byte_off"}),
    ("kinds.o", "lwt_core_size", "out", "core_size",
     {"byte_sz", "signed", "field_exists", "byte_off"}),
    ("kinds.o", "lwt_core_bitfield", "out", "core_bitfield",
     {"byte_off", "byte_sz", "lshift_u64", "rshift_u64", "signed"}),
    ("kinds.o", "lwt_core_type", "out", "core_type",
     {"local_type_id", "target_type_id", "type_exists", "type_size", "byte_off"}),
    ("kinds.o", "lwt_core_enum", "out", "core_enum",
     {"enumval_value", "enumval_exists", "byte_off"}),
    ("kinds.o", "lwt_core_guard", "out", "core_guard", {"field_exists", "byte_off"}),
    ("kinds.o", "lwt_core_sub", "out", "core_sub", {"byte_off", "byte_sz"}),
    ("len_hist.o", "len_hist", "in", "do_len_hist", {"byte_off"}),
    ("len_hist.o", "len_hist", "out", "do_len_hist", {"byte_off"}),
    ("len_hist.o", "len_hist", "xmit", "do_len_hist", {"byte_off"}),
]


@pytest.fixture(scope="module")
def coreobj(testobj: Path) -> Path:
    path = testobj / "core"
    if not (path / "kinds.o").is_file():
        raise RuntimeError(f"{path} has no CO-RE test objects: run `make -C bpf` on a host "
                           "with bpftool and /sys/kernel/btf/vmlinux")
    return path


def xlated(prog_id: int) -> str:
    """`bpftool prog dump xlated` with the ids of maps (which differ per load) masked."""
    out = subprocess.run(["bpftool", "prog", "dump", "xlated", "id", str(prog_id)],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return re.sub(r"map\[id:\d+\]", "map[id:*]", out)


@pytest.mark.parametrize(("obj", "section", "hook", "function", "kinds"), CASES)
def test_same_program_as_libbpf(obj: str, section: str, hook: str, function: str,
                                kinds: set[str], coreobj: Path, iproute2: IpRoute2) -> None:
    path = coreobj / obj
    with ObjectSpec.from_file(path).load(section, Hook(hook)) as prog:
        assert {str(a.relo.kind) for a in prog.core_relocations} == kinds
        ours_tag, ours_xlated = prog.tag, xlated(prog.id)
    ref = iproute2.load(path, section, hook, function)
    assert ref.returncode == 0, f"iproute2 failed to load {obj}:{section}:\n{ref.output}"
    assert len(ref.programs) == 1, ref.programs
    assert ours_tag == ref.programs[0]["tag"]
    assert ours_xlated == xlated(int(ref.programs[0]["id"]))
    assert "; " in ours_xlated, "no source lines: func/line info did not reach the kernel"


def _with_type_matches(src: Path, dst: Path) -> int:
    """A copy of `src` whose `type_exists` records say `type_matches` (kind 8 -> 12): clang 14
    cannot emit that kind, libbpf 1.1 and this loader both resolve it. Returns how many."""
    data = bytearray(src.read_bytes())
    with src.open("rb") as f:
        ext = ELFFile(f).get_section_by_name(".BTF.ext")
        base = ext["sh_offset"]
    hdr_len, = struct.unpack_from("<I", data, base + 4)
    core_off, core_len = struct.unpack_from("<II", data, base + 24)
    pos = base + hdr_len + core_off
    end = pos + core_len
    rec_size, = struct.unpack_from("<I", data, pos)
    pos += 4
    flipped = 0
    while pos < end:
        _sec, count = struct.unpack_from("<II", data, pos)
        pos += 8
        for _ in range(count):
            if struct.unpack_from("<I", data, pos + 12)[0] == 8:  # BPF_CORE_TYPE_EXISTS
                struct.pack_into("<I", data, pos + 12, 12)  # BPF_CORE_TYPE_MATCHES
                flipped += 1
            pos += rec_size
    dst.write_bytes(bytes(data))
    return flipped


def test_type_matches_like_libbpf(coreobj: Path, iproute2: IpRoute2, tmp_path: Path) -> None:
    path = tmp_path / "matches.o"
    assert _with_type_matches(coreobj / "kinds.o", path) == 3
    with ObjectSpec.from_file(path).load("lwt_core_type", Hook.OUT) as prog:
        matches = {a.type: a.new for a in prog.core_relocations
                   if str(a.relo.kind) == "type_matches"}
        # iphdr does not match: after typedefs, clang names its int "unsigned short" and
        # the kernel's BTF "short unsigned int" (type_matches compares names; libbpf too)
        assert matches == {"struct list_head": 1, "struct iphdr": 0,
                           "struct lwt_no_such_type": 0}
        ours_tag, ours_xlated = prog.tag, xlated(prog.id)
    ref = iproute2.load(path, "lwt_core_type", "out", "core_type")
    assert ref.returncode == 0 and len(ref.programs) == 1, ref.output
    assert ours_tag == ref.programs[0]["tag"]
    assert ours_xlated == xlated(int(ref.programs[0]["id"]))


def test_relocations_really_change_the_code(coreobj: Path) -> None:
    """The flavor's `mark` is at 4 in the object and at 8 in the kernel's __sk_buff; the
    guarded missing field is poisoned; a type the kernel lacks gives 0."""
    with ObjectSpec.from_file(coreobj / "kinds.o").load("lwt_core_offset", Hook.OUT) as p:
        mark = next(a for a in p.core_relocations if "mark" in a.spec)
        assert (mark.old, mark.new, mark.poisoned) == (4, 8, False)
    with ObjectSpec.from_file(coreobj / "kinds.o").load("lwt_core_guard", Hook.OUT) as p:
        by_kind = {str(a.relo.kind): a for a in p.core_relocations}
        assert by_kind["field_exists"].new == 0
        assert by_kind["byte_off"].poisoned
        assert "(85) call unknown#195896080" not in xlated(p.id)  # dead code: removed
    with ObjectSpec.from_file(coreobj / "kinds.o").load("lwt_core_type", Hook.OUT) as p:
        missing = [a for a in p.core_relocations if "lwt_no_such_type" in a.type]
        assert missing and all(a.new == 0 and not a.poisoned for a in missing)
        tcp = next(a for a in p.core_relocations if str(a.relo.kind) == "target_type_id"
                   and "tcphdr" in a.type)
        assert tcp.target == "vmlinux" and tcp.new > 0


def test_unguarded_missing_field_is_refused_like_libbpf(coreobj: Path,
                                                        iproute2: IpRoute2) -> None:
    path = coreobj / "unguarded.o"
    with pytest.raises(UnsatisfiedRelocationError) as info:
        ObjectSpec.from_file(path).load("lwt_core_unguarded", Hook.OUT)
    message = str(info.value)
    for part in ("struct __sk_buff___lwt.no_such_field", "'0:2'", "'lwt_core_unguarded'",
                 "bpf_core_field_exists"):
        assert part in message
    assert "invalid func unknown#195896080" in info.value.log
    ref = iproute2.load(path, "lwt_core_unguarded", "out", "core_unguarded")
    assert ref.returncode != 0 and not ref.programs, ref.output
    assert "195896080" in ref.output or "CO-RE" in ref.output, ref.output


def test_inspect_lists_relocations(coreobj: Path) -> None:
    proc = lwt_agent("inspect", str(coreobj / "kinds.o"))
    assert proc.returncode == 0, proc.stderr
    assert ("CO-RE relocations:\n  section 'lwt_core_offset' insn 0: byte_off struct "
            "__sk_buff '0:0' (struct __sk_buff.len (0:0 @ offset 0))") in proc.stdout
    proc = lwt_agent("inspect", "--json", str(coreobj / "len_hist.o"))
    assert proc.returncode == 0, proc.stderr
    relos = json.loads(proc.stdout)["core_relocations"]
    assert relos == [{"section": "len_hist", "function": "do_len_hist", "insn": 2,
                      "kind": "byte_off", "type": "struct __sk_buff", "access": "0:0",
                      "spec": "struct __sk_buff.len (0:0 @ offset 0)"}]


def test_load_json_counts_relocations(coreobj: Path) -> None:
    proc = lwt_agent("load", str(coreobj / "kinds.o"), "--section", "lwt_core_guard",
                     "--hook", "out", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["core_relocations"] == {"applied": 2, "poisoned": 1}
