"""Typed configuration of the built-in programs: policy `config` <-> map bytes.

- `encode_config(name, config)` validates a policy's `config` for a built-in (its JSON
  schema in the catalogue, then the semantic checks the schema cannot express) and returns
  the entries to write into the program's config maps.
- `sync_config(name, config, maps)` makes the live maps equal to that: writes every entry
  and deletes stale ones. That is how a config change is applied: no re-attach, the
  program and its labels stay, the counters keep counting.
- `check_map_layout(name, maps)` compares the catalogue with the maps the loader created.
- `read_*` / `decode_*` turn counter maps (raw per-CPU bytes) into numbers for status,
  metrics and the CLI.

The byte layouts repeat the C structs of bpf/*.c (little-endian host order except where a
field says network order). Pure Python: `maps` arguments are any objects with the
`lwt_agent.bpf.BpfMap` methods used (keys, lookup, lookup_percpu, update, delete), so the
operator can import this module without the kernel.
"""
from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import jsonschema

from lwt_policy.catalogue import (
    ADDR_KEY_SIZE,
    CATALOGUE,
    HIST_BUCKETS,
    PF_HAS_SRCS,
    PF_HAS_TCP,
    PF_HAS_UDP,
    PORT_BITMAP_BYTES,
    BuiltinProgram,
    MapRole,
    get_builtin,
)
from lwt_policy.errors import PolicyError, Problem

IPPROTO_TCP = 6
IPPROTO_UDP = 17
ENC_MODES = {"ipip": 1, "udp": 2}


class ProgramConfigError(PolicyError):
    """A built-in's `config` is invalid; `.field` is the config path to fix."""

    def __init__(self, builtin: str, field: str, message: str) -> None:
        self.builtin = builtin
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message} (built-in {builtin!r})")

    @property
    def problem(self) -> Problem:
        return Problem(self.field, self.message, "builtin-config")


class MapLayoutError(PolicyError):
    """The maps a loaded object created do not have the layout the catalogue expects:
    the object and the agent come from different builds."""

    def __init__(self, builtin: str, differences: Sequence[str]) -> None:
        self.builtin = builtin
        self.differences = tuple(differences)
        super().__init__(
            f"built-in {builtin!r}: map layout differs from the catalogue: "
            + "; ".join(differences)
            + ". Rebuild the BPF objects (make -C bpf) with the same source as the agent, "
            "or point LWT_BPF_DIR at the objects shipped with this agent version."
        )


class MapLike(Protocol):
    """What this module needs of a map (lwt_agent.bpf.BpfMap has it)."""

    key_size: int
    value_size: int

    def keys(self) -> Iterator[bytes]: ...
    def lookup(self, key: bytes) -> bytes | None: ...
    def lookup_percpu(self, key: bytes) -> list[bytes] | None: ...
    def update(self, key: bytes, value: bytes, flags: int = 0) -> None: ...
    def delete(self, key: bytes) -> Any: ...


MapEntries = dict[str, list[tuple[bytes, bytes]]]


# --- addresses -------------------------------------------------------------------------

def encode_addr(address: ipaddress.IPv4Address | ipaddress.IPv6Address | str) -> bytes:
    """16-byte map key of an address: IPv6 as is, IPv4 as IPv4-mapped IPv6."""
    addr = ipaddress.ip_address(address)
    if isinstance(addr, ipaddress.IPv4Address):
        return b"\x00" * 10 + b"\xff\xff" + addr.packed
    return addr.packed


def decode_addr(raw: bytes) -> str:
    """Inverse of encode_addr: "10.0.0.1" for IPv4-mapped keys, IPv6 text otherwise."""
    if len(raw) != 16:
        raise ValueError(f"an address key is 16 bytes, got {len(raw)}")
    if raw[:12] == b"\x00" * 10 + b"\xff\xff":
        return socket.inet_ntop(socket.AF_INET, raw[12:])
    return socket.inet_ntop(socket.AF_INET6, raw)


# --- validation --------------------------------------------------------------------------

def _field_path(parts: Iterable[str | int]) -> str:
    out = "config"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def validate_config(name: str, config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Checks `config` against the built-in's schema; returns it with defaults filled in.

    Raises ProgramConfigError naming the first offending field (the deepest, most specific
    schema error)."""
    program = _builtin_or_error(name)
    if config is not None and not isinstance(config, Mapping):
        raise ProgramConfigError(name, "config",
                                 f"must be an object (a mapping), got {type(config).__name__}")
    data = dict(config or {})
    validator = jsonschema.Draft202012Validator(program.config_schema)
    errors = sorted(validator.iter_errors(data),
                    key=lambda e: (list(map(str, e.absolute_path)), e.message))
    if errors:
        err = jsonschema.exceptions.best_match(errors) or errors[0]
        path = list(err.absolute_path)
        if err.validator == "additionalProperties":
            unknown = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            allowed = ", ".join(sorted(err.schema.get("properties", {}))) or "none"
            raise ProgramConfigError(
                name, _field_path([*path, unknown[0]]) if unknown else _field_path(path),
                f"unknown field for built-in {name}; allowed fields: {allowed}")
        if err.validator == "required":
            missing = [r for r in err.validator_value if r not in err.instance]
            raise ProgramConfigError(name, _field_path([*path, missing[0]]),
                                     "required field is missing")
        raise ProgramConfigError(name, _field_path(path), err.message)
    for key, spec in program.config_schema.get("properties", {}).items():
        if key not in data and "default" in spec:
            data[key] = spec["default"]
    return data


def _builtin_or_error(name: str) -> BuiltinProgram:
    if name not in CATALOGUE:
        raise ProgramConfigError(
            name, "program.builtin",
            f"unknown built-in program {name!r}; choose one of {', '.join(sorted(CATALOGUE))}")
    return CATALOGUE[name]


def _parse_ip(builtin: str, field: str, text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ProgramConfigError(builtin, field,
                                 f"{text!r} is not an IPv4 or IPv6 address") from None


# --- encoders, one per built-in ----------------------------------------------------------

def _port_bitmap(ports: Iterable[int]) -> bytes:
    """pf_ports slot: port P is bit P & 7 of byte P >> 3."""
    bits = bytearray(PORT_BITMAP_BYTES)
    for port in ports:
        bits[port >> 3] |= 1 << (port & 7)
    return bytes(bits)


def _encode_port_filter(cfg: dict[str, Any]) -> MapEntries:
    tcp, udp = cfg.get("denyTCPPorts", []), cfg.get("denyUDPPorts", [])
    srcs: dict[bytes, bytes] = {}
    covers_mapped = False
    for i, text in enumerate(cfg.get("denySourceCIDRs", [])):
        try:
            net = ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            raise ProgramConfigError("port-filter", f"config.denySourceCIDRs[{i}]",
                                     f"{text!r} is not a CIDR prefix: {exc}") from None
        if isinstance(net, ipaddress.IPv6Network) and net.supernet_of(_IPV4_MAPPED):
            covers_mapped = True
        srcs[_source_key(net)] = b"\x01"
    if covers_mapped:
        # IPv4 sources are looked up IPv4-mapped: an IPv6 prefix such as ::/0 must not
        # deny them. A longer "not denied" entry for the mapped block stops that; an
        # IPv4 deny (0.0.0.0/0 is the same key) stays a deny.
        srcs.setdefault(_source_key(_IPV4_MAPPED), b"\x00")
    # The flags let the program skip the lookups a config cannot match (an empty trie, a
    # protocol with no denied port). sync_config writes maps in this order: the trie and
    # the bitmaps before the flags that turn them on.
    flags = ((PF_HAS_SRCS if srcs else 0) | (PF_HAS_TCP if tcp else 0)
             | (PF_HAS_UDP if udp else 0))
    return {
        "pf_srcs": list(srcs.items()),
        "pf_ports": [(struct.pack("<I", 0), _port_bitmap(tcp)),
                     (struct.pack("<I", 1), _port_bitmap(udp))],
        "pf_config": [(struct.pack("<I", 0), struct.pack("<I", flags))],
    }


_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def _source_key(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bytes:
    """pf_srcs key: {prefixlen u32, 16-byte address}, IPv4 prefixes IPv4-mapped."""
    prefixlen = net.prefixlen + (96 if net.version == 4 else 0)
    return struct.pack("<I", prefixlen) + encode_addr(net.network_address)


def _encode_sampler(cfg: dict[str, Any]) -> MapEntries:
    value = struct.pack("<II", cfg["oneIn"], cfg["snapLength"])
    return {"smp_config": [(struct.pack("<I", 0), value)]}


@dataclass(frozen=True)
class EncapRules:
    """What only the node's agent knows, for `encap`'s endpoints.

    node_addresses: the node's own addresses; the outer source must be one of them, or the
    tunnel would send packets in another host's name. None: not known here (the operator
    validates without it; the agent always passes it).
    allowed_remotes: the cluster admin's allowlist of tunnel endpoints (chart
    `agent.encapAllowedRemotes`, agent `--encap-allowed-remotes`); an empty tuple allows none.
    None: no allowlist (standalone agent without the flag: the host admin's own files).
    """

    node_addresses: frozenset[IPAddress] | None = None
    allowed_remotes: tuple[IPNetwork, ...] | None = None


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# How the operator hands the allowlist to the agents (DaemonSet env); comma-separated CIDRs.
ENCAP_REMOTES_ENV = "LWT_ENCAP_ALLOWED_REMOTES"


def parse_allowed_remotes(text: str) -> tuple[IPNetwork, ...]:
    """"10.0.0.0/8, 2001:db8::/32" -> networks; "" -> () (no remote allowed). A bare address
    is a /32 or /128. Raises ValueError naming the bad entry."""
    networks: list[IPNetwork] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=True))
        except ValueError as exc:
            raise ValueError(f"encap allowed remote {part!r} is not a CIDR prefix: {exc}; "
                             "write e.g. 192.0.2.0/24 or 2001:db8::/64") from None
    return tuple(networks)


def _endpoint_problem(addr: IPAddress) -> str | None:
    """Why an address can never be a tunnel endpoint, whoever configures it."""
    if addr.is_unspecified or addr.is_multicast:
        return "unspecified or multicast"
    if addr.is_loopback:
        return "a loopback address"
    if addr.is_link_local:
        # 169.254.0.0/16 holds cloud metadata services (169.254.169.254) and the next hop
        # some CNIs give every pod (169.254.1.1): never a tunnel's business.
        return "link-local (169.254.0.0/16 or fe80::/10)"
    if isinstance(addr, ipaddress.IPv4Address) and (
            addr == ipaddress.IPv4Address("255.255.255.255") or addr.is_reserved):
        return "broadcast or reserved (240.0.0.0/4)"
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return "IPv4-mapped IPv6; write the IPv4 address"
    return None


def check_encap_endpoints(remote: IPAddress, source: IPAddress, rules: EncapRules) -> None:
    """The node-specific checks of an encap config (the agent's): source is the node's own,
    remote is in the admin's allowlist. Raises ProgramConfigError naming the field."""
    if rules.node_addresses is not None and source not in rules.node_addresses:
        mine = sorted((a for a in rules.node_addresses if a.version == source.version),
                      key=lambda a: a.packed)
        shown = ", ".join(str(a) for a in mine[:8]) + (" ..." if len(mine) > 8 else "")
        raise ProgramConfigError(
            "encap", "config.source",
            f"{source} is not an address of this node (IPv{source.version} addresses here: "
            f"{shown or 'none'}): the outer source must be the node's own, or the tunnel "
            "would send packets in another host's name")
    if rules.allowed_remotes is not None and not any(
            remote in net for net in rules.allowed_remotes if net.version == remote.version):
        allowed = ", ".join(str(n) for n in rules.allowed_remotes) or "none"
        raise ProgramConfigError(
            "encap", "config.remote",
            f"{remote} is not among the tunnel endpoints the cluster admin allows "
            f"(allowed: {allowed}); ask the admin to add it to the chart value "
            "agent.encapAllowedRemotes (agent flag --encap-allowed-remotes)")


def _encode_encap(cfg: dict[str, Any], rules: EncapRules | None = None) -> MapEntries:
    remote = _parse_ip("encap", "config.remote", cfg["remote"])
    source = _parse_ip("encap", "config.source", cfg["source"])
    if remote.version != source.version:
        raise ProgramConfigError(
            "encap", "config.source",
            f"source {source} is IPv{source.version} but remote {remote} is "
            f"IPv{remote.version}: the outer header needs both of one family")
    for field_name, addr in (("config.remote", remote), ("config.source", source)):
        problem = _endpoint_problem(addr)
        if problem:
            raise ProgramConfigError("encap", field_name,
                                     f"{addr} cannot be a tunnel endpoint ({problem})")
    if rules is not None:
        check_encap_endpoints(remote, source, rules)
    mode = cfg["mode"]
    if mode == "udp":
        if "udpPort" not in cfg:
            raise ProgramConfigError("encap", "config.udpPort",
                                     "mode udp needs udpPort (the receiver's UDP port)")
        if remote.version == 6:
            raise ProgramConfigError(
                "encap", "config.mode",
                "mode udp needs an IPv4 remote: UDP over IPv6 requires a checksum over the "
                "whole packet, which an LWT program cannot compute; use mode ipip for IPv6")
    elif "udpPort" in cfg or "udpSourcePort" in cfg:
        raise ProgramConfigError("encap", "config.udpPort",
                                 "udpPort/udpSourcePort only apply to mode udp")
    value = struct.pack(
        "<BBBBHH16s16s",
        ENC_MODES[mode], remote.version, cfg["ttl"], cfg["tos"],
        cfg.get("udpPort", 0), cfg.get("udpSourcePort", 0),
        remote.packed.ljust(16, b"\x00"), source.packed.ljust(16, b"\x00"),
    )
    return {"enc_config": [(struct.pack("<I", 0), value)]}


_ENCODERS = {
    "port-filter": _encode_port_filter,
    "sampler": _encode_sampler,
}


def encode_config(builtin_name: str, config: Mapping[str, Any] | None,
                  rules: EncapRules | None = None) -> MapEntries:
    """Validates `config` for a built-in; returns {map name: [(key, value), ...]}: the full
    desired content of each of its config maps (a map with no entries must be emptied).
    `rules`: the node's facts encap is checked against (the agent passes them)."""
    program = _builtin_or_error(builtin_name)
    cfg = validate_config(builtin_name, config)
    if builtin_name == "encap":
        entries = _encode_encap(cfg, rules)
    else:
        encoder = _ENCODERS.get(builtin_name)
        entries = encoder(cfg) if encoder else {}
    expected = {m.name for m in program.maps_with_role(MapRole.CONFIG)}
    assert set(entries) == expected, f"encoder of {builtin_name} out of step with catalogue"
    return entries


@dataclass
class ConfigSyncResult:
    written: int = 0
    deleted: int = 0


def sync_config(builtin_name: str, config: Mapping[str, Any] | None,
                maps: Mapping[str, MapLike], rules: EncapRules | None = None
                ) -> ConfigSyncResult:
    """Applies `config` to live maps: writes every desired entry, deletes entries of hash
    and trie config maps that are no longer wanted. Validates before touching any map, so
    a bad config changes nothing."""
    desired = encode_config(builtin_name, config, rules)
    program = CATALOGUE[builtin_name]
    missing = [name for name in desired if name not in maps]
    if missing:
        raise MapLayoutError(builtin_name, [f"map {m} missing" for m in missing])
    result = ConfigSyncResult()
    for map_name, entries in desired.items():
        bpf_map = maps[map_name]
        for key, value in entries:
            bpf_map.update(key, value)
            result.written += 1
        if program.map(map_name).type in ("array", "percpu_array"):
            continue  # array slots always exist: overwriting them is the whole update
        wanted = {key for key, _ in entries}
        stale = [k for k in bpf_map.keys() if k not in wanted]  # noqa: SIM118 (a BPF map)
        for key in stale:
            bpf_map.delete(key)
            result.deleted += 1
    return result


# Built-ins whose last config must not outlive a refusal of the current one: an encap still
# sending from a source that stopped being the node's, or to a remote the admin no longer
# allows. The agent clears them (encap then drops and counts `unconfigured`).
CLEAR_WHEN_REFUSED = frozenset({"encap"})


def clear_config(builtin_name: str, maps: Mapping[str, MapLike]) -> None:
    """Puts a built-in's config maps back to unconfigured: array slots zeroed, hash and trie
    maps emptied."""
    for spec in CATALOGUE[builtin_name].maps_with_role(MapRole.CONFIG):
        bpf_map = maps[spec.name]
        if spec.type in ("array", "percpu_array"):
            for index in range(spec.max_entries):
                bpf_map.update(struct.pack("<I", index), bytes(spec.value_size))
        else:
            for key in list(bpf_map.keys()):
                bpf_map.delete(key)


# --- map layout --------------------------------------------------------------------------

def check_map_layout(builtin_name: str, maps: Mapping[str, Any]) -> None:
    """Compares the catalogue's maps for a built-in with `maps` (name -> object with
    .key_size .value_size, optionally .type .max_entries .flags, as read back from the
    kernel). Raises MapLayoutError listing every difference."""
    program = get_builtin(builtin_name)
    differences: list[str] = []
    for spec in program.maps:
        actual = maps.get(spec.name)
        if actual is None:
            differences.append(f"map {spec.name} missing (object has: "
                               f"{', '.join(sorted(maps)) or 'no maps'})")
            continue
        for attr, want in (("key_size", spec.key_size), ("value_size", spec.value_size),
                           ("type", spec.type_id), ("max_entries", spec.max_entries),
                           ("flags", spec.flags)):
            got = getattr(actual, attr, None)
            if attr in ("type", "max_entries", "flags") and got is None:
                continue
            got_int = int(got.value) if hasattr(got, "value") else got
            if got_int != want:
                differences.append(f"{spec.name}.{attr} is {got_int}, expected {want}")
    if differences:
        raise MapLayoutError(builtin_name, differences)


# --- counters ----------------------------------------------------------------------------

@dataclass
class DestinationCounters:
    """Counters of one destination, summed over CPUs."""

    packets: int = 0
    bytes: int = 0
    dropped_packets: int = 0
    dropped_bytes: int = 0
    histogram: list[int] = field(default_factory=list)  # counters: log2 length buckets

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"packets": self.packets, "bytes": self.bytes,
                               "droppedPackets": self.dropped_packets,
                               "droppedBytes": self.dropped_bytes}
        if self.histogram:
            out["lengthHistogram"] = histogram_dict(self.histogram)
        return out


def histogram_dict(buckets: Sequence[int]) -> dict[str, int]:
    """{"64-127": n, ...} for the non-empty buckets; the last bucket is open-ended."""
    out: dict[str, int] = {}
    for i, n in enumerate(buckets):
        if not n:
            continue
        lo = 0 if i == 0 else 1 << i
        label = f"{lo}+" if i == len(buckets) - 1 else f"{lo}-{(1 << (i + 1)) - 1}"
        out[label] = n
    return out


def _sum_u64(per_cpu: Iterable[bytes], count: int) -> list[int]:
    totals = [0] * count
    for raw in per_cpu:
        for i, v in enumerate(struct.unpack_from(f"<{count}Q", raw)):
            totals[i] += v
    return totals


def decode_destination_value(builtin_name: str, per_cpu: Sequence[bytes]) -> DestinationCounters:
    """Sums one per-destination value over CPUs (raw bytes, one element per CPU)."""
    if builtin_name == "counters":
        t = _sum_u64(per_cpu, 2 + HIST_BUCKETS)
        return DestinationCounters(packets=t[0], bytes=t[1], histogram=t[2:])
    if builtin_name == "port-filter":
        t = _sum_u64(per_cpu, 4)
        return DestinationCounters(packets=t[0], bytes=t[1], dropped_packets=t[2],
                                   dropped_bytes=t[3])
    if builtin_name == "drop-all":
        t = _sum_u64(per_cpu, 2)
        return DestinationCounters(dropped_packets=t[0], dropped_bytes=t[1])
    raise ValueError(f"built-in {builtin_name!r} keeps no per-destination counters")


PER_DESTINATION_MAP = {"counters": "cnt_stats", "port-filter": "pf_stats",
                       "drop-all": "drop_stats"}
# The per-CPU destination cache in front of the per-destination hash (bpf/include/
# lwt_builtin.h, lwt_cache_slot): slots of {destination (16 bytes), the same value}.
DESTINATION_CACHE_MAP = {"counters": "cnt_cache", "port-filter": "pf_cache"}
_FREE_SLOT = bytes(ADDR_KEY_SIZE)


def read_destination_counters(builtin_name: str, maps: Mapping[str, MapLike]
                              ) -> dict[str, DestinationCounters]:
    """{destination address: counters} of a built-in that counts per destination: the
    per-destination hash plus, per CPU, the cache slots each destination owns there."""
    per_cpu_values: dict[bytes, list[bytes]] = {}
    bpf_map = maps[PER_DESTINATION_MAP[builtin_name]]
    for key in list(bpf_map.keys()):
        per_cpu = bpf_map.lookup_percpu(key)
        if per_cpu is not None:  # None: deleted between keys() and the lookup
            per_cpu_values.setdefault(key, []).extend(per_cpu)
    cache_name = DESTINATION_CACHE_MAP.get(builtin_name)
    if cache_name is not None:
        cache = maps[cache_name]
        for index in range(CATALOGUE[builtin_name].map(cache_name).max_entries):
            for raw in cache.lookup_percpu(struct.pack("<I", index)) or []:
                dst = bytes(raw[:ADDR_KEY_SIZE])
                if dst != _FREE_SLOT:
                    per_cpu_values.setdefault(dst, []).append(bytes(raw[ADDR_KEY_SIZE:]))
    return {decode_addr(key): decode_destination_value(builtin_name, values)
            for key, values in per_cpu_values.items()}


# Global (not per-destination) per-CPU counters: map -> field names of its u64s.
_GLOBAL_COUNTERS = {
    "counters": ("cnt_errors", None),
    "sampler": ("smp_stats", ("seen", "sampled", "ringFull")),
    "encap": ("enc_stats", ("packets", "bytes", "unconfigured", "errors")),
}


def read_program_counters(builtin_name: str, maps: Mapping[str, MapLike]) -> dict[str, int]:
    """Program-wide counters summed over CPUs, e.g. sampler {"seen", "sampled", "ringFull"};
    {} for built-ins that have none."""
    if builtin_name not in _GLOBAL_COUNTERS:
        return {}
    map_name, names = _GLOBAL_COUNTERS[builtin_name]
    bpf_map = maps[map_name]

    def slot(index: int, count: int) -> list[int]:
        # array slots always exist; `or []` only guards a map that is not an array
        return _sum_u64(bpf_map.lookup_percpu(struct.pack("<I", index)) or [], count)

    if names is None:  # counters: one u64 per array slot
        return {name: slot(i, 1)[0] for i, name in enumerate(("notIP", "tableFull"))}
    return dict(zip(names, slot(0, len(names)), strict=True))


def counters_status(builtin_name: str, maps: Mapping[str, MapLike]) -> dict[str, Any]:
    """Everything a built-in counts, JSON-ready, for status, metrics and `lwt-agent status`:
    {"destinations": {address: {...}}, "program": {...}} (either part may be empty)."""
    out: dict[str, Any] = {"destinations": {}, "program": {}}
    if builtin_name in PER_DESTINATION_MAP:
        out["destinations"] = {addr: c.as_dict() for addr, c in
                               sorted(read_destination_counters(builtin_name, maps).items())}
    out["program"] = read_program_counters(builtin_name, maps)
    return out
