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

Namespaces are named `lwtX-<pid>-<random>-<role>`; `BenchNode.close()` deletes them (and
with them every route, rule, set and tc filter inside) and `reap_stale()` deletes those a
killed earlier run left behind (only when their pid is gone), with the processes in them.
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

from benchmarks import shell
from benchmarks.errors import BenchError

NETNS_PREFIX = "lwtX"
NETNS_DIR = Path("/run/netns")

GATEWAY_IP = "169.254.1.1"  # the pods' next hop: a local address of every cali* host veth
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
        tag = f"{NETNS_PREFIX}-{os.getpid()}-{secrets.token_hex(3)}"
        self.host = f"{tag}-host"
        self.client = f"{tag}-cli"
        self.pod_a = f"{tag}-poda"
        self.pod_b = f"{tag}-podb"
        self._created: list[str] = []
        self.other_pods = 0
        try:
            for name in (self.host, self.client, self.pod_a, self.pod_b):
                shell.run(["ip", "netns", "add", name])
                self._created.append(name)
            self._wire()
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

    def _wire(self) -> None:
        host = self.host
        for name in self._created:
            shell.run(["ip", "-n", name, "link", "set", "lo", "up"])
        sysctl = ["sysctl", "-q", "-w"]
        shell.run(
            [*sysctl, "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0",
             "net.ipv4.conf.default.rp_filter=0"],
            netns=host,
        )
        # client <-> host: an ordinary routed link
        self._veth(CLIENT_HOST_DEV, host, "eth0", self.client)
        shell.run(["ip", "-n", host, "addr", "add", f"{HOST_EXT_IP}/24", "dev", CLIENT_HOST_DEV])
        shell.run(["ip", "-n", self.client, "addr", "add", f"{CLIENT_IP}/24", "dev", "eth0"])
        shell.run(["ip", "-n", self.client, "route", "add", "default", "via", HOST_EXT_IP])
        # pods: Calico style
        self._pod(self.pod_b, POD_B_HOST_DEV, POD_B_IP)
        self._pod(self.pod_a, POD_A_HOST_DEV, POD_A_IP)
        # the device the other pods' routes point at: both ends stay in the host namespace
        shell.run(["ip", "-n", host, "link", "add", OTHER_PODS_DEV, "type", "veth",
                   "peer", "name", "oth1"])
        for dev in (OTHER_PODS_DEV, "oth1"):
            shell.run(["ip", "-n", host, "link", "set", dev, "up"])

    def _veth(self, host_dev: str, host: str, peer_dev: str, peer_netns: str) -> None:
        shell.run(["ip", "-n", host, "link", "add", host_dev, "type", "veth",
                   "peer", "name", peer_dev, "netns", peer_netns])
        shell.run(["ip", "-n", host, "link", "set", host_dev, "up"])
        shell.run(["ip", "-n", peer_netns, "link", "set", peer_dev, "up"])

    def _pod(self, pod: str, host_dev: str, pod_ip: str) -> None:
        self._veth(host_dev, self.host, "eth0", pod)
        shell.run(["ip", "-n", pod, "addr", "add", f"{pod_ip}/32", "dev", "eth0"])
        shell.run(["ip", "-n", pod, "route", "add", GATEWAY_IP, "dev", "eth0", "scope", "link"])
        shell.run(["ip", "-n", pod, "route", "add", "default", "via", GATEWAY_IP, "dev", "eth0"])
        shell.run(["ip", "-n", self.host, "addr", "add", f"{GATEWAY_IP}/32", "dev", host_dev,
                   "noprefixroute"])
        shell.run(["ip", "-n", self.host, "route", "add", f"{pod_ip}/32", "dev", host_dev,
                   "scope", "link"])

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
        for name in reversed(self._created):
            shell.run(["ip", "netns", "del", name], check=False)
        self._created.clear()


_STALE = re.compile(rf"^{NETNS_PREFIX}-(\d+)-[0-9a-f]+-\w+$")


def reap_stale() -> list[str]:
    """Deletes benchmark namespaces whose creating process no longer exists."""
    removed = []
    if not NETNS_DIR.is_dir():
        return removed
    for entry in NETNS_DIR.iterdir():
        m = _STALE.match(entry.name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            # processes a killed run left inside its namespaces (traffic servers) go first
            pids = shell.run(["ip", "netns", "pids", entry.name], check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            shell.run(["ip", "netns", "del", entry.name], check=False)
            removed.append(entry.name)
    return removed
