"""Value types shared by the pure planner and the netlink edge."""
from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Route protocol number that marks /32 (/128) routes the engine created itself (for pod IPs
# that only a subnet route reaches). Unused by the kernel, iproute2's rt_protos and the
# common CNIs/routing daemons (bird 12, zebra 11, bgp 186..., Calico felix 80).
RTPROT_LWT = 0x4C  # 76, 'L'
RT_TABLE_MAIN = 254

RTN_UNICAST = 1
LWTUNNEL_ENCAP_BPF = 6
HOOK_ORDER: tuple[str, ...] = ("in", "out", "xmit")


class FailurePolicy(enum.Enum):
    """What a route gets when its program cannot be loaded."""

    FAIL_OPEN = "FailOpen"  # the route stays plain on that hook
    FAIL_CLOSED = "FailClosed"  # the route gets the fallback (drop-all) program


@dataclass(frozen=True)
class ProgramRef:
    """A loaded program to attach: an open fd and its label (labels.program_label)."""

    fd: int
    label: str


@dataclass(frozen=True)
class Unavailable:
    """A program that could not be loaded (the failure policy decides what happens)."""

    reason: str


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


@dataclass(frozen=True)
class ObservedRoute:
    """A route as dumped by the kernel.

    ``header`` (the rtmsg) and ``attrs`` (every attribute except the encap and the
    read-only cache info, raw) let the engine rewrite the route with every attribute it
    had — including ones the engine does not interpret (metrics, realms, pref, ...).
    """

    family: int
    dst: IPNetwork
    table: int
    protocol: int
    scope: int
    type: int
    oif: int | None
    gateway: str | None
    prefsrc: str | None
    metric: int | None
    multipath: bool
    nh_id: int | None
    encap_type: int | None  # None: no encap
    encap_labels: Mapping[str, str]  # hook -> label, for bpf encaps
    header: bytes = field(repr=False, compare=False, default=b"")
    attrs: bytes = field(repr=False, compare=False, default=b"")

    @property
    def owned(self) -> bool:
        """A /32 (/128) the engine created for a pod behind a subnet route."""
        return self.protocol == RTPROT_LWT

    @property
    def key(self) -> tuple[int, int, IPNetwork]:
        return (self.family, self.table, self.dst)
