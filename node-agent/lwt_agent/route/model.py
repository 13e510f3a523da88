"""Value types shared by the pure planner and the netlink edge."""
from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from lwt_agent.bpf.hooks import Hook

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Route protocol number that marks /32 (/128) routes the engine created itself (for pod IPs
# that only a subnet route reaches). Unused by the kernel, iproute2's rt_protos and the
# common CNIs/routing daemons (bird 12, zebra 11, bgp 186..., Calico felix 80).
RTPROT_LWT = 0x4C  # 76, 'L'
RT_TABLE_MAIN = 254

RTN_UNICAST = 1
LWTUNNEL_ENCAP_BPF = 6
# The loader's enum is the one list of hooks; routes carry them in this order.
HOOK_ORDER: tuple[str, ...] = tuple(hook.value for hook in Hook)


@dataclass(frozen=True)
class ProgramRef:
    """A loaded program to attach: an open fd and its label (labels.program_label)."""

    fd: int
    label: str


@dataclass(frozen=True)
class HookProgram:
    """One hook of an encap to write: the label on the wire and where the program comes from.

    Exactly one of ``fd`` (a program the caller holds open) and ``prog_id`` (a program of
    ours already on the route, kept while another hook changes: the engine opens it by id)
    is set.
    """

    label: str
    fd: int | None = None
    prog_id: int | None = None


@dataclass(frozen=True)
class EncapSpec:
    """A full bpf encap: programs by hook and the xmit headroom."""

    hooks: tuple[tuple[str, HookProgram], ...]  # in HOOK_ORDER
    headroom: int = 0

    def labels(self) -> dict[str, str]:
        return {hook: prog.label for hook, prog in self.hooks}


class Destination:
    """A route prefix, cheap to build and hash (10,000 of them per batch).

    ``raw`` is the packed address (4 or 16 bytes), ``prefixlen`` its length; ``network``
    gives the ipaddress object when one is needed (lazily: it costs microseconds each).
    """

    __slots__ = ("_network", "key", "prefixlen", "raw")

    def __init__(self, raw: bytes, prefixlen: int) -> None:
        self.raw = raw
        self.prefixlen = prefixlen
        self.key = (raw, prefixlen)  # plain tuple: fast dict key for big batches
        self._network: IPNetwork | None = None

    @classmethod
    def of(cls, value: str | IPNetwork | Destination) -> Destination:
        """From a Destination, an ipaddress network, or text ('10.1.2.3', 'fd00::/64')."""
        if isinstance(value, Destination):
            return value
        if isinstance(value, str):
            text = value.strip()
            if "/" not in text:  # fast path for bare pod IPs
                family = socket.AF_INET6 if ":" in text else socket.AF_INET
                try:
                    raw = socket.inet_pton(family, text)
                except OSError:
                    pass
                else:
                    return cls(raw, len(raw) * 8)
            value = ipaddress.ip_network(text, strict=True)
        dst = cls(value.network_address.packed, value.prefixlen)
        dst._network = value
        return dst

    @property
    def version(self) -> int:
        return 4 if len(self.raw) == 4 else 6

    @property
    def family(self) -> int:
        return socket.AF_INET if len(self.raw) == 4 else socket.AF_INET6

    @property
    def max_prefixlen(self) -> int:
        return len(self.raw) * 8

    @property
    def is_host(self) -> bool:
        return self.prefixlen == len(self.raw) * 8

    @property
    def network(self) -> IPNetwork:
        if self._network is None:
            self._network = ipaddress.ip_network((self.raw, self.prefixlen))
        return self._network

    def within(self, other: Destination) -> bool:
        """True when this prefix lies inside ``other`` (same family, shorter or equal)."""
        if len(self.raw) != len(other.raw) or other.prefixlen > self.prefixlen:
            return False
        shift = len(self.raw) * 8 - other.prefixlen
        return int.from_bytes(self.raw) >> shift == int.from_bytes(other.raw) >> shift

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Destination) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __str__(self) -> str:
        return str(self.network)

    def __repr__(self) -> str:
        return f"Destination({self})"


class ObservedRoute:
    """A route as dumped by the kernel.

    ``header`` (the rtmsg, dump-only flags masked), ``dst_attr`` (RTA_DST, raw) and
    ``attrs`` (every other attribute except the encap and the read-only cache info, raw)
    let the engine rewrite the route with every attribute it had — including ones the
    engine does not interpret (metrics, realms, pref, ...).
    """

    __slots__ = (
        "attrs",
        "dst",
        "dst_attr",
        "encap_labels",
        "encap_type",
        "family",
        "gateway",
        "header",
        "metric",
        "multipath",
        "nh_id",
        "oif",
        "prefsrc",
        "protocol",
        "scope",
        "table",
        "type",
    )

    def __init__(
        self,
        family: int,
        dst: Destination,
        table: int,
        protocol: int,
        scope: int,
        type: int,
        oif: int | None,
        gateway: str | None = None,
        prefsrc: str | None = None,
        metric: int | None = None,
        multipath: bool = False,
        nh_id: int | None = None,
        encap_type: int | None = None,  # None: no encap
        encap_labels: Mapping[str, str] | None = None,  # hook -> label, bpf encaps
        header: bytes = b"",
        dst_attr: bytes = b"",
        attrs: bytes = b"",
    ) -> None:
        self.family = family
        self.dst = dst
        self.table = table
        self.protocol = protocol
        self.scope = scope
        self.type = type
        self.oif = oif
        self.gateway = gateway
        self.prefsrc = prefsrc
        self.metric = metric
        self.multipath = multipath
        self.nh_id = nh_id
        self.encap_type = encap_type
        self.encap_labels = encap_labels or {}
        self.header = header
        self.dst_attr = dst_attr
        self.attrs = attrs

    @property
    def owned(self) -> bool:
        """A /32 (/128) the engine created for a pod behind a subnet route."""
        return self.protocol == RTPROT_LWT

    def describe(self) -> dict[str, object]:
        """The interpreted attributes (for comparisons in tests and for status)."""
        return {
            "dst": str(self.dst),
            "table": self.table,
            "protocol": self.protocol,
            "scope": self.scope,
            "type": self.type,
            "oif": self.oif,
            "gateway": self.gateway,
            "prefsrc": self.prefsrc,
            "metric": self.metric,
            "encap_type": self.encap_type,
            "encap_labels": dict(self.encap_labels),
        }

    def __repr__(self) -> str:
        return f"ObservedRoute({self.describe()})"
