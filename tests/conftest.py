"""Suite-wide fixtures.

The whole test process moves into a private mount namespace before any test runs, so every
bpffs the tests mount (and any iproute2 mounts on its own) vanishes with the process and
never shadows the host's /sys/fs/bpf.
"""
from __future__ import annotations

import ctypes
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

# The real Kubernetes control plane (session fixture `control_plane`).
pytest_plugins = ["tests.k8s.fixtures"]

REPO = Path(__file__).resolve().parent.parent
BPF_BUILD = REPO / "bpf" / "build"
ORIGINAL_MNT_NS = pytest.StashKey[str]()


def _enter_private_mount_namespace() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNS): {os.strerror(err)}; run the tests as root")
    if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount --make-rprivate /: {os.strerror(err)}")


def pytest_configure(config: pytest.Config) -> None:
    if os.geteuid() != 0:
        raise pytest.UsageError("the test suite needs root (CAP_BPF, CAP_NET_ADMIN, netns)")
    config.stash[ORIGINAL_MNT_NS] = os.readlink("/proc/self/ns/mnt")
    _enter_private_mount_namespace()


@pytest.fixture(scope="session")
def bpffs() -> Iterator[Path]:
    """A bpffs mounted on a temp dir, private to this test process."""
    path = Path(tempfile.mkdtemp(prefix="lwt-test-bpffs-"))
    subprocess.run(["mount", "-t", "bpf", "bpf", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
        path.rmdir()


@pytest.fixture(scope="session")
def bpf_objects() -> Path:
    """Directory of the compiled built-in and test BPF objects (built by `make -C bpf`)."""
    if not BPF_BUILD.is_dir():
        raise RuntimeError(f"{BPF_BUILD} missing: run `make -C bpf` (scripts/bootstrap.sh does)")
    return BPF_BUILD
