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
Traffic helpers create sockets inside a namespace from this process (setns on the calling
thread), so tests need no helper processes (not even ``ping``).
"""
from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from lwt_agent.sandbox import drain as drain_udp
from lwt_agent.sandbox import family_of, in_netns, socket_in

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
    return sh("ip", "netns", "exec", ns, *args, check=check, timeout=timeout)


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
    namespaces: list[str] = field(default_factory=list)

    # --- traffic -------------------------------------------------------------------------

    def ping(self, src_ns: str, dst: str, count: int = 1, timeout: float = 1.0) -> bool:
        """True when every ICMP echo got its reply (raw ICMP sockets: no ping binary needed)."""
        return icmp_echo(src_ns, dst, count, timeout) == count

    def tcp_listen(self, ns: str, address: str, port: int) -> socket.socket:
        sock = socket_in(ns, family_of(address), socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(64)
        return sock

    def tcp_connects(self, src_ns: str, dst: str, port: int, timeout: float = 1.0) -> bool:
        """True when a TCP handshake to dst:port completes from src_ns."""
        sock = socket_in(src_ns, family_of(dst), socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect((dst, port))
            return True
        except OSError:
            return False
        finally:
            sock.close()

    def udp_receiver(self, ns: str, address: str, port: int) -> socket.socket:
        sock = socket_in(ns, family_of(address), socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind((address, port))
        sock.setblocking(False)
        return sock

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


def _new_ns(name: str, created: list[str]) -> str:
    sh("ip", "netns", "add", name)
    created.append(name)
    ip(name, "link", "set", "lo", "up")
    for key in ("net.ipv6.conf.all.accept_dad", "net.ipv6.conf.default.accept_dad"):
        nsexec(name, "sysctl", "-qw", f"{key}=0")
    return name


def _add_calico_pod(node: Node, index: int) -> Pod:
    ns = _new_ns(f"{node.prefix}-p{index}", node.namespaces)
    host_if = f"cali{index}"
    pod = Pod(ns, host_if, f"10.213.1.{index + 1}", f"fd00:213:1::{index + 1}")
    ip(node.host, "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns)
    # Calico answers the pods' 169.254.1.1 gateway by proxy ARP off its default route; this
    # host has no default route, so it owns the gateway address on every caliN instead.
    ip(node.host, "addr", "add", "169.254.1.1/32", "dev", host_if, "scope", "link")
    ip(node.host, "addr", "add", "fe80::1/64", "dev", host_if, "nodad")
    ip(node.host, "link", "set", host_if, "up")
    ip(ns, "addr", "add", f"{pod.ipv4}/32", "dev", "eth0")
    ip(ns, "-6", "addr", "add", f"{pod.ipv6}/128", "dev", "eth0", "nodad")
    ip(ns, "link", "set", "eth0", "up")
    ip(ns, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
    ip(ns, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
    ip(ns, "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0")
    ip(node.host, "route", "add", f"{pod.ipv4}/32", "dev", host_if, "scope", "link")
    ip(node.host, "-6", "route", "add", f"{pod.ipv6}/128", "dev", host_if)
    return pod


def _add_bridge_pod(node: Node, index: int) -> Pod:
    ns = _new_ns(f"{node.prefix}-p{index}", node.namespaces)
    host_if = f"veth{index}"
    pod = Pod(ns, host_if, f"10.213.2.{index + 10}", f"fd00:213:2::{index + 10}")
    ip(node.host, "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns)
    ip(node.host, "link", "set", host_if, "master", "br0", "up")
    ip(ns, "addr", "add", f"{pod.ipv4}/24", "dev", "eth0")
    ip(ns, "-6", "addr", "add", f"{pod.ipv6}/64", "dev", "eth0", "nodad")
    ip(ns, "link", "set", "eth0", "up")
    ip(ns, "route", "add", "default", "via", "10.213.2.1")
    ip(ns, "-6", "route", "add", "default", "via", "fd00:213:2::1")
    return pod


def _add_client(node: Node) -> None:
    ns = node.client
    ip(node.host, "link", "add", "cl0", "type", "veth", "peer", "name", "eth0", "netns", ns)
    ip(node.host, "addr", "add", f"{CLIENT_GW_V4}/24", "dev", "cl0")
    ip(node.host, "-6", "addr", "add", f"{CLIENT_GW_V6}/64", "dev", "cl0", "nodad")
    ip(node.host, "link", "set", "cl0", "up")
    ip(ns, "addr", "add", f"{CLIENT_V4}/24", "dev", "eth0")
    ip(ns, "-6", "addr", "add", f"{CLIENT_V6}/64", "dev", "eth0", "nodad")
    ip(ns, "link", "set", "eth0", "up")
    ip(ns, "route", "add", "default", "via", CLIENT_GW_V4)
    ip(ns, "-6", "route", "add", "default", "via", CLIENT_GW_V6)


@contextlib.contextmanager
def build_node(prefix: str, pods: int = 2, bridge: bool = False) -> Iterator[Node]:
    """Build a node (host, ``pods`` pods, a client); everything is removed on exit."""
    name = f"{prefix}{uuid.uuid4().hex[:6]}"
    node = Node(prefix=name, host=f"{name}-host", client=f"{name}-cl", bridge=bridge)
    try:
        _new_ns(node.host, node.namespaces)
        _new_ns(node.client, node.namespaces)
        for key in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"):
            nsexec(node.host, "sysctl", "-qw", f"{key}=1")
        if bridge:
            ip(node.host, "link", "add", "br0", "type", "bridge")
            ip(node.host, "addr", "add", "10.213.2.1/24", "dev", "br0")
            ip(node.host, "-6", "addr", "add", "fd00:213:2::1/64", "dev", "br0", "nodad")
            ip(node.host, "link", "set", "br0", "up")
        for index in range(pods):
            node.pods.append(
                _add_bridge_pod(node, index) if bridge else _add_calico_pod(node, index)
            )
        _add_client(node)
        yield node
    finally:
        for ns in reversed(node.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def route_dump(ns: str, *selector: str) -> list[dict[str, object]]:
    """`ip -j -d route show` (both families), for comparing routes before/after."""
    import json

    found: list[dict[str, object]] = []
    for family in ("-4", "-6"):
        out = ip(ns, "-j", "-d", family, "route", "show", *selector)
        found.extend(json.loads(out or "[]"))
    return found


def leftover_namespaces(prefix: str) -> list[str]:
    out = sh("ip", "netns", "list")
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix)]


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
