"""Programs and maps pinned under a bpffs directory, found by their kernel ids.

Opening a program or map by id (BPF_*_GET_FD_BY_ID) needs CAP_SYS_ADMIN, which the agent's
container does not have; opening a pin (BPF_OBJ_GET) needs only access to the file. The
agent pins every program it attaches and its maps, so tools running beside it (`lwt-agent
status` inside the agent pod) find them here first and fall back to ids only as root.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

from . import syscall
from .errors import KernelError


def _fd_kind(fd: int) -> str | None:
    """"prog" or "map", from the fd's /proc fdinfo (the info struct differs per kind)."""
    try:
        text = Path(f"/proc/self/fdinfo/{fd}").read_text()
    except OSError:
        return None
    if "\nprog_type:" in text:
        return "prog"
    if "\nmap_type:" in text:
        return "map"
    return None


class PinIndex:
    """Every program and map pinned below ``root``, keyed by kernel id (owns the fds)."""

    def __init__(self, root: str | os.PathLike[str] | None) -> None:
        self.programs: dict[int, int] = {}
        self.maps: dict[int, int] = {}
        if root is not None and os.path.isdir(root):
            for path in _files(Path(root)):
                self._add(path)

    def _add(self, path: Path) -> None:
        try:
            fd = syscall.obj_get(str(path))
        except KernelError:
            return  # not a pin, or not ours to open: the id fallback may still work
        kind = _fd_kind(fd)
        try:
            if kind == "prog":
                self.programs.setdefault(syscall.prog_info(fd).id, fd)
                return
            if kind == "map":
                self.maps.setdefault(syscall.map_info(fd).id, fd)
                return
        except KernelError:
            pass
        os.close(fd)

    def open_program(self, prog_id: int) -> int:
        """A new fd for program ``prog_id``: from a pin, else by id (needs CAP_SYS_ADMIN)."""
        if prog_id in self.programs:
            return os.dup(self.programs[prog_id])
        return syscall.prog_get_fd_by_id(prog_id)

    def open_map(self, map_id: int) -> int:
        """A new fd for map ``map_id``: from a pin, else by id (needs CAP_SYS_ADMIN)."""
        if map_id in self.maps:
            return os.dup(self.maps[map_id])
        return syscall.map_get_fd_by_id(map_id)

    def close(self) -> None:
        for fd in [*self.programs.values(), *self.maps.values()]:
            with suppress(OSError):
                os.close(fd)
        self.programs.clear()
        self.maps.clear()

    def __enter__(self) -> PinIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _files(root: Path) -> Iterator[Path]:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            yield Path(dirpath) / name
