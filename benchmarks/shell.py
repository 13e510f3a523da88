"""Running commands, in the benchmark's namespaces or outside them.

Every long-running process the benchmark starts is registered here so one `stop_all()` in a
`finally` ends exactly those processes (by pid, never by name).
"""
from __future__ import annotations

import ctypes
import shutil
import signal
import subprocess
from collections.abc import Sequence

from benchmarks.errors import CommandError, ToolMissingError

_started: list[subprocess.Popen[bytes]] = []


def require_tools(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        packages = " ".join(sorted({_DEBIAN_PACKAGE.get(n, n) for n in missing}))
        raise ToolMissingError(
            f"missing tools: {', '.join(missing)}; install them with "
            f"`apt-get install -y {packages}`"
            " (scripts/bootstrap.sh lists the benchmark's Debian packages)"
        )


# Debian package that ships a tool, where the names differ.
_DEBIAN_PACKAGE = {"ip": "iproute2", "tc": "iproute2", "nft": "nftables"}


def run(
    argv: Sequence[str],
    *,
    netns: str | None = None,
    check: bool = True,
    input_text: str | None = None,
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """Runs a command to completion (inside `netns` if given) and returns its output."""
    full = _in_netns(argv, netns)
    proc = subprocess.run(
        full, input=input_text, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise CommandError(full, proc.returncode, proc.stderr)
    return proc


def start(argv: Sequence[str], *, netns: str | None = None) -> subprocess.Popen[bytes]:
    """Starts a background process (a traffic server); `stop_all()` ends it."""
    proc = subprocess.Popen(
        _in_netns(argv, netns),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # Ctrl-C reaches us, not the servers: we end them in order
        preexec_fn=die_with_parent,
    )
    _started.append(proc)
    return proc


PR_SET_PDEATHSIG = 1
# Resolved now, in the parent: a forked child of a threaded process (the operator runs in a
# thread) must not dlopen or take locks before exec.
_prctl = ctypes.CDLL(None, use_errno=True).prctl


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL when the benchmark dies, even by SIGKILL. Without
    it a killed run's servers would live on in namespaces nobody can name any more (their
    names were mounts of the run's private mount namespace)."""
    _prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


def stop(proc: subprocess.Popen[bytes], grace: float = 5) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds (an agent detaching 10,000 routes needs
    more than a traffic tool)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    if proc in _started:
        _started.remove(proc)


def stop_all() -> None:
    for proc in list(_started):
        stop(proc)


def _in_netns(argv: Sequence[str], netns: str | None) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
