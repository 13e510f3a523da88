"""`lwt-agent inspect` and `lwt-agent load`: output shapes and exit codes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from lwt_agent.bpf import syscall
from lwt_policy.catalogue import CATALOGUE, builtin_object_dir

from .conftest import program_gone

pytestmark = pytest.mark.kernel

LOAD_KEYS = {"ok", "section", "hook", "prog_id", "tag", "maps", "core_relocations", "error"}


def lwt_agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lwt_agent.cli", *args],
                          capture_output=True, text=True, timeout=60)


def test_inspect_text_and_json(testobj: Path) -> None:
    proc = lwt_agent("inspect", str(testobj / "global_data.o"))
    assert proc.returncode == 0, proc.stderr
    for words in ("license: GPL", "BTF:     yes", "section 'lwt_xmit_gd': function global_xmit",
                  ".rodata: 4 bytes as map global_d.rodata (read-only, frozen)",
                  ".bss: 4 bytes"):
        assert words in proc.stdout
    proc = lwt_agent("inspect", "--json", str(testobj / "btf_maps.o"))
    info = json.loads(proc.stdout)
    assert info["ok"] and info["btf"] and info["license"] == "GPL"
    assert info["programs"] == [{"section": "lwt_out_btf", "function": "count_out",
                                 "insns": info["programs"][0]["insns"],
                                 "kernel_name": "count_out", "subprograms": []}]
    assert info["programs"][0]["insns"] > 10
    shared = next(m for m in info["maps"] if m["name"] == "shared_cfg")
    assert shared == {"name": "shared_cfg", "type": "array", "key_size": 4, "value_size": 4,
                      "max_entries": 2, "flags": 0, "pinning": "by_name", "kind": "btf",
                      "section": ".maps"}


def test_inspect_lists_unsupported_features_and_relocations(testobj: Path) -> None:
    proc = lwt_agent("inspect", str(testobj / "kfunc.o"))
    assert proc.returncode == 0
    assert "kfunc in section 'lwt_in_kfunc'" in proc.stdout
    proc = lwt_agent("inspect", str(testobj / "core_reloc.o"))
    assert proc.returncode == 0
    assert ("section 'lwt_out_core' insn 0: byte_off struct pkt_view '0:1' "
            "(struct pkt_view.pkt_type (0:1 @ offset 4))") in proc.stdout


def test_load_json_success_unloads_on_exit() -> None:
    builtin = CATALOGUE["port-filter"]
    proc = lwt_agent("load", str(builtin_object_dir() / builtin.object),
                     "--section", builtin.section, "--hook", "in", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)  # exactly one JSON object
    assert set(result) == LOAD_KEYS
    assert result["ok"] and result["error"] is None and len(result["tag"]) == 16
    assert result["section"] == builtin.section and result["hook"] == "in"
    assert {m["name"] for m in result["maps"]} == {m.name for m in builtin.maps}
    assert all(set(m) == {"name", "id", "type"} and m["id"] > 0 for m in result["maps"])
    assert program_gone(result["prog_id"]), "not unloaded when the command exited"


def test_load_json_verifier_rejection_exits_1(testobj: Path) -> None:
    proc = lwt_agent("load", str(testobj / "out_write.o"), "--section", "lwt_write",
                     "--hook", "out", "--json")
    assert proc.returncode == 1
    result = json.loads(proc.stdout)
    assert set(result) == LOAD_KEYS and not result["ok"] and result["prog_id"] is None
    assert result["error"]["kind"] == "VerifierError"
    assert "bpf_skb_store_bytes" in result["error"]["verifier_log"]
    proc = lwt_agent("load", str(testobj / "out_write.o"), "--section", "lwt_write",
                     "--hook", "out")
    assert proc.returncode == 1 and "verifier log:" in proc.stderr


def test_load_unsupported_and_bad_usage_exit_2(testobj: Path) -> None:
    proc = lwt_agent("load", str(testobj / "kfunc.o"), "--section", "lwt_in_kfunc",
                     "--hook", "in", "--json")
    assert proc.returncode == 2
    result = json.loads(proc.stdout)
    assert result["error"]["kind"] == "UnsupportedFeatureError"
    assert result["error"]["verifier_log"] is None
    proc = lwt_agent("load", str(testobj / "kfunc.o"), "--section", "lwt_in_kfunc",
                     "--hook", "sideways")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_load_with_pin_dir_keeps_the_program(testobj: Path, pin_dir: Path) -> None:
    proc = lwt_agent("load", str(testobj / "subprogs.o"), "--section", "lwt_out_sub",
                     "--hook", "out", "--pin-dir", str(pin_dir))
    assert proc.returncode == 0, proc.stderr
    assert f"pinned at {pin_dir / 'prog_b'}" in proc.stdout
    fd = syscall.obj_get(str(pin_dir / "prog_b"))
    try:
        assert syscall.prog_info(fd).name == "prog_b"
    finally:
        os.close(fd)


def test_help_explains_the_verbs() -> None:
    proc = lwt_agent("load", "--help")
    assert proc.returncode == 0
    for words in ("--pin-dir", "unloaded", "Exit 0 loaded, 1 rejected"):
        assert words in " ".join(proc.stdout.split())
    proc = lwt_agent("inspect", "--help")
    assert proc.returncode == 0 and "unsupported features" in " ".join(proc.stdout.split())
