"""Map definitions (MapSpec), open maps (BpfMap), and creating maps with pin-by-name.

A MapSpec comes from a legacy `maps` section (struct bpf_map_def), from BTF-defined `.maps`,
or from a global-data section (.data/.rodata/.bss/.rodata.*: a one-entry array holding the
section's bytes). Creating a map honours pinning: a map pinned under the pin directory is
reused when it matches the definition and refused (PinConflictError) when it does not.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from . import pins, syscall
from .errors import KernelError, PinConflictError

BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
BPF_F_RDONLY_PROG = 1 << 7

PIN_NONE = 0
PIN_BY_NAME = 1  # LIBBPF_PIN_BY_NAME

MAP_TYPE_NAMES = {
    0: "unspec", 1: "hash", 2: "array", 3: "prog_array", 4: "perf_event_array",
    5: "percpu_hash", 6: "percpu_array", 7: "stack_trace", 8: "cgroup_array",
    9: "lru_hash", 10: "lru_percpu_hash", 11: "lpm_trie", 12: "array_of_maps",
    13: "hash_of_maps", 14: "devmap", 15: "sockmap", 16: "cpumap", 17: "xskmap",
    18: "sockhash", 19: "cgroup_storage", 20: "reuseport_sockarray",
    21: "percpu_cgroup_storage", 22: "queue", 23: "stack", 24: "sk_storage",
    25: "devmap_hash", 26: "struct_ops", 27: "ringbuf", 28: "inode_storage",
    29: "task_storage", 30: "bloom_filter", 31: "user_ringbuf", 32: "cgrp_storage",
    33: "arena",
}
MAP_IN_MAP_TYPES = {12, 13}
PERCPU_TYPES = {5, 6, 10, 21}

_NAME_BAD_CHARS = re.compile(r"[^A-Za-z0-9_.]")


def kernel_name(name: str) -> str:
    """A name the kernel accepts for a map or program: at most 15 chars of [A-Za-z0-9_.]."""
    return _NAME_BAD_CHARS.sub("_", name)[: syscall.BPF_OBJ_NAME_LEN - 1]


def map_type_name(map_type: int) -> str:
    return MAP_TYPE_NAMES.get(map_type, f"type{map_type}")


@dataclass
class MapSpec:
    """What the object asks for; `kind` is "btf", "legacy" or "data"."""

    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int = 0
    pinning: int = PIN_NONE
    kind: str = "btf"
    section: str = ".maps"
    offset: int = 0  # of the map's symbol in its section (data: 0)
    initial: bytes | None = None  # global data contents (None: leave zeroed)
    freeze: bool = False  # .rodata: frozen after initialisation
    unsupported: list[str] = field(default_factory=list)  # feature names found

    @property
    def type_name(self) -> str:
        return map_type_name(self.type)

    @property
    def kernel_name(self) -> str:
        return kernel_name(self.name)

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "type": self.type_name,
            "key_size": self.key_size,
            "value_size": self.value_size,
            "max_entries": self.max_entries,
            "flags": self.flags,
            "pinning": "by_name" if self.pinning == PIN_BY_NAME else "none",
            "kind": self.kind,
            "section": self.section,
        }

    def differences(self, info: syscall.MapInfo) -> list[str]:
        """How an existing (pinned) map differs from this definition; empty if compatible."""
        diffs = []
        for what, want, have in (
            ("type", self.type_name, map_type_name(info.type)),
            ("key_size", self.key_size, info.key_size),
            ("value_size", self.value_size, info.value_size),
            ("max_entries", self.max_entries, info.max_entries),
            ("map_flags", hex(self.flags), hex(info.flags)),
        ):
            if want != have:
                diffs.append(f"{what}: object wants {want}, pinned map has {have}")
        return diffs


class BpfMap:
    """An open BPF map (owns its fd until close())."""

    def __init__(self, fd: int, name: str | None = None) -> None:
        self.fd = fd
        info = syscall.map_info(fd)
        self.id = info.id
        self.name = name if name is not None else info.name
        self.type = info.type
        self.key_size = info.key_size
        self.value_size = info.value_size
        self.max_entries = info.max_entries
        self.flags = info.flags

    @classmethod
    def from_pin(cls, path: str | os.PathLike[str]) -> BpfMap:
        fd = syscall.obj_get(os.fspath(path))
        try:
            return cls(fd)
        except BaseException:
            os.close(fd)
            raise

    @property
    def type_name(self) -> str:
        return map_type_name(self.type)

    @property
    def is_percpu(self) -> bool:
        return self.type in PERCPU_TYPES

    def _check_key(self, key: bytes) -> None:
        if len(key) != self.key_size:
            raise ValueError(f"map {self.name}: key is {len(key)} bytes, "
                             f"the map's key_size is {self.key_size}")

    def lookup(self, key: bytes) -> bytes | None:
        """The value for `key`, or None. Per-CPU maps hold one value per CPU: use
        lookup_percpu() for them."""
        self._check_key(key)
        if self.is_percpu:
            raise ValueError(f"map {self.name} is per-CPU ({self.type_name}): use "
                             "lookup_percpu() to read one value per possible CPU")
        return syscall.map_lookup_elem(self.fd, key, self.value_size)

    def lookup_percpu(self, key: bytes) -> list[bytes] | None:
        """One value per possible CPU (per-CPU maps), or None when the key is absent."""
        self._check_key(key)
        if not self.is_percpu:
            raise ValueError(f"map {self.name} ({self.type_name}) is not a per-CPU map")
        stride = _percpu_stride(self.value_size)
        cpus = syscall.possible_cpus()
        raw = syscall.map_lookup_elem(self.fd, key, stride * cpus)
        if raw is None:
            return None
        return [raw[i * stride: i * stride + self.value_size] for i in range(cpus)]

    def update(self, key: bytes, value: bytes, flags: int = syscall.BPF_ANY) -> None:
        """Set `key` to `value`. For per-CPU maps a single value is written to every CPU
        (or pass every CPU's value, each padded to 8 bytes, concatenated)."""
        self._check_key(key)
        if self.is_percpu and len(value) == self.value_size:
            stride = _percpu_stride(self.value_size)
            value = value.ljust(stride, b"\0") * syscall.possible_cpus()
        elif self.is_percpu:
            expected = _percpu_stride(self.value_size) * syscall.possible_cpus()
            if len(value) != expected:
                raise ValueError(f"map {self.name}: per-CPU value is {len(value)} bytes; pass "
                                 f"{self.value_size} (one value) or {expected} (every CPU)")
        elif len(value) != self.value_size:
            raise ValueError(f"map {self.name}: value is {len(value)} bytes, "
                             f"the map's value_size is {self.value_size}")
        syscall.map_update_elem(self.fd, key, value, flags)

    def delete(self, key: bytes) -> bool:
        self._check_key(key)
        return syscall.map_delete_elem(self.fd, key)

    def keys(self) -> Iterator[bytes]:
        key: bytes | None = None
        while True:
            key = syscall.map_get_next_key(self.fd, key, self.key_size)
            if key is None:
                return
            yield key

    def pin(self, path: str | os.PathLike[str]) -> None:
        syscall.obj_pin(self.fd, os.fspath(path))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> BpfMap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"BpfMap(name={self.name!r}, id={self.id}, type={self.type_name}, "
                f"key_size={self.key_size}, value_size={self.value_size}, "
                f"max_entries={self.max_entries})")


def _percpu_stride(value_size: int) -> int:
    return (value_size + 7) & ~7


@dataclass
class CreatedMap:
    map: BpfMap
    new_pin: str | None  # a pin this load created (removed again if the load fails)


def create_map(spec: MapSpec, pin_dir: str | None) -> CreatedMap:
    """Create (or, when pinned by name, reuse) the map for `spec`.

    With a pin directory, maps that declare pinning by name reuse a compatible pin there
    (PinConflictError if it differs); every other map gets a fresh pin, and an existing
    file under its name is refused rather than shared by accident.
    """
    path = pins.pin_path(pin_dir, spec.name) if pin_dir else None
    if path and os.path.lexists(path):
        if spec.pinning != PIN_BY_NAME:
            raise PinConflictError(path, [
                f"a pin named {spec.name!r} already exists and map {spec.name!r} does not "
                "declare pinning by name, so it must not be shared"])
        try:
            existing = BpfMap.from_pin(path)
        except KernelError as exc:
            raise PinConflictError(path, [f"cannot open it as a map: {exc}"]) from None
        diffs = spec.differences(syscall.map_info(existing.fd))
        if diffs:
            existing.close()
            raise PinConflictError(path, diffs)
        existing.name = spec.name
        return CreatedMap(existing, None)

    fd = syscall.map_create(spec.type, spec.key_size, spec.value_size, spec.max_entries,
                            spec.flags, spec.kernel_name)
    new_pin = None
    try:
        bpf_map = BpfMap(fd, spec.name)
        if spec.initial is not None and any(spec.initial):
            syscall.map_update_elem(fd, b"\0\0\0\0", spec.initial)
        if spec.freeze:
            syscall.map_freeze(fd)
        if path:
            syscall.obj_pin(fd, path)
            new_pin = path
    except BaseException:
        os.close(fd)
        raise
    return CreatedMap(bpf_map, new_pin)
