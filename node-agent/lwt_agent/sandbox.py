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
Built from the primitives of `lwt_agent.netns`, as tests/topology.py is; this module ships
with the agent so the demo does not depend on the test tree.
"""
from __future__ import annotations

import contextlib
import socket
import subprocess
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lwt_agent.netns import (
    Namespaces,
    Netns,
    NetnsError,
    calico_pod,
    drain,
    family_of,
    routed_link,
    socket_in,
    tcp_connects,
    tcp_listen,
    udp_receiver,
)

CLIENT_V4, CLIENT_GW_V4 = "10.77.254.2", "10.77.254.1"
CLIENT_V6, CLIENT_GW_V6 = "fd00:77:fe::2", "fd00:77:fe::1"
REMOTE_V4, REMOTE_GW_V4 = "10.77.253.2", "10.77.253.1"


class SandboxError(Exception):
    """A namespace could not be built (not root? iproute2 missing?)."""


def ip(ns: str, *args: str, check: bool = True) -> str:
    """`ip -n NS ARGS` output, for showing what the agent did the way an operator sees it."""
    try:
        proc = subprocess.run(["ip", "-n", ns, *args], capture_output=True, text=True,
                              timeout=20)
    except FileNotFoundError as exc:
        raise SandboxError("ip not found: install iproute2") from exc
    if check and proc.returncode != 0:
        raise SandboxError(f"ip -n {ns} {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


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
        return tcp_listen(pod.ns, pod.ipv4, port)

    def tcp_connects(self, dst: str, port: int, timeout: float = 0.5) -> bool:
        """A TCP handshake from the client to dst:port completes."""
        return tcp_connects(self.client, dst, port, timeout)

    def udp_send(self, dst: str, port: int, count: int, size: int = 100) -> None:
        sock = socket_in(self.client, family_of(dst), socket.SOCK_DGRAM)
        try:
            for _ in range(count):
                with contextlib.suppress(OSError):  # EPERM when an `out` program drops
                    sock.sendto(bytes(size), (dst, port))
        finally:
            sock.close()

    def udp_receiver(self, ns: str, address: str, port: int) -> socket.socket:
        return udp_receiver(ns, address, port)


def _add_pod(nets: Namespaces, host: Netns, index: int, spec: SandboxPod) -> PodNetns:
    net = nets.add(f"p{index}")
    pod = PodNetns(spec, net.name, f"cali{index}", f"10.77.1.{index + 1}",
                   f"fd00:77:1::{index + 1}")
    calico_pod(host, net, pod.host_if, [pod.ipv4, pod.ipv6])
    return pod


@contextlib.contextmanager
def build_sandbox(prefix: str, pods: Sequence[SandboxPod],
                  node_name: str = "sandbox-node") -> Iterator[Sandbox]:
    """Build host, pods, a client and a remote; everything is removed on exit."""
    name = f"{prefix}{uuid.uuid4().hex[:6]}"
    box = Sandbox(prefix=name, node_name=node_name, host=f"{name}-host",
                  client=f"{name}-cl", remote=f"{name}-rm")
    with Namespaces(name) as nets:
        try:
            host = nets.add("host")
            host.enable_forwarding()
            box.pods.extend(_add_pod(nets, host, i, spec) for i, spec in enumerate(pods))
            routed_link(host, nets.add("cl"), "cl0", [f"{CLIENT_GW_V4}/24", f"{CLIENT_GW_V6}/64"],
                        [f"{CLIENT_V4}/24", f"{CLIENT_V6}/64"])
            routed_link(host, nets.add("rm"), "rm0", [f"{REMOTE_GW_V4}/24"], [f"{REMOTE_V4}/24"])
        except (NetnsError, OSError) as exc:
            raise SandboxError(f"cannot build the sandbox node: {exc} (run as root)") from exc
        box.namespaces = nets.names
        yield box


__all__ = [
    "CLIENT_GW_V4",
    "CLIENT_GW_V6",
    "CLIENT_V4",
    "CLIENT_V6",
    "REMOTE_GW_V4",
    "REMOTE_V4",
    "PodNetns",
    "Sandbox",
    "SandboxError",
    "SandboxPod",
    "build_sandbox",
    "drain",
    "family_of",
    "ip",
    "socket_in",
]
