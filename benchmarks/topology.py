"""The benchmark's node, built from network namespaces.

    client ──veth── host (forwards) ──veth── pod B   (the measured pod)
                      │  └──────────veth──── pod A   (pod-to-pod traffic comes from here)
                      └── oth0: the device of every "other pod" route (scale scenarios)

Pods are wired the Calico way: the pod has 10.244.0.x/32 on eth0 and a default route via
169.254.1.1; the host has a `/32 dev cali… scope link` route per pod. That /32 in the host
namespace is the route our programs ride on (`MEASURED_ROUTE`). The other pods of the scale
scenarios are /32 routes of the same shape on one veth (`oth0`): the per-packet cost of a
route does not depend on how many devices carry the others, and 10,000 veths would only make
the set-up slow.

Namespaces are named `lwtX-<pid>-<random>-<role>` and built from the primitives of
`lwt_agent.netns`; `BenchNode.close()` deletes them (and with them every route, rule, set
and tc filter inside) and `reap_stale()` deletes those a killed earlier run left behind
(only when their pid is gone), with the processes in them.
"""
from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lwt_agent import netns
from lwt_agent.netns import CALICO_GATEWAYS, Namespaces, Netns, calico_pod, routed_link

from benchmarks import shell
from benchmarks.errors import BenchError

NETNS_PREFIX = "lwtX"

GATEWAY_IP = CALICO_GATEWAYS[0]  # the pods' next hop: a local address of every cali* veth
CLIENT_IP = "192.168.100.2"
HOST_EXT_IP = "192.168.100.1"
POD_B_IP = "10.244.0.2"
POD_A_IP = "10.244.0.3"
POD_B_HOST_DEV = "calib"
POD_A_HOST_DEV = "calia"
CLIENT_HOST_DEV = "ext0"
OTHER_PODS_DEV = "oth0"
OTHER_PODS_NET = ipaddress.ip_network("10.245.0.0/16")

MEASURED_ROUTE = f"{POD_B_IP}/32"


@dataclass(frozen=True)
class TrafficPath:
    """Who sends to the measured pod: a client forwarded by the host, or another pod."""

    name: str
    sender_netns: str
    title: str


class BenchNode:
    """Creates the namespaces on construction; `close()` removes everything."""

    def __init__(self) -> None:
        shell.require_tools("ip")
        self._nets = Namespaces(f"{NETNS_PREFIX}-{os.getpid()}-{secrets.token_hex(3)}")
        self.other_pods = 0
        try:
            host, client, pod_a, pod_b = (self._nets.add(r)
                                          for r in ("host", "cli", "poda", "podb"))
            self.host, self.client, self.pod_a, self.pod_b = (
                host.name, client.name, pod_a.name, pod_b.name)
            self._wire(host, client, pod_a, pod_b)
        except BaseException:
            self.close()
            raise

    @property
    def paths(self) -> tuple[TrafficPath, ...]:
        return (
            TrafficPath("client-to-pod", self.client, "client → host (forwarding) → pod"),
            TrafficPath("pod-to-pod", self.pod_a, "pod → host → pod"),
        )

    def path(self, name: str) -> TrafficPath:
        for p in self.paths:
            if p.name == name:
                return p
        raise BenchError(f"unknown traffic path {name!r}; known: {[p.name for p in self.paths]}")

    @staticmethod
    def _wire(host: Netns, client: Netns, pod_a: Netns, pod_b: Netns) -> None:
        host.sysctl("net.ipv4.ip_forward", 1)
        host.disable_rp_filter()
        # client <-> host: an ordinary routed link
        routed_link(host, client, CLIENT_HOST_DEV, [f"{HOST_EXT_IP}/24"], [f"{CLIENT_IP}/24"])
        calico_pod(host, pod_b, POD_B_HOST_DEV, [POD_B_IP])
        calico_pod(host, pod_a, POD_A_HOST_DEV, [POD_A_IP])
        # the device the other pods' routes point at: both ends stay in the host namespace
        host.veth(OTHER_PODS_DEV, "oth1")

    # -- other pods (scale scenarios) ----------------------------------------------------------

    @staticmethod
    def other_pod_ips(count: int) -> Iterator[str]:
        hosts = OTHER_PODS_NET.hosts()
        for _ in range(count):
            yield str(next(hosts))

    def set_other_pods(self, count: int) -> None:
        """Makes exactly `count` plain other-pod /32 routes exist in the host namespace."""
        if count == self.other_pods:
            return
        shell.run(["ip", "-n", self.host, "route", "flush", "dev", OTHER_PODS_DEV],
                  check=False)
        if count:
            batch = "".join(
                f"route add {ip}/32 dev {OTHER_PODS_DEV} scope link\n"
                for ip in self.other_pod_ips(count)
            )
            shell.run(["ip", "-n", self.host, "-batch", "-"], input_text=batch)
        self.other_pods = count

    def measured_route_dump(self) -> str:
        return shell.run(["ip", "-n", self.host, "route", "show", MEASURED_ROUTE]).stdout

    # -- teardown ------------------------------------------------------------------------------

    def close(self) -> None:
        shell.stop_all()
        self._nets.close()


_STALE = re.compile(rf"^{NETNS_PREFIX}-(\d+)-[0-9a-f]+-\w+$")


def reap_stale() -> list[str]:
    """Deletes benchmark namespaces whose creating process no longer exists."""
    removed = []
    for name in netns.names(NETNS_PREFIX):
        m = _STALE.match(name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            # processes a killed run left inside its namespaces (traffic servers) go first
            for pid in netns.pids(name):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            netns.remove(name)
            removed.append(name)
    return removed
