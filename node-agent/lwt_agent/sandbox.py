"""A sandbox node made of network namespaces, for the demo (and anyone trying the agent).

    with build_sandbox("lwtdemo", pods=[SandboxPod("shop", "web-0", {"app": "web"}), ...]) as box:
        box.host                 # the node's netns: pod routes live here
        box.pods[0].ipv4         # 10.77.1.1, inside the pod's own netns
        box.client               # a netns that reaches every pod through the host
        box.remote               # a netns the host routes to (a tunnel endpoint)
        box.pod_objects()        # the pods as Kubernetes Pod objects (for --pods-file)

Calico style: each pod has a veth pair ``caliN`` (host) / ``eth0`` (pod), a /32 and a /128
address, a default route via 169.254.1.1 (fe80::1) and, on the host, the route
``<pod ip>/32 dev caliN scope link``. Addresses (10.77.0.0/16, fd00:77::/32) exist only
inside these namespaces. Every namespace is removed on exit, also on errors and Ctrl-C.
The same ideas as tests/topology.py, which tests use; this module is shipped with the
agent so the demo does not depend on the test tree.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000

CLIENT_V4, CLIENT_GW_V4 = "10.77.254.2", "10.77.254.1"
CLIENT_V6, CLIENT_GW_V6 = "fd00:77:fe::2", "fd00:77:fe::1"
REMOTE_V4, REMOTE_GW_V4 = "10.77.253.2", "10.77.253.1"


class SandboxError(Exception):
    """A namespace could not be built (not root? iproute2 missing?)."""


def _run(*args: str, check: bool = True) -> str:
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=20)
    except FileNotFoundError as exc:
        raise SandboxError(f"{args[0]} not found: install iproute2") from exc
    if check and proc.returncode != 0:
        raise SandboxError(f"{' '.join(args)} failed: {proc.stderr.strip()} (run as root)")
    return proc.stdout


def ip(ns: str, *args: str, check: bool = True) -> str:
    return _run("ip", "-n", ns, *args, check=check)


def in_netns(ns: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` on this thread inside netns ``ns`` (sockets made there stay there)."""
    libc = ctypes.CDLL(None, use_errno=True)
    with open("/proc/thread-self/ns/net", "rb") as home, open(f"/run/netns/{ns}", "rb") as there:
        if libc.setns(there.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {ns}")
        try:
            return fn()
        finally:
            if libc.setns(home.fileno(), CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")


def socket_in(ns: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    return in_netns(ns, lambda: socket.socket(family, kind, proto))


def family_of(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


@dataclass(frozen=True)
class SandboxPod:
    """A pod to create: namespace, name and labels of its Pod object."""

    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass
class PodNetns:
    spec: SandboxPod
    ns: str
    host_if: str
    ipv4: str
    ipv6: str


@dataclass
class Sandbox:
    prefix: str
    node_name: str
    host: str
    client: str
    remote: str
    pods: list[PodNetns] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)

    def pod(self, name: str) -> PodNetns:
        return next(p for p in self.pods if p.spec.name == name)

    def pod_objects(self) -> dict[str, Any]:
        """The pods as a `v1 List` of Pod objects, as `kubectl get pods -o yaml` prints."""
        return {"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": p.spec.name, "namespace": p.spec.namespace,
                          "labels": dict(p.spec.labels)},
             "spec": {"nodeName": self.node_name, "containers": [{"name": "app",
                                                                   "image": "app"}]},
             "status": {"phase": "Running", "podIP": p.ipv4,
                        "podIPs": [{"ip": p.ipv4}, {"ip": p.ipv6}]}}
            for p in self.pods]}

    def node_object(self, labels: Mapping[str, str]) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.node_name, "labels": dict(labels)},
                "spec": {"podCIDRs": ["10.77.1.0/24", "fd00:77:1::/64"]}}

    # --- traffic -------------------------------------------------------------------------

    def tcp_listen(self, pod: PodNetns, port: int) -> socket.socket:
        sock = socket_in(pod.ns, socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((pod.ipv4, port))
        sock.listen(64)
        return sock

    def tcp_connects(self, dst: str, port: int, timeout: float = 0.5) -> bool:
        """A TCP handshake from the client to dst:port completes."""
        sock = socket_in(self.client, family_of(dst), socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect((dst, port))
            return True
        except OSError:
            return False
        finally:
            sock.close()

    def udp_send(self, dst: str, port: int, count: int, size: int = 100) -> None:
        sock = socket_in(self.client, family_of(dst), socket.SOCK_DGRAM)
        try:
            for _ in range(count):
                with contextlib.suppress(OSError):  # EPERM when an `out` program drops
                    sock.sendto(bytes(size), (dst, port))
        finally:
            sock.close()

    def udp_receiver(self, ns: str, address: str, port: int) -> socket.socket:
        sock = socket_in(ns, family_of(address), socket.SOCK_DGRAM)
        sock.bind((address, port))
        sock.setblocking(False)
        return sock


def drain(sock: socket.socket) -> list[bytes]:
    """Every datagram already waiting on a non-blocking socket."""
    got: list[bytes] = []
    while True:
        try:
            got.append(sock.recv(65535))
        except BlockingIOError:
            return got


def _new_ns(name: str, created: list[str]) -> str:
    _run("ip", "netns", "add", name)
    created.append(name)
    ip(name, "link", "set", "lo", "up")
    _run("ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0")
    _run("ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0")
    return name


def _veth(host: str, host_if: str, peer_ns: str) -> None:
    ip(host, "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", peer_ns)


def _add_pod(box: Sandbox, index: int, spec: SandboxPod) -> PodNetns:
    ns = _new_ns(f"{box.prefix}-p{index}", box.namespaces)
    pod = PodNetns(spec, ns, f"cali{index}", f"10.77.1.{index + 1}", f"fd00:77:1::{index + 1}")
    _veth(box.host, pod.host_if, ns)
    ip(box.host, "addr", "add", "169.254.1.1/32", "dev", pod.host_if, "scope", "link")
    ip(box.host, "addr", "add", "fe80::1/64", "dev", pod.host_if, "nodad")
    ip(box.host, "link", "set", pod.host_if, "up")
    ip(ns, "addr", "add", f"{pod.ipv4}/32", "dev", "eth0")
    ip(ns, "-6", "addr", "add", f"{pod.ipv6}/128", "dev", "eth0", "nodad")
    ip(ns, "link", "set", "eth0", "up")
    ip(ns, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
    ip(ns, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
    ip(ns, "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0")
    ip(box.host, "route", "add", f"{pod.ipv4}/32", "dev", pod.host_if, "scope", "link")
    ip(box.host, "-6", "route", "add", f"{pod.ipv6}/128", "dev", pod.host_if)
    return pod


def _add_peer(box: Sandbox, ns: str, host_if: str, v4: str, gw4: str,
              v6: str | None = None, gw6: str | None = None) -> None:
    _veth(box.host, host_if, ns)
    ip(box.host, "addr", "add", f"{gw4}/24", "dev", host_if)
    ip(box.host, "link", "set", host_if, "up")
    ip(ns, "addr", "add", f"{v4}/24", "dev", "eth0")
    ip(ns, "link", "set", "eth0", "up")
    ip(ns, "route", "add", "default", "via", gw4)
    if v6 and gw6:
        ip(box.host, "-6", "addr", "add", f"{gw6}/64", "dev", host_if, "nodad")
        ip(ns, "-6", "addr", "add", f"{v6}/64", "dev", "eth0", "nodad")
        ip(ns, "-6", "route", "add", "default", "via", gw6)


@contextlib.contextmanager
def build_sandbox(prefix: str, pods: Sequence[SandboxPod],
                  node_name: str = "sandbox-node") -> Iterator[Sandbox]:
    """Build host, pods, a client and a remote; everything is removed on exit."""
    name = f"{prefix}{uuid.uuid4().hex[:6]}"
    box = Sandbox(prefix=name, node_name=node_name, host=f"{name}-host",
                  client=f"{name}-cl", remote=f"{name}-rm")
    try:
        _new_ns(box.host, box.namespaces)
        for key in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"):
            _run("ip", "netns", "exec", box.host, "sysctl", "-qw", key)
        for index, spec in enumerate(pods):
            box.pods.append(_add_pod(box, index, spec))
        _new_ns(box.client, box.namespaces)
        _add_peer(box, box.client, "cl0", CLIENT_V4, CLIENT_GW_V4, CLIENT_V6, CLIENT_GW_V6)
        _new_ns(box.remote, box.namespaces)
        _add_peer(box, box.remote, "rm0", REMOTE_V4, REMOTE_GW_V4)
        yield box
    finally:
        remove_namespaces(box.namespaces)


def remove_namespaces(names: Sequence[str]) -> None:
    for ns in reversed(names):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def host_routes(box: Sandbox) -> str:
    """`ip route` of the host (both families), for showing what the agent attached."""
    return ip(box.host, "route") + ip(box.host, "-6", "route", "show", "proto", "boot")


def leftover_namespaces(prefix: str) -> list[str]:
    out = _run("ip", "netns", "list")
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix)]


def os_is_root() -> bool:
    return os.geteuid() == 0
