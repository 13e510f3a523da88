"""Why a pin or a bpf(2) call got EPERM, found out rather than guessed.

bpf(2) answers EPERM for three unrelated reasons, and the fix differs for each:
- a pin name containing '.': bpffs reserves those names (kernel/bpf/inode.c refuses the
  lookup with EPERM), even for root;
- a pin path whose directory is not on a bpffs (BPF_OBJ_PIN refuses other filesystems with
  EPERM): told apart by statfs(2)'s f_type (BPF_FS_MAGIC);
- a missing capability: told apart by the effective set in /proc/self/status.
"""
from __future__ import annotations

import ctypes
import errno
import os

BPF_FS_MAGIC = 0xCAFE4A11
FS_NAMES = {
    BPF_FS_MAGIC: "bpf", 0x01021994: "tmpfs", 0xEF53: "ext2/3/4", 0x9123683E: "btrfs",
    0x58465342: "xfs", 0x794C7630: "overlayfs", 0x62656572: "sysfs", 0x9FA0: "proc",
    0x6969: "nfs", 0x65735546: "fuse",
}

CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39
CAP_NAMES = {CAP_NET_ADMIN: "CAP_NET_ADMIN", CAP_SYS_ADMIN: "CAP_SYS_ADMIN",
             CAP_PERFMON: "CAP_PERFMON", CAP_BPF: "CAP_BPF"}


class _Statfs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_byte * 112)]


def fs_magic(path: str | os.PathLike[str]) -> int | None:
    """statfs(2) f_type of the filesystem holding ``path``; None if it cannot be read."""
    buf = _Statfs()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.statfs(os.fsencode(path), ctypes.byref(buf)) != 0:
        return None
    return int(buf.f_type) & 0xFFFFFFFF


def fs_name(magic: int | None) -> str:
    if magic is None:
        return "unknown (statfs failed)"
    return FS_NAMES.get(magic, f"filesystem magic {magic:#x}")


def is_bpffs(path: str | os.PathLike[str]) -> bool:
    return fs_magic(path) == BPF_FS_MAGIC


def effective_capabilities(status_text: str | None = None) -> int:
    """The CapEff bit set of this process (from /proc/self/status, or the given text)."""
    if status_text is None:
        try:
            with open("/proc/self/status") as f:
                status_text = f.read()
        except OSError:
            return 0
    for line in status_text.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def missing_capabilities(caps: int | None = None) -> list[str]:
    """What bpf(2) needs for loading LWT programs and pinning, absent from ``caps``
    (CAP_SYS_ADMIN stands in for CAP_BPF, as the kernel accepts either)."""
    caps = effective_capabilities() if caps is None else caps
    missing = []
    if not caps & (1 << CAP_BPF | 1 << CAP_SYS_ADMIN):
        missing.append("CAP_BPF")
    if not caps & (1 << CAP_NET_ADMIN | 1 << CAP_SYS_ADMIN):
        missing.append("CAP_NET_ADMIN")
    return missing


def pin_dir_problem(directory: str | os.PathLike[str]) -> str | None:
    """Why ``directory`` cannot hold pins (missing, or not on a bpffs), or None."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        return (f"pin directory {directory} does not exist: create it on a mounted bpffs "
                "(mount -t bpf bpf /sys/fs/bpf)")
    magic = fs_magic(directory)
    if magic != BPF_FS_MAGIC:
        return (f"pin directory {directory} is not on a bpffs (it is on {fs_name(magic)}); "
                "pins only exist on bpffs: use a directory under a bpffs mount such as "
                "/sys/fs/bpf, or mount one there with `mount -t bpf bpf DIR`")
    return None


def explain_eperm(operation: str, path: str | None = None) -> str:
    """The hint for an EPERM from bpf(2): the reserved name, the filesystem or the
    capability that actually caused it, and how to fix it."""
    if path is not None:
        name = os.path.basename(path)
        if "." in name:
            return (f"bpffs reserves names containing '.' ({name!r}) and refuses them even "
                    "for root; pin under a name of [A-Za-z0-9_] (lwt_agent.bpf.pins.pin_name "
                    "maps global-data maps like .bss to such names)")
        problem = pin_dir_problem(os.path.dirname(path) or ".")
        if problem is not None:
            return problem
    caps = effective_capabilities()
    if " id " in operation and not caps & (1 << CAP_SYS_ADMIN):
        return ("opening a program or map by id needs CAP_SYS_ADMIN, which this process "
                "lacks: open its pin instead (lwt-agent --pin-dir) or run as root")
    if operation.startswith(("map update", "map delete")):
        return ("the map is frozen or read-only for user space (a .rodata map is frozen "
                "after loading): write a .data/.bss map or a map without BPF_F_RDONLY")
    missing = missing_capabilities(caps)
    if missing:
        return (f"{operation} needs {' and '.join(missing)}, which this process lacks "
                f"(effective capabilities {caps:#x}); run as root or "
                "grant them (the agent's DaemonSet adds CAP_BPF, CAP_NET_ADMIN)")
    return ("the process has CAP_BPF and CAP_NET_ADMIN, so a capability is not the cause: "
            "look for a security module (SELinux/AppArmor/lockdown, see dmesg) or, for "
            "program loads, a helper that needs CAP_PERFMON")


def hint(err: int, operation: str, path: str | None = None) -> str:
    if err == errno.EPERM:
        return explain_eperm(operation, path)
    if path is not None and err == errno.ENOENT:
        return pin_dir_problem(os.path.dirname(path) or ".") or ""
    return ""
