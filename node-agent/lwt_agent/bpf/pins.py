"""Programs and maps pinned under a bpffs directory, found by their kernel ids.

Opening a program or map by id (BPF_*_GET_FD_BY_ID) needs CAP_SYS_ADMIN, which the agent's
container does not have; opening a pin (BPF_OBJ_GET) needs only access to the file. The
agent pins every program it attaches and its maps, so tools running beside it (`lwt-agent
status` inside the agent pod) find them here first and fall back to ids only as root.

It also owns the one pin-naming scheme (``pin_name``/``map_name``/``pin_path``): bpffs refuses
names containing '.' (EPERM, even for root), and global-data maps are named after their
section (``.bss``, ``<obj>.rodata``, ``.rodata.cfg``). A pin name is therefore
- a map name that is a C identifier ([A-Za-z_][A-Za-z0-9_]*), unchanged (``cnt_stats``);
- for a global-data map, ``0`` followed by its section without the leading dot, '_' written
  '__' and '.' written '_d' (``.bss`` -> ``0bss``, ``.rodata.cfg`` -> ``0rodata_dcfg``). A
  C identifier never starts with a digit, so the two kinds never collide and ``map_name``
  gives the map's canonical name back (the section: ``.bss``; the object prefix libbpf puts
  in front, ``<obj>.bss``, depends on the file name and is not part of it).
Anything else (names with '/', '..', other characters, or a '.' outside a global-data
section name) is refused with a PinNameError, and every pin path is checked to be a direct
child of the directory it is pinned in.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

from . import syscall
from .errors import KernelError, PinNameError

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PIN = re.compile(r"[A-Za-z0-9_]+")
_SECTION_BODY = re.compile(r"[A-Za-z0-9_.]+")
DATA_PIN_MARK = "0"
GLOBAL_DATA_SECTIONS = (".data", ".rodata", ".bss")
MAX_PIN_NAME = 128  # NAME_MAX is 255; nothing legitimate comes close


def is_data_section(name: str) -> bool:
    """.data, .rodata, .bss and custom .data.* / .rodata.* sections (global data)."""
    return name in GLOBAL_DATA_SECTIONS or name.startswith((".data.", ".rodata."))


def pin_name(name: str) -> str:
    """The bpffs-safe pin name of map ``name`` (see the module docstring)."""
    if "." not in name:
        if not _IDENT.fullmatch(name) or len(name) > MAX_PIN_NAME:
            raise PinNameError(
                f"map name {name[:64]!r} cannot be pinned: map names must be C identifiers "
                f"([A-Za-z_][A-Za-z0-9_]*, at most {MAX_PIN_NAME} characters)")
        return name
    prefix, dot, rest = name.partition(".")
    section = dot + rest
    if (not is_data_section(section) or not _SECTION_BODY.fullmatch(rest)
            or (prefix and not _PIN.fullmatch(prefix))):
        raise PinNameError(
            f"map name {name[:64]!r} cannot be pinned: only global-data maps (.data, "
            ".rodata, .bss, .data.*, .rodata.*) may contain '.', and only [A-Za-z0-9_.]")
    pin = DATA_PIN_MARK + rest.replace("_", "__").replace(".", "_d")
    if len(pin) > MAX_PIN_NAME:
        raise PinNameError(f"global-data section {section[:64]!r} is too long to pin")
    return pin


def map_name(pin: str) -> str | None:
    """The canonical map name a pin name stands for (the inverse of ``pin_name``, with a
    global-data map's object prefix dropped), or None when ``pin`` is not such a name."""
    if _IDENT.fullmatch(pin):
        return pin
    if not pin.startswith(DATA_PIN_MARK) or not _PIN.fullmatch(pin):
        return None
    out, i, body = [], 0, pin[len(DATA_PIN_MARK):]
    while i < len(body):
        if body[i] != "_":
            out.append(body[i])
            i += 1
            continue
        nxt = body[i + 1:i + 2]
        if nxt not in ("_", "d"):
            return None
        out.append("_" if nxt == "_" else ".")
        i += 2
    section = "." + "".join(out)
    return section if is_data_section(section) else None


def canonical_map_name(name: str) -> str:
    """The name a map is known by in the agent whether it was loaded or adopted from its
    pin: ``cnt_stats`` stays, ``heldout.bss`` becomes ``.bss``."""
    canonical = map_name(pin_name(name))
    assert canonical is not None
    return canonical


def program_pin_name(kernel_name: str) -> str:
    """The pin name of a program: its kernel name, which must be a C identifier."""
    if not _IDENT.fullmatch(kernel_name):
        raise PinNameError(f"program name {kernel_name!r} cannot be pinned: program names "
                           "must be C identifiers ([A-Za-z_][A-Za-z0-9_]*)")
    return kernel_name


def child_path(directory: str | os.PathLike[str], name: str) -> str:
    """``directory/name``, refused unless it is a direct child of ``directory`` once both
    are resolved (no '/', '..', absolute names or symlinks out)."""
    base = os.path.realpath(directory)
    path = os.path.join(base, name)
    if not _PIN.fullmatch(name) or os.path.dirname(os.path.realpath(path)) != base:
        raise PinNameError(f"pin {name[:64]!r} would not stay inside {base}")
    return path


def pin_path(directory: str | os.PathLike[str], map_spec_name: str) -> str:
    """Where map ``map_spec_name`` is pinned under ``directory``."""
    return child_path(directory, pin_name(map_spec_name))


def check_segments(*parts: str) -> None:
    """Refuse any part that is not exactly one path component (a namespace, policy name,
    hook or digest becoming a directory): '/', '.', '..', empty or NUL would let the
    directory land elsewhere, even inside the pin root."""
    for part in parts:
        if not part or part in (".", "..") or "/" in part or "\0" in part:
            raise PinNameError(f"{part[:64]!r} cannot name a pin directory (it must be one "
                               "path component)")


def check_under(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Refuse ``path`` unless it resolves to ``root`` or below (a policy's pin directory
    under the agent's pin root)."""
    base = os.path.realpath(root)
    resolved = os.path.realpath(path)
    if resolved != base and not resolved.startswith(base + os.sep):
        raise PinNameError(f"pin directory {os.fspath(path)} resolves to {resolved}, outside "
                           f"the pin root {base}")


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
