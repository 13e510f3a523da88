"""The agent's pin root: on a bpffs, created, and the default one mounted when missing.

Pins only exist on a bpffs, and only the host's bpffs outlives the agent (what lets a
restarted agent adopt its programs). A host without bpffs at /sys/fs/bpf is common outside
Kubernetes (systemd mounts it, a minimal VM or container may not): iproute2, bpftool and
cilium-agent mount it there themselves, and so does the agent, for the *default* pin root
only. An explicit --pin-dir that is not on a bpffs stays an error: mounting over a directory
the user named could hide what is in it.
"""
from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path

from lwt_agent.bpf.bpffs import fs_magic, fs_name, is_bpffs

from .errors import StartupError

log = logging.getLogger(__name__)


def prepare_pin_root(root: Path, automount: Path | None = None) -> None:
    """Make ``root`` a usable pin directory. ``automount``: the bpffs mount point to mount
    when ``root`` is not on a bpffs (the default pin root's parent); None: refuse instead."""
    probe = _existing_ancestor(root)
    if not is_bpffs(probe):
        if automount is None or (probe != automount and automount not in probe.parents
                                 and probe not in automount.parents):
            raise StartupError(
                f"pin directory {root} is not on a bpffs (it is on {fs_name(fs_magic(probe))}): "
                "give --pin-dir on a mounted bpffs, or mount one with `mount -t bpf bpf DIR`")
        mount_bpffs(automount)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"cannot create pin directory {root}: {exc.strerror}") from exc


def mount_bpffs(where: Path) -> None:
    """mount -t bpf bpf WHERE (mode 0700, as iproute2 and cilium mount it); logged."""
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"no bpffs at {where}, and cannot create it to mount one: "
                           f"{exc.strerror}; mount it (mount -t bpf bpf {where}) or give "
                           "--pin-dir on a mounted bpffs") from exc
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"bpf", os.fsencode(where), b"bpf", 0, b"mode=0700") != 0:
        err = ctypes.get_errno()
        raise StartupError(f"no bpffs at {where}, and mounting one failed: "
                           f"{os.strerror(err)} (needs CAP_SYS_ADMIN); mount it (mount -t bpf "
                           f"bpf {where}) or give --pin-dir on a mounted bpffs")
    log.warning("no bpffs was mounted at %s: mounted one there (as iproute2, bpftool and "
                "cilium do); pins live on it until the host reboots", where)


def _existing_ancestor(path: Path) -> Path:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe
