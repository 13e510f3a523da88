"""A small node built out of network namespaces for the built-in program tests.

    client (C) --veth-- host (H) --veth-- pod (P)
                          |
                          +------veth---- remote (R)   (the encap tunnel endpoint)

H forwards between C and P; the route to the pod is a Calico-style `/32 dev hp scope link`
(and `/128` for IPv6) that the tests create with an LWT program on it. Namespace names are
`lwtB` + a role letter + a random suffix; `close()` deletes them all (and with them every
veth, route and the programs those routes held).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def sh(*args: str, check: bool = True, env: dict[str, str] | None = None
       ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): "
                           f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Runs the body (this thread only) in network namespace `name`: sockets created in it
    stay in that namespace after the block."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
        try:
            yield
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns(back): {os.strerror(err)}")
    finally:
        os.close(target)
        os.close(own)


@dataclass
class Node:
    client: str
    host: str
    pod: str
    remote: str
    namespaces: list[str] = field(default_factory=list)

    # addresses
    CLIENT4 = "10.201.1.2"
    HOST_C4 = "10.201.1.1"
    POD4 = "10.201.2.2"
    HOST_P4 = "10.201.2.1"
    REMOTE4 = "10.201.3.2"
    HOST_R4 = "10.201.3.1"
    CLIENT6 = "fd00:201:1::2"
    HOST_C6 = "fd00:201:1::1"
    POD6 = "fd00:201:2::2"
    HOST_P6 = "fd00:201:2::1"
    REMOTE6 = "fd00:201:3::2"
    HOST_R6 = "fd00:201:3::1"
    POD_DEV = "hp"      # host side of the pod veth: the device of the pod routes
    REMOTE_DEV = "r0"   # remote side of the host<->remote veth (capture here)

    def ip(self, ns: str, *args: str, env: dict[str, str] | None = None,
           check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "-n", ns, *args, env=env, check=check)

    def close(self) -> None:
        for ns in self.namespaces:
            sh("ip", "netns", "del", ns, check=False)
        self.namespaces.clear()


def _sysctl(ns: str, key: str, value: str) -> None:
    sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"{key}={value}")


def build_node() -> Node:
    suffix = secrets.token_hex(3)
    node = Node(client=f"lwtBc{suffix}", host=f"lwtBh{suffix}", pod=f"lwtBp{suffix}",
                remote=f"lwtBr{suffix}")
    try:
        for ns in (node.client, node.host, node.pod, node.remote):
            sh("ip", "netns", "add", ns)
            node.namespaces.append(ns)
            # no duplicate address detection: addresses are usable at once
            _sysctl(ns, "net.ipv6.conf.default.accept_dad", "0")
            _sysctl(ns, "net.ipv6.conf.all.accept_dad", "0")
            node.ip(ns, "link", "set", "lo", "up")
        _sysctl(node.host, "net.ipv4.ip_forward", "1")
        _sysctl(node.host, "net.ipv6.conf.all.forwarding", "1")
        for ns in (node.host, node.pod):
            _sysctl(ns, "net.ipv4.conf.all.rp_filter", "0")
            _sysctl(ns, "net.ipv4.conf.default.rp_filter", "0")

        h, c, p, r = node.host, node.client, node.pod, node.remote
        node.ip(h, "link", "add", "hc", "type", "veth", "peer", "name", "c0", "netns", c)
        node.ip(h, "link", "add", "hp", "type", "veth", "peer", "name", "p0", "netns", p)
        node.ip(h, "link", "add", "hr", "type", "veth", "peer", "name", "r0", "netns", r)

        def addr(ns: str, dev: str, *cidrs: str) -> None:
            for cidr in cidrs:
                extra = ("nodad",) if ":" in cidr else ()
                node.ip(ns, "addr", "add", cidr, "dev", dev, *extra)
            node.ip(ns, "link", "set", dev, "up")

        addr(h, "hc", f"{node.HOST_C4}/24", f"{node.HOST_C6}/64")
        addr(c, "c0", f"{node.CLIENT4}/24", f"{node.CLIENT6}/64")
        addr(h, "hp", f"{node.HOST_P4}/32", f"{node.HOST_P6}/128")
        addr(p, "p0", f"{node.POD4}/32", f"{node.POD6}/128")
        addr(h, "hr", f"{node.HOST_R4}/24", f"{node.HOST_R6}/64")
        addr(r, "r0", f"{node.REMOTE4}/24", f"{node.REMOTE6}/64")

        node.ip(c, "route", "add", "default", "via", node.HOST_C4)
        node.ip(c, "-6", "route", "add", "default", "via", node.HOST_C6)
        node.ip(p, "route", "add", node.HOST_P4, "dev", "p0", "scope", "link")
        node.ip(p, "route", "add", "default", "via", node.HOST_P4, "dev", "p0")
        node.ip(p, "-6", "route", "add", node.HOST_P6, "dev", "p0")
        node.ip(p, "-6", "route", "add", "default", "via", node.HOST_P6, "dev", "p0")
        node.ip(r, "route", "add", "default", "via", node.HOST_R4)
        node.ip(r, "-6", "route", "add", "default", "via", node.HOST_R6)
    except BaseException:
        node.close()
        raise
    return node
