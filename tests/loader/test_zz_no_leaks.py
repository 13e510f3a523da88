"""Runs last in this directory: nothing the loader tests made is left behind."""
from __future__ import annotations

import subprocess
import time

import pytest

from .conftest import (
    HOST_BPF_MOUNTS_AT_START,
    NETNS_PREFIX,
    bpftool_programs,
    host_bpf_mounts,
)

pytestmark = pytest.mark.kernel

# kernel names of the programs in bpf/testobj (built-ins are shared with other tests)
TESTOBJ_PROGRAMS = {"count_out", "prog_a", "prog_b", "global_xmit", "twin_in", "write_pkt",
                    "a_program_with_", "core_out", "mim_in", "ksym_in", "kfunc_in"}


def test_no_netns_programs_or_host_mounts_left() -> None:
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [line for line in netns.splitlines() if line.startswith(NETNS_PREFIX)]
    # routes of a deleted netns (holding iproute2's programs) are freed asynchronously
    deadline = time.monotonic() + 30
    while True:
        left = [p for p in bpftool_programs() if p.get("name") in TESTOBJ_PROGRAMS]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not left
    assert host_bpf_mounts() == HOST_BPF_MOUNTS_AT_START
