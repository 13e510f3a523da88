"""Malformed input: every defect raises MalformedObjectError naming the problem, and the CLI
exits 2 with that message and no traceback."""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from lwt_agent.bpf import Hook, MalformedObjectError, ObjectSpec

from . import mutate

Mutation = Callable[[bytes], bytes]

# (id, source object, mutation, words the message must contain)
CASES: list[tuple[str, str, Mutation, str]] = [
    ("empty", "btf_maps.o", lambda d: b"", "not an ELF file"),
    ("text", "btf_maps.o", lambda d: b"#!/bin/sh\necho not a bpf object\n", "not an ELF file"),
    ("truncated-header", "btf_maps.o", lambda d: d[:40], "truncated"),
    ("truncated-half", "btf_maps.o", lambda d: d[: len(d) // 2], "truncated"),
    ("truncated-last-byte", "btf_maps.o", lambda d: d[:-1], "truncated"),
    ("x86-64-machine", "btf_maps.o", lambda d: mutate.machine(d, 62), "not EM_BPF"),
    ("elf32", "btf_maps.o", lambda d: d[:4] + b"\x01" + d[5:], "64-bit"),
    ("big-endian", "btf_maps.o", lambda d: d[:5] + b"\x02" + d[6:], "big-endian"),
    ("reloc-unknown-symbol", "btf_maps.o",
     lambda d: mutate.reloc_symbol(d, ".rellwt_out_btf", 0xFFFF), "unknown symbol #65535"),
    ("reloc-offset-out-of-range", "btf_maps.o",
     lambda d: mutate.reloc_offset(d, ".rellwt_out_btf", 1 << 20), "outside section"),
    ("section-past-eof", "subprogs.o",
     lambda d: mutate.section_offset(d, "lwt_in_sub", len(d) + 100), "past the end"),
    ("btf-bad-magic", "btf_maps.o", lambda d: mutate.btf_field(d, 0, "<H", 0x1234),
     "corrupt BTF: bad magic"),
    ("btf-types-past-end", "btf_maps.o", lambda d: mutate.btf_field(d, 12, "<I", 1 << 24),
     "corrupt BTF"),
    ("btf-strings-past-end", "global_data.o",
     lambda d: mutate.btf_field(d, 20, "<I", 1 << 24), "corrupt BTF"),
]


@pytest.fixture(params=CASES, ids=[c[0] for c in CASES])
def malformed(request: pytest.FixtureRequest, testobj: Path, tmp_path: Path
              ) -> tuple[Path, str]:
    _name, source, mutation, words = request.param
    path = tmp_path / f"{request.param[0]}.o"
    path.write_bytes(mutation((testobj / source).read_bytes()))
    return path, words


def test_parse_raises_malformed_naming_the_problem(malformed: tuple[Path, str]) -> None:
    path, words = malformed
    with pytest.raises(MalformedObjectError) as info:
        ObjectSpec.from_file(path)
    assert words in str(info.value)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lwt_agent.cli", *args],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("verb", ["inspect", "load"])
def test_cli_exits_2_with_the_message(malformed: tuple[Path, str], verb: str) -> None:
    path, words = malformed
    extra = ["--section", "lwt_out_btf", "--hook", "out"] if verb == "load" else []
    proc = _cli(verb, str(path), *extra)
    assert proc.returncode == 2, proc.stderr
    assert words in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_missing_section_and_file(testobj: Path, tmp_path: Path) -> None:
    spec = ObjectSpec.from_file(testobj / "subprogs.o")
    with pytest.raises(MalformedObjectError, match=r"no program section 'nope'.*lwt_in_sub"):
        spec.load("nope", Hook.IN)
    proc = _cli("load", str(testobj / "subprogs.o"), "--section", "nope", "--hook", "in")
    assert proc.returncode == 2 and "no program section 'nope'" in proc.stderr
    with pytest.raises(MalformedObjectError, match="cannot read"):
        ObjectSpec.from_file(tmp_path / "absent.o")
    proc = _cli("inspect", str(tmp_path / "absent.o"))
    assert proc.returncode == 2 and "cannot read" in proc.stderr
    assert "Traceback" not in proc.stderr
