"""A Kubernetes node built from network namespaces, for kernel tests with real traffic.

    with build_node("lwtR", pods=2, bridge=False) as node:
        node.host            # the host netns (where pod routes and our programs live)
        node.pods[0].ipv4    # "10.213.1.1"; node.pods[0].ns is the pod's netns
        node.client          # a netns that reaches the pods through the host (forwarding)

Calico style (default): each pod has a veth pair ``caliN`` (host) / ``eth0`` (pod), the pod
has a /32 (/128) address and a default route via 169.254.1.1 (fe80::1) onlink, the host has
``<pod ip>/32 dev caliN scope link`` and answers for the gateway address.
Bridge style (``bridge=True``): pod veths are enslaved to ``br0`` (10.213.2.1/24,
fd00:213:2::1/64) and the host only has the subnet route of the bridge.

Namespaces are named ``<prefix><random>-<role>`` and all removed on exit, even when the
test failed. Addresses are 10.213.0.0/16 and fd00:213::/32, only inside these namespaces.
Built from the primitives of `lwt_agent.netns`, as the demo's sandbox is. Traffic helpers
create sockets inside a namespace from this process (the calling thread enters it), so
tests need no helper processes (not even ``ping``).
"""
from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from lwt_agent import netns
from lwt_agent.netns import (
    Namespaces,
    Netns,
    calico_pod,
    family_of,
    in_netns,
    routed_link,
    socket_in,
)
from lwt_agent.netns import drain as drain_udp

CLIENT_V4, CLIENT_GW_V4 = "10.213.254.2", "10.213.254.1"
CLIENT_V6, CLIENT_GW_V6 = "fd00:213:fe::2", "fd00:213:fe::1"


def sh(*args: str, check: bool = True, timeout: float = 20) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def ip(ns: str, *args: str, check: bool = True) -> str:
    return sh("ip", "-n", ns, *args, check=check)


def nsexec(ns: str, *args: str, check: bool = True, timeout: float = 20) -> str:
    """Run a command inside netns ``ns``; its stdout."""
    return netns.run(ns, args, check=check, timeout=timeout).stdout


@dataclass
class Pod:
    ns: str
    host_if: str  # host side of the veth (caliN), or the bridge port
    ipv4: str
    ipv6: str


@dataclass
class Node:
    prefix: str
    host: str
    client: str
    bridge: bool
    pods: list[Pod] = field(default_factory=list)
    nets: Namespaces | None = field(default=None, repr=False)  # owns every namespace

    @property
    def namespaces(self) -> list[str]:
        return self.nets.names if self.nets else []

    def add_peer(self, role: str, host_if: str, host_cidrs: Sequence[str],
                 peer_cidrs: Sequence[str]) -> str:
        """A namespace ``<prefix>-<role>`` routed from the host (veth ``host_if``/eth0),
        removed with the node; its name."""
        assert self.nets is not None, "the node is not built"
        host = next(net for net in self.nets.made if net.name == self.host)
        peer = self.nets.add(role)
        routed_link(host, peer, host_if, host_cidrs, peer_cidrs)
        return peer.name

    # --- traffic -------------------------------------------------------------------------

    def ping(self, src_ns: str, dst: str, count: int = 1, timeout: float = 1.0) -> bool:
        """True when every ICMP echo got its reply (raw ICMP sockets: no ping binary needed)."""
        return icmp_echo(src_ns, dst, count, timeout) == count

    def tcp_listen(self, ns: str, address: str, port: int) -> socket.socket:
        return netns.tcp_listen(ns, address, port)

    def tcp_connects(self, src_ns: str, dst: str, port: int, timeout: float = 1.0) -> bool:
        """True when a TCP handshake to dst:port completes from src_ns."""
        return netns.tcp_connects(src_ns, dst, port, timeout)

    def udp_receiver(self, ns: str, address: str, port: int) -> socket.socket:
        return netns.udp_receiver(ns, address, port)

    def udp_sender(self, ns: str, dst: str) -> socket.socket:
        return socket_in(ns, family_of(dst), socket.SOCK_DGRAM)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def icmp_echo(src_ns: str, dst: str, count: int = 1, timeout: float = 1.0) -> int:
    """Send ``count`` ICMP(v6) echo requests from src_ns; return how many were answered."""
    v6 = ":" in dst
    family = socket.AF_INET6 if v6 else socket.AF_INET
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    sock = in_netns(src_ns, lambda: socket.socket(family, socket.SOCK_RAW, proto))
    ident = os.getpid() & 0xFFFF
    answered: set[int] = set()
    try:
        for seq in range(count):
            kind = 128 if v6 else 8
            body = struct.pack("!BBHHH", kind, 0, 0, ident, seq) + b"lwt-topology"
            if not v6:  # the kernel fills ICMPv6 checksums itself
                body = body[:2] + struct.pack("!H", _checksum(body)) + body[4:]
            with contextlib.suppress(OSError):  # EPERM: an `out` program dropped it
                sock.sendto(body, (dst, 0))
        deadline = time.monotonic() + timeout
        while len(answered) < count and (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                packet, _ = sock.recvfrom(2048)
            except TimeoutError:
                break
            icmp = packet if v6 else packet[(packet[0] & 0x0F) * 4 :]
            kind, _code, _sum, got_id, got_seq = struct.unpack("!BBHHH", icmp[:8])
            if kind == (129 if v6 else 0) and got_id == ident:
                answered.add(got_seq)
        return len(answered)
    finally:
        sock.close()


def _add_bridge_pod(nets: Namespaces, host: Netns, index: int) -> Pod:
    net = nets.add(f"p{index}")
    pod = Pod(net.name, f"veth{index}", f"10.213.2.{index + 10}", f"fd00:213:2::{index + 10}")
    host.veth(pod.host_if, "eth0", net)
    host.enslave(pod.host_if, "br0")
    net.addr("eth0", f"{pod.ipv4}/24")
    net.addr("eth0", f"{pod.ipv6}/64")
    net.route("default", via="10.213.2.1")
    net.route("default", via="fd00:213:2::1")
    return pod


@contextlib.contextmanager
def build_node(prefix: str, pods: int = 2, bridge: bool = False) -> Iterator[Node]:
    """Build a node (host, ``pods`` pods, a client); everything is removed on exit."""
    name = f"{prefix}{uuid.uuid4().hex[:6]}"
    with Namespaces(name) as nets:
        node = Node(prefix=name, host=f"{name}-host", client=f"{name}-cl", bridge=bridge,
                    nets=nets)
        host, client = nets.add("host"), nets.add("cl")
        host.enable_forwarding()
        if bridge:
            host.bridge("br0")
            host.addr("br0", "10.213.2.1/24")
            host.addr("br0", "fd00:213:2::1/64")
        for index in range(pods):
            if bridge:
                node.pods.append(_add_bridge_pod(nets, host, index))
                continue
            net = nets.add(f"p{index}")
            pod = Pod(net.name, f"cali{index}", f"10.213.1.{index + 1}",
                      f"fd00:213:1::{index + 1}")
            calico_pod(host, net, pod.host_if, [pod.ipv4, pod.ipv6])
            node.pods.append(pod)
        routed_link(host, client, "cl0", [f"{CLIENT_GW_V4}/24", f"{CLIENT_GW_V6}/64"],
                    [f"{CLIENT_V4}/24", f"{CLIENT_V6}/64"])
        yield node


def route_dump(ns: str, *selector: str) -> list[dict[str, object]]:
    """`ip -j -d route show` (both families), for comparing routes before/after."""
    import json

    found: list[dict[str, object]] = []
    for family in ("-4", "-6"):
        out = ip(ns, "-j", "-d", family, "route", "show", *selector)
        found.extend(json.loads(out or "[]"))
    return found


def leftover_namespaces(prefix: str) -> list[str]:
    return netns.names(prefix)


__all__ = [
    "CLIENT_GW_V4",
    "CLIENT_GW_V6",
    "CLIENT_V4",
    "CLIENT_V6",
    "Node",
    "Pod",
    "build_node",
    "drain_udp",
    "family_of",
    "icmp_echo",
    "in_netns",
    "ip",
    "leftover_namespaces",
    "nsexec",
    "route_dump",
    "sh",
    "socket_in",
]
