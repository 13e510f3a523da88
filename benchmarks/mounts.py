"""A private mount namespace for the whole benchmark process, and a bpffs inside it.

The tc comparison program is pinned in a bpffs so tc can attach it without loading it again,
and iproute2's `encap bpf obj` may mount a bpffs of its own. Inside a private mount namespace
none of these mounts reaches the host (or shadows its /sys/fs/bpf), and they all vanish with
the process, whatever way it ends.
"""
from __future__ import annotations

import ctypes
import os
import tempfile
from pathlib import Path

from benchmarks import shell
from benchmarks.errors import BenchError

CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

_entered = False


def enter_private_mount_namespace() -> None:
    global _entered
    if _entered:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        raise BenchError(f"unshare(CLONE_NEWNS): {os.strerror(err)}; run the benchmark as root")
    if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        err = ctypes.get_errno()
        raise BenchError(f"mount --make-rprivate /: {os.strerror(err)}")
    _entered = True


def mount_bpffs() -> Path:
    """Mounts a bpffs on a new temp dir (inside the private mount namespace)."""
    enter_private_mount_namespace()
    path = Path(tempfile.mkdtemp(prefix="lwtX-bench-bpffs-"))
    shell.run(["mount", "-t", "bpf", "bpf", str(path)])
    return path


def unmount_bpffs(path: Path) -> None:
    shell.run(["umount", "-l", str(path)], check=False)
    path.rmdir()
