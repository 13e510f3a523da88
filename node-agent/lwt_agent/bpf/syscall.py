"""The bpf(2) system call through ctypes: the ONLY module of the project that calls it.

Each function fills the part of `union bpf_attr` its command reads (uapi/linux/bpf.h), makes
the call and returns a plain Python value, or raises `KernelError` carrying errno. File
descriptors returned here belong to the caller, who must close them (os.close).
"""
from __future__ import annotations

import ctypes
import errno
import os
import platform
from dataclasses import dataclass

from . import bpffs
from .errors import KernelError, VerifierError

_SYSCALL_NR = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "ppc64le": 361, "s390x": 351}

# bpf(2) commands (enum bpf_cmd)
BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_PROG_LOAD = 5
BPF_OBJ_PIN = 6
BPF_OBJ_GET = 7
BPF_PROG_GET_FD_BY_ID = 13
BPF_MAP_GET_FD_BY_ID = 14
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_BTF_LOAD = 18
BPF_MAP_FREEZE = 22
BPF_PROG_TEST_RUN = 10

# map update flags
BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2

BPF_OBJ_NAME_LEN = 16

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _MapCreateAttr(ctypes.Structure):
    _fields_ = [
        ("map_type", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("inner_map_fd", ctypes.c_uint32),
        ("numa_node", ctypes.c_uint32),
        ("map_name", ctypes.c_char * BPF_OBJ_NAME_LEN),
        ("map_ifindex", ctypes.c_uint32),
        ("btf_fd", ctypes.c_uint32),
        ("btf_key_type_id", ctypes.c_uint32),
        ("btf_value_type_id", ctypes.c_uint32),
        ("btf_vmlinux_value_type_id", ctypes.c_uint32),
        ("map_extra", ctypes.c_uint64),
    ]


class _MapElemAttr(ctypes.Structure):
    _fields_ = [
        ("map_fd", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("key", ctypes.c_uint64),
        ("value", ctypes.c_uint64),  # next_key for BPF_MAP_GET_NEXT_KEY
        ("flags", ctypes.c_uint64),
    ]


class _ProgLoadAttr(ctypes.Structure):
    _fields_ = [
        ("prog_type", ctypes.c_uint32),
        ("insn_cnt", ctypes.c_uint32),
        ("insns", ctypes.c_uint64),
        ("license", ctypes.c_uint64),
        ("log_level", ctypes.c_uint32),
        ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_uint64),
        ("kern_version", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_name", ctypes.c_char * BPF_OBJ_NAME_LEN),
        ("prog_ifindex", ctypes.c_uint32),
        ("expected_attach_type", ctypes.c_uint32),
        ("prog_btf_fd", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32),
        ("func_info", ctypes.c_uint64),
        ("func_info_cnt", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32),
        ("line_info", ctypes.c_uint64),
        ("line_info_cnt", ctypes.c_uint32),
    ]


class _BtfLoadAttr(ctypes.Structure):
    _fields_ = [
        ("btf", ctypes.c_uint64),
        ("btf_log_buf", ctypes.c_uint64),
        ("btf_size", ctypes.c_uint32),
        ("btf_log_size", ctypes.c_uint32),
        ("btf_log_level", ctypes.c_uint32),
    ]


class _ObjAttr(ctypes.Structure):
    _fields_ = [
        ("pathname", ctypes.c_uint64),
        ("bpf_fd", ctypes.c_uint32),
        ("file_flags", ctypes.c_uint32),
    ]


class _GetIdAttr(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_uint32),  # start_id / prog_id / map_id
        ("next_id", ctypes.c_uint32),
        ("open_flags", ctypes.c_uint32),
    ]


class _InfoAttr(ctypes.Structure):
    _fields_ = [
        ("bpf_fd", ctypes.c_uint32),
        ("info_len", ctypes.c_uint32),
        ("info", ctypes.c_uint64),
    ]


class _TestRunAttr(ctypes.Structure):
    _fields_ = [
        ("prog_fd", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("data_in", ctypes.c_uint64),
        ("data_out", ctypes.c_uint64),
        ("repeat", ctypes.c_uint32),
        ("duration", ctypes.c_uint32),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_uint64),
        ("ctx_out", ctypes.c_uint64),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


class _FdAttr(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_uint32)]


class _ProgInfo(ctypes.Structure):
    """The leading part of struct bpf_prog_info (the kernel fills what fits)."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32),
        ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64),
        ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64),
        ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * BPF_OBJ_NAME_LEN),
    ]


class _MapInfo(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * BPF_OBJ_NAME_LEN),
    ]


@dataclass(frozen=True)
class ProgInfo:
    type: int
    id: int
    tag: str  # 16 hex chars, as bpftool prints it
    name: str
    map_ids: tuple[int, ...]


@dataclass(frozen=True)
class MapInfo:
    type: int
    id: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    name: str


def _bpf(cmd: int, attr: ctypes.Structure, operation: str, hint: str = "",
         path: str | None = None) -> int:
    nr = _SYSCALL_NR.get(platform.machine())
    if nr is None:
        raise KernelError(38, operation, f"bpf(2) number unknown for {platform.machine()}")
    size = ctypes.c_uint(ctypes.sizeof(attr))
    ret = _libc.syscall(nr, ctypes.c_int(cmd), ctypes.byref(attr), size)
    if ret < 0:
        err = ctypes.get_errno()
        # bpffs.hint finds out which of the causes of an EPERM it was (reserved name,
        # not a bpffs, missing capability) instead of always blaming capabilities
        raise KernelError(err, operation, hint or bpffs.hint(err, operation, path))
    return int(ret)


def _ptr(buf: ctypes.Array | None) -> int:  # type: ignore[type-arg]
    return ctypes.addressof(buf) if buf is not None else 0


def _name_bytes(name: str) -> bytes:
    return name.encode()[: BPF_OBJ_NAME_LEN - 1]


def map_create(
    map_type: int,
    key_size: int,
    value_size: int,
    max_entries: int,
    flags: int = 0,
    name: str = "",
) -> int:
    attr = _MapCreateAttr(
        map_type=map_type,
        key_size=key_size,
        value_size=value_size,
        max_entries=max_entries,
        map_flags=flags,
        map_name=_name_bytes(name),
    )
    return _bpf(BPF_MAP_CREATE, attr, f"creating map {name!r}")


def map_lookup_elem(fd: int, key: bytes, value_size: int) -> bytes | None:
    """The value for `key`, or None when the key is absent (ENOENT)."""
    kbuf = ctypes.create_string_buffer(key, len(key) or 1)
    vbuf = ctypes.create_string_buffer(value_size or 1)
    attr = _MapElemAttr(map_fd=fd, key=_ptr(kbuf), value=_ptr(vbuf))
    try:
        _bpf(BPF_MAP_LOOKUP_ELEM, attr, "map lookup")
    except KernelError as exc:
        if exc.errno == 2:
            return None
        raise
    return vbuf.raw[:value_size]


def map_update_elem(fd: int, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
    kbuf = ctypes.create_string_buffer(key, len(key) or 1)
    vbuf = ctypes.create_string_buffer(value, len(value) or 1)
    attr = _MapElemAttr(map_fd=fd, key=_ptr(kbuf), value=_ptr(vbuf), flags=flags)
    _bpf(BPF_MAP_UPDATE_ELEM, attr, "map update")


def map_delete_elem(fd: int, key: bytes) -> bool:
    """Delete `key`; False when it was not there."""
    kbuf = ctypes.create_string_buffer(key, len(key) or 1)
    attr = _MapElemAttr(map_fd=fd, key=_ptr(kbuf))
    try:
        _bpf(BPF_MAP_DELETE_ELEM, attr, "map delete")
    except KernelError as exc:
        if exc.errno == 2:
            return False
        raise
    return True


def map_get_next_key(fd: int, key: bytes | None, key_size: int) -> bytes | None:
    """The key after `key` (the first key when `key` is None); None at the end."""
    kbuf = ctypes.create_string_buffer(key, len(key)) if key is not None else None
    nbuf = ctypes.create_string_buffer(key_size or 1)
    attr = _MapElemAttr(map_fd=fd, key=_ptr(kbuf), value=_ptr(nbuf))
    try:
        _bpf(BPF_MAP_GET_NEXT_KEY, attr, "map get next key")
    except KernelError as exc:
        if exc.errno == 2:
            return None
        raise
    return nbuf.raw[:key_size]


def map_freeze(fd: int) -> None:
    _bpf(BPF_MAP_FREEZE, _FdAttr(fd=fd), "freezing map")


@dataclass(frozen=True)
class BtfInfo:
    """BTF for a program load: the BTF object's fd and func_info / line_info records
    (instruction offsets already in instructions of the final program)."""

    btf_fd: int
    func_info: bytes
    func_info_rec_size: int
    line_info: bytes
    line_info_rec_size: int


def btf_load(data: bytes, log_size: int = 0) -> int:
    """Load BTF into the kernel; returns its fd. With log_size, a failure's KernelError
    message ends with the BTF verifier's last line."""
    buf = ctypes.create_string_buffer(data, len(data))
    log_buf = ctypes.create_string_buffer(log_size) if log_size else None
    attr = _BtfLoadAttr(btf=_ptr(buf), btf_size=len(data), btf_log_buf=_ptr(log_buf),
                        btf_log_size=log_size, btf_log_level=1 if log_size else 0)
    try:
        return _bpf(BPF_BTF_LOAD, attr, "loading BTF")
    except KernelError as exc:
        if log_buf is None:
            raise
        lines = [ln for ln in log_buf.value.decode(errors="replace").splitlines() if ln]
        raise KernelError(exc.errno or 22, "loading BTF", lines[-1] if lines else "") from None


def prog_load(
    prog_type: int,
    insns: bytes,
    license: str,
    name: str = "",
    log_level: int = 0,
    log_size: int = 0,
    expected_attach_type: int = 0,
    btf: BtfInfo | None = None,
) -> tuple[int, str]:
    """Load a program; returns (fd, verifier log).

    Raises VerifierError (with the log) when a log buffer was requested, else KernelError.
    The kernel's log is a rolling buffer: when it overflows (ENOSPC) it keeps the tail, which
    is where the verifier says why it stopped."""
    insn_buf = ctypes.create_string_buffer(insns, len(insns) or 1)
    lic_buf = ctypes.create_string_buffer(license.encode() + b"\0")
    log_buf = ctypes.create_string_buffer(log_size) if log_level and log_size else None
    attr = _ProgLoadAttr(
        prog_type=prog_type,
        insn_cnt=len(insns) // 8,
        insns=_ptr(insn_buf),
        license=_ptr(lic_buf),
        log_level=log_level if log_buf is not None else 0,
        log_size=log_size if log_buf is not None else 0,
        log_buf=_ptr(log_buf),
        prog_name=_name_bytes(name),
        expected_attach_type=expected_attach_type,
    )
    if btf is not None:
        func_buf = ctypes.create_string_buffer(btf.func_info, len(btf.func_info) or 1)
        line_buf = ctypes.create_string_buffer(btf.line_info, len(btf.line_info) or 1)
        attr.prog_btf_fd = btf.btf_fd
        if btf.func_info:
            attr.func_info_rec_size = btf.func_info_rec_size
            attr.func_info = _ptr(func_buf)
            attr.func_info_cnt = len(btf.func_info) // btf.func_info_rec_size
        if btf.line_info:
            attr.line_info_rec_size = btf.line_info_rec_size
            attr.line_info = _ptr(line_buf)
            attr.line_info_cnt = len(btf.line_info) // btf.line_info_rec_size
    try:
        fd = _bpf(BPF_PROG_LOAD, attr, f"loading program {name!r}")
    except KernelError as exc:
        if log_buf is None:
            raise
        log = log_buf.value.decode(errors="replace")
        truncated = exc.errno == errno.ENOSPC or len(log) >= log_size - 1
        raise VerifierError(exc.errno, name, log, truncated) from None
    log = log_buf.value.decode(errors="replace") if log_buf is not None else ""
    return fd, log


def prog_test_run(fd: int, packet: bytes) -> int:
    """Run program ``fd`` once on ``packet`` (BPF_PROG_TEST_RUN: an Ethernet frame; LWT
    programs see it from the network header); returns the program's return value."""
    data = ctypes.create_string_buffer(packet, len(packet))
    attr = _TestRunAttr(prog_fd=fd, data_size_in=len(packet), data_in=_ptr(data), repeat=1)
    _bpf(BPF_PROG_TEST_RUN, attr, "test-running program")
    return int(attr.retval)


def obj_pin(fd: int, path: str) -> None:
    buf = ctypes.create_string_buffer(os.fsencode(path))
    _bpf(BPF_OBJ_PIN, _ObjAttr(pathname=_ptr(buf), bpf_fd=fd), f"pinning to {path}",
         path=path)


def obj_get(path: str, flags: int = 0) -> int:
    """Open a pinned program or map; returns a new fd."""
    buf = ctypes.create_string_buffer(os.fsencode(path))
    return _bpf(BPF_OBJ_GET, _ObjAttr(pathname=_ptr(buf), file_flags=flags),
                f"opening pin {path}", path=path)


def prog_get_fd_by_id(prog_id: int) -> int:
    return _bpf(BPF_PROG_GET_FD_BY_ID, _GetIdAttr(id=prog_id), f"opening program id {prog_id}")


def map_get_fd_by_id(map_id: int) -> int:
    return _bpf(BPF_MAP_GET_FD_BY_ID, _GetIdAttr(id=map_id), f"opening map id {map_id}")


def prog_info(fd: int) -> ProgInfo:
    """id, type, tag, name and map ids of a loaded program."""
    info = _ProgInfo()
    _bpf(BPF_OBJ_GET_INFO_BY_FD,
         _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info)),
         "reading program info")
    map_ids: tuple[int, ...] = ()
    if info.nr_map_ids:
        count = info.nr_map_ids
        ids = (ctypes.c_uint32 * count)()
        info2 = _ProgInfo(nr_map_ids=count, map_ids=ctypes.addressof(ids))
        _bpf(BPF_OBJ_GET_INFO_BY_FD,
             _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info2), info=ctypes.addressof(info2)),
             "reading program map ids")
        map_ids = tuple(ids[: min(count, info2.nr_map_ids)])
    return ProgInfo(
        type=info.type,
        id=info.id,
        tag=bytes(info.tag).hex(),
        name=info.name.decode(errors="replace"),
        map_ids=map_ids,
    )


def map_info(fd: int) -> MapInfo:
    info = _MapInfo()
    _bpf(BPF_OBJ_GET_INFO_BY_FD,
         _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info)),
         "reading map info")
    return MapInfo(
        type=info.type,
        id=info.id,
        key_size=info.key_size,
        value_size=info.value_size,
        max_entries=info.max_entries,
        flags=info.map_flags,
        name=info.name.decode(errors="replace"),
    )


def possible_cpus() -> int:
    """Number of possible CPUs: per-CPU map values hold one slot per possible CPU."""
    with open("/sys/devices/system/cpu/possible") as f:
        text = f.read().strip()
    count = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        count += (int(hi) if hi else int(lo)) - int(lo) + 1
    return count
