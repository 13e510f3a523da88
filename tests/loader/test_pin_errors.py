"""Issue 10 defect 2: an EPERM from bpf(2) says which of its causes it was and how to fix it,
instead of always blaming capabilities (the previous message, even for root, was "run as
root with CAP_BPF, CAP_NET_ADMIN"). Three causes, each produced for real: a pin name with
'.', a pin directory that is not a bpffs, a process without CAP_BPF (setpriv drops it from
the bounding set of a child)."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
from lwt_agent.bpf import KernelError, syscall
from lwt_agent.bpf.bpffs import effective_capabilities, missing_capabilities
from lwt_agent.bpf.maps import BPF_MAP_TYPE_ARRAY

from tests.conftest import REPO

pytestmark = pytest.mark.kernel


def _load_cli(testobj: Path, *args: str, prefix: tuple[str, ...] = ()) -> tuple[int, str]:
    proc = subprocess.run(
        [*prefix, sys.executable, "-m", "lwt_agent.cli", "load",
         str(testobj / "tenant_globals.o"), "--section", "lwt_out_globals", "--hook", "out",
         *args], cwd=REPO, capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stderr


def test_pin_dir_not_on_bpffs_says_so(testobj: Path, tmp_path: Path) -> None:
    code, stderr = _load_cli(testobj, "--pin-dir", str(tmp_path))
    assert code == 2, stderr
    assert f"pin directory {tmp_path} is not on a bpffs" in stderr
    assert "mount -t bpf bpf" in stderr and "CAP_" not in stderr
    assert list(tmp_path.iterdir()) == []


def test_reserved_pin_name_says_so(pin_dir: Path) -> None:
    fd = syscall.map_create(BPF_MAP_TYPE_ARRAY, 4, 8, 1, 0, "reserved")
    try:
        with pytest.raises(KernelError) as failed:
            syscall.obj_pin(fd, str(pin_dir / "tenant.bss"))
    finally:
        os.close(fd)
    assert failed.value.errno == errno.EPERM
    message = str(failed.value)
    assert "bpffs reserves names containing '.'" in message and "CAP_" not in message


def test_missing_capability_says_which(testobj: Path, pin_dir: Path) -> None:
    code, stderr = _load_cli(testobj, "--pin-dir", str(pin_dir),
                             prefix=("setpriv", "--bounding-set", "-bpf,-sys_admin", "--"))
    assert code == 1, stderr
    assert "needs CAP_BPF, which this process lacks" in stderr
    assert list(pin_dir.iterdir()) == []


def test_with_every_capability_eperm_does_not_blame_capabilities() -> None:
    assert missing_capabilities(effective_capabilities()) == []  # the suite runs as root
    everything = "CapEff:\t000001ffffffffff\n"
    assert missing_capabilities(effective_capabilities(everything)) == []
    no_bpf = f"CapEff:\t{(1 << 41) - 1 & ~(1 << 39) & ~(1 << 21):016x}\n"
    assert missing_capabilities(effective_capabilities(no_bpf)) == ["CAP_BPF"]
