"""The built-in program catalogue: the one place that names each built-in LWT program.

For every built-in it says which object file and ELF section hold the program, on which
hooks the kernel accepts it, which maps the agent expects (name, kernel map type, key and
value sizes: `program_config.check_map_layout` compares them with the maps the loader
created), the JSON schema of the policy's `config` for it, and what it does.

Pure Python: the operator imports this module, so nothing here touches the kernel.
The C sources are bpf/*.c; their struct layouts are repeated in `program_config`.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from . import schema

HOOKS = frozenset(schema.HOOKS)

# Where a packaged agent image keeps the compiled objects (Dockerfile installs them here).
INSTALLED_OBJECT_DIR = Path("/usr/lib/lwt-operator/bpf")
_REPO_BUILD_DIR = Path(__file__).resolve().parents[2] / "bpf" / "build"


def builtin_object_dir() -> Path:
    """Directory of the compiled built-ins: $LWT_BPF_DIR, else bpf/build of a source
    checkout, else the packaged location."""
    env = os.environ.get("LWT_BPF_DIR")
    if env:
        return Path(env)
    if _REPO_BUILD_DIR.is_dir():
        return _REPO_BUILD_DIR
    return INSTALLED_OBJECT_DIR


class MapRole(StrEnum):
    """What the agent does with a map."""

    CONFIG = "config"      # written from the policy's config (encode_config)
    COUNTERS = "counters"  # read for status and metrics
    SAMPLES = "samples"    # a ring buffer the agent consumes


# Kernel map type numbers (enum bpf_map_type in linux/bpf.h) the built-ins use.
MAP_TYPES: dict[str, int] = {
    "hash": 1,
    "array": 2,
    "percpu_hash": 5,
    "percpu_array": 6,
    "lpm_trie": 11,
    "ringbuf": 27,
}


@dataclass(frozen=True)
class MapSpec:
    """A map a built-in creates, as the agent expects the kernel to report it.

    key_size/value_size are those of BPF_OBJ_GET_INFO_BY_FD (a ring buffer has 0/0);
    per-CPU maps report the size of one CPU's value.
    """

    name: str
    type: str
    key_size: int
    value_size: int
    max_entries: int
    role: MapRole
    flags: int = 0  # map_flags, e.g. BPF_F_NO_PREALLOC
    pinned: bool = True
    description: str = ""

    @property
    def type_id(self) -> int:
        return MAP_TYPES[self.type]

    @property
    def per_cpu(self) -> bool:
        return self.type.startswith("percpu_")


@dataclass(frozen=True)
class BuiltinProgram:
    name: str
    object: str
    section: str
    hooks: frozenset[str]
    maps: tuple[MapSpec, ...]
    config_schema: Mapping[str, Any]
    description: str
    # The C function name: the kernel's program name (truncated to 15 chars by the loader).
    function: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    def map(self, name: str) -> MapSpec:
        for spec in self.maps:
            if spec.name == name:
                return spec
        raise KeyError(f"built-in {self.name!r} has no map {name!r}")

    def maps_with_role(self, role: MapRole) -> tuple[MapSpec, ...]:
        return tuple(m for m in self.maps if m.role is role)

    def object_path(self, directory: Path | None = None) -> Path:
        return (directory or builtin_object_dir()) / self.object


# Sizes shared with bpf/include/lwt_builtin.h.
ADDR_KEY_SIZE = 16            # struct lwt_addr: IPv6, or IPv4-mapped IPv6
MAX_DESTINATIONS = 16384      # LWT_MAX_DESTINATIONS
HIST_BUCKETS = 16             # LWT_HIST_BUCKETS
CACHE_SLOTS = 128             # LWT_CACHE_SLOTS: per-CPU destination cache in front of the hash
PORT_SET_MAX = 1024           # ports per list in a config (an input bound: the map is a bitmap)
PORT_BITMAP_BYTES = 65536 // 8  # PF_PORT_BYTES: one bit per port, one slot per protocol
SOURCE_PREFIX_MAX = 1024      # pf_srcs max_entries
# pf_config.flags (PF_HAS_*): which checks a config needs, so the program skips the others
PF_HAS_SRCS = 1
PF_HAS_TCP = 2
PF_HAS_UDP = 4
SAMPLER_MAX_SNAP = 128        # SMP_MAX_SNAP
SAMPLER_RING_BYTES = 256 * 1024
BPF_F_NO_PREALLOC = 1  # per-destination tables: memory grows with the destinations seen

_PORT = {"type": "integer", "minimum": 1, "maximum": 65535}


def _port_list(proto: str) -> dict[str, Any]:
    return {
        "type": "array",
        "description": f"{proto} destination ports to drop.",
        "items": dict(_PORT),
        "maxItems": PORT_SET_MAX,
        "uniqueItems": True,
    }


COUNTERS = BuiltinProgram(
    name="counters",
    object="counters.o",
    section="lwt/counters",
    function="lwt_counters",
    hooks=HOOKS,
    maps=(
        MapSpec("cnt_stats", "percpu_hash", ADDR_KEY_SIZE, 16 + 8 * HIST_BUCKETS,
                MAX_DESTINATIONS, MapRole.COUNTERS, flags=BPF_F_NO_PREALLOC,
                description="per destination: packets, bytes, log2 length histogram"),
        MapSpec("cnt_cache", "percpu_array", 4, ADDR_KEY_SIZE + 16 + 8 * HIST_BUCKETS,
                CACHE_SLOTS, MapRole.COUNTERS,
                description="per CPU, slots {destination, the cnt_stats value}: the "
                "destinations that own a slot are counted here, not in cnt_stats"),
        MapSpec("cnt_errors", "percpu_array", 4, 8, 2, MapRole.COUNTERS,
                description="[0] non-IP packets, [1] destination table full"),
    ),
    config_schema={
        "type": "object",
        "description": "counters takes no configuration.",
        "additionalProperties": False,
        "properties": {},
    },
    description="Per-destination packet and byte counters (per CPU) and a log2 "
    "packet-length histogram. Never changes or drops a packet.",
)

PORT_FILTER = BuiltinProgram(
    name="port-filter",
    object="port_filter.o",
    section="lwt/port_filter",
    function="lwt_port_filter",
    hooks=HOOKS,
    maps=(
        MapSpec("pf_config", "array", 4, 4, 1, MapRole.CONFIG,
                description="{flags u32}: 1 source prefixes, 2 TCP ports, 4 UDP ports"),
        MapSpec("pf_ports", "array", 4, PORT_BITMAP_BYTES, 2, MapRole.CONFIG,
                description="[0] TCP, [1] UDP: denied destination port P is bit P & 7 "
                "of byte P >> 3"),
        MapSpec("pf_srcs", "lpm_trie", 20, 1, SOURCE_PREFIX_MAX, MapRole.CONFIG,
                flags=BPF_F_NO_PREALLOC,
                description="denied source prefixes {prefixlen u32, IPv6/IPv4-mapped addr}"),
        MapSpec("pf_stats", "percpu_hash", ADDR_KEY_SIZE, 32, MAX_DESTINATIONS,
                MapRole.COUNTERS, flags=BPF_F_NO_PREALLOC,
                description="per destination: passed packets/bytes, dropped packets/bytes"),
        MapSpec("pf_cache", "percpu_array", 4, ADDR_KEY_SIZE + 32, CACHE_SLOTS,
                MapRole.COUNTERS,
                description="per CPU, slots {destination, the pf_stats value}: the "
                "destinations that own a slot are counted here, not in pf_stats"),
    ),
    config_schema={
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "denyTCPPorts": _port_list("TCP"),
            "denyUDPPorts": _port_list("UDP"),
            "denySourceCIDRs": {
                "type": "array",
                "description": "Source prefixes (IPv4 or IPv6 CIDR, or a single address) "
                "whose packets are dropped.",
                "items": {"type": "string"},
                "maxItems": SOURCE_PREFIX_MAX,
                "uniqueItems": True,
            },
        },
    },
    description="Drops packets by (TCP/UDP, destination port) and by source prefix, "
    "IPv4 and IPv6; counts passed and dropped packets per destination.",
    notes=("Non-first IP fragments carry no ports: they pass the port check.",),
)

SAMPLER = BuiltinProgram(
    name="sampler",
    object="sampler.o",
    section="lwt/sampler",
    function="lwt_sampler",
    hooks=HOOKS,
    maps=(
        MapSpec("smp_config", "array", 4, 8, 1, MapRole.CONFIG,
                description="{one_in u32, snap_len u32}"),
        MapSpec("smp_stats", "percpu_array", 4, 24, 1, MapRole.COUNTERS,
                description="{seen, sampled, ring_full} u64"),
        MapSpec("smp_ring", "ringbuf", 0, 0, SAMPLER_RING_BYTES, MapRole.SAMPLES,
                description="header samples (lwt_policy.sampler.decode_sample)"),
    ),
    config_schema={
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "oneIn": {
                "type": "integer",
                "minimum": 0,
                "maximum": 2**32 - 1,
                "default": 100,
                "description": "Sample 1 in oneIn packets (random); 1 samples every "
                "packet, 0 pauses sampling.",
            },
            "snapLength": {
                "type": "integer",
                "minimum": 0,
                "maximum": SAMPLER_MAX_SNAP,
                "default": 64,
                "description": "Bytes of each sampled packet, from the IP header on, "
                f"copied into the sample (at most {SAMPLER_MAX_SNAP}).",
            },
        },
    },
    description="Samples 1 in N packets: destination, length, metadata and the first "
    "bytes of the packet go to user space through a BPF ring buffer.",
)

ENCAP = BuiltinProgram(
    name="encap",
    object="encap.o",
    section="lwt/encap",
    function="lwt_encap",
    # bpf_lwt_push_encap is offered to LWT_IN and LWT_XMIT only (the verifier refuses it
    # on LWT_OUT), and the kernel acts on BPF_LWT_REROUTE on in and xmit (net/core/lwt_bpf.c).
    hooks=frozenset({"in", "xmit"}),
    maps=(
        MapSpec("enc_config", "array", 4, 40, 1, MapRole.CONFIG,
                description="{mode u8, family u8, ttl u8, tos u8, udp_dport u16, "
                "udp_sport u16, remote[16], source[16]}"),
        MapSpec("enc_stats", "percpu_array", 4, 32, 1, MapRole.COUNTERS,
                description="{packets, bytes, unconfigured, errors} u64"),
    ),
    config_schema={
        "type": "object",
        "additionalProperties": False,
        "required": ["remote", "source"],
        "properties": {
            "remote": {"type": "string",
                       "description": "Outer destination: the tunnel endpoint (IPv4 or IPv6)."},
            "source": {"type": "string",
                       "description": "Outer source address, same family as remote. On the "
                       "in hook it must not be a local address of the node."},
            "mode": {"type": "string", "enum": ["ipip", "udp"], "default": "ipip",
                     "description": "ipip: IP-in-IP (protocol 4 for IPv4 inner, 41 for IPv6 "
                     "inner). udp: outer IPv4 + UDP + inner packet (foo-over-UDP direct)."},
            "udpPort": dict(_PORT, description="UDP destination port (mode udp; required)."),
            "udpSourcePort": dict(_PORT, description="Fixed UDP source port; default: "
                                  "49152 + 14 bits of the flow hash."),
            "ttl": {"type": "integer", "minimum": 1, "maximum": 255, "default": 64,
                    "description": "Outer TTL / hop limit."},
            "tos": {"type": "integer", "minimum": 0, "maximum": 255, "default": 0,
                    "description": "Outer TOS / traffic class byte."},
        },
    },
    description="Pushes an outer IPv4/IPv6 header (IP-in-IP, or UDP over IPv4) toward a "
    "remote and re-routes the packet by its new destination (BPF_LWT_REROUTE).",
    notes=(
        "mode ipip with an IPv4 inner packet (protocol 4): bpf_lwt_push_encap refuses "
        "TCP GSO packets (EPROTONOSUPPORT, net/core/lwt_bpf.c handle_gso_encap), so "
        "locally generated TCP is dropped and counted as errors; mode udp handles GSO.",
        "The outer header is sent without DF: packets that no longer fit the outer MTU "
        "are fragmented. Lower the pod MTU by the overhead (20/28/40 bytes) to avoid it.",
        "Unconfigured (no enc_config entry written) it drops: sending traffic "
        "unencapsulated could leak it onto the wrong network.",
    ),
)

DROP_ALL = BuiltinProgram(
    name="drop-all",
    object="drop_all.o",
    section="lwt/drop_all",
    function="lwt_drop_all",
    hooks=HOOKS,
    maps=(
        MapSpec("drop_stats", "percpu_hash", ADDR_KEY_SIZE, 16, MAX_DESTINATIONS,
                MapRole.COUNTERS, flags=BPF_F_NO_PREALLOC,
                description="per destination: dropped packets, bytes"),
    ),
    config_schema={
        "type": "object",
        "description": "drop-all takes no configuration.",
        "additionalProperties": False,
        "properties": {},
    },
    description="Drops every packet and counts it per destination: what a FailClosed "
    "route gets when its own program cannot run.",
)

CATALOGUE: dict[str, BuiltinProgram] = {
    p.name: p for p in (COUNTERS, PORT_FILTER, SAMPLER, ENCAP, DROP_ALL)
}


class UnknownBuiltinError(KeyError):
    """A policy names a built-in that does not exist."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(name)

    def __str__(self) -> str:
        return (f"unknown built-in program {self.name!r}: choose one of "
                f"{', '.join(sorted(CATALOGUE))}")


def get_builtin(name: str) -> BuiltinProgram:
    try:
        return CATALOGUE[name]
    except KeyError:
        raise UnknownBuiltinError(name) from None
