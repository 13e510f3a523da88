"""The guard puts the program back when the CNI deletes/re-creates or replaces a route."""
from __future__ import annotations

import socket
import subprocess
import time

import pytest
from lwt_agent.route import RouteEngine, RouteIntent
from lwt_agent.route.guard import RouteGuard
from lwt_agent.route.model import Destination

from tests.route.programs import TestPrograms
from tests.topology import Node, ip

pytestmark = pytest.mark.kernel
BOUND_SECONDS = 1.0


def _wait_for_label(engine: RouteEngine, dst: str, label: str, limit: float) -> float | None:
    """Seconds until the route to ``dst`` carries ``label`` on out, or None after ``limit``."""
    start = time.monotonic()
    key = Destination.of(dst).key
    while (elapsed := time.monotonic() - start) < limit:
        for route in engine.routes({Destination.of(dst).version}):
            if route.dst.key == key and route.encap_labels.get("out") == label:
                return elapsed
        time.sleep(0.01)
    return None


def test_guard_reapplies_after_cni_churn(node: Node, programs: TestPrograms) -> None:
    pod = node.pods[0]
    ref = programs.out["drop_a"].ref("shop/web")
    intents = [RouteIntent(Destination.of(a), {"out": ref}) for a in (pod.ipv4, pod.ipv6)]
    listener = node.tcp_listen(pod.ns, pod.ipv4, 7001)
    with RouteEngine(node.host) as engine, RouteGuard(node.host, resync_seconds=60) as guard:
        engine.converge(intents, owners={"shop/web"})
        guard.set_desired(intents)
        time.sleep(0.1)  # the initial resync finds everything in place
        assert guard.reapplies == 0
        try:
            # Calico-style delete + re-create.
            ip(node.host, "route", "del", f"{pod.ipv4}/32", "dev", pod.host_if)
            ip(node.host, "route", "add", f"{pod.ipv4}/32", "dev", pod.host_if, "scope", "link")
            took = _wait_for_label(engine, pod.ipv4, ref.label, 3.0)
            assert took is not None and took < BOUND_SECONDS, took
            assert not node.tcp_connects(node.host, pod.ipv4, 7001, timeout=0.5)
            # kube-router-style replace without our encap (IPv6 this time).
            ip(node.host, "-6", "route", "replace", f"{pod.ipv6}/128", "dev", pod.host_if)
            took = _wait_for_label(engine, pod.ipv6, ref.label, 3.0)
            assert took is not None and took < BOUND_SECONDS, took
            assert guard.reapplies == 2
            assert guard.last_error is None
        finally:
            listener.close()


def test_guard_recreates_owned_route(bridge_node: Node, programs: TestPrograms) -> None:
    pod = bridge_node.pods[0]
    ref = programs.out["drop_a"].ref("shop/web")
    intents = [RouteIntent(Destination.of(pod.ipv4), {"out": ref})]
    with RouteEngine(bridge_node.host) as engine, RouteGuard(bridge_node.host) as guard:
        assert engine.converge(intents, owners={"shop/web"}).counts["create-owned"] == 1
        guard.set_desired(intents)
        ip(bridge_node.host, "route", "del", f"{pod.ipv4}/32")  # someone flushes it
        took = _wait_for_label(engine, pod.ipv4, ref.label, 3.0)
        assert took is not None and took < BOUND_SECONDS, took
        assert guard.reapplies == 1


def test_guard_resyncs_after_lost_events(node: Node, programs: TestPrograms) -> None:
    """Event overflow (ENOBUFS) must not lose a re-apply: the guard resyncs from a dump."""
    pod = node.pods[0]
    ref = programs.out["drop_a"].ref("shop/web")
    intents = [RouteIntent(Destination.of(pod.ipv4), {"out": ref})]
    with RouteEngine(node.host) as engine, RouteGuard(node.host, resync_seconds=60) as guard:
        engine.converge(intents, owners={"shop/web"})
        guard.set_desired(intents)
        time.sleep(0.1)
        resyncs = guard.resyncs
        guard._events.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # kernel minimum
        # A burst of unrelated route events around the CNI's delete + re-create.
        noise = "".join(f"route add 10.216.{i // 250}.{i % 250 + 1}/32 dev cali1\n"
                        for i in range(2000))
        script = (f"route del {pod.ipv4}/32 dev {pod.host_if}\n{noise}"
                  f"route add {pod.ipv4}/32 dev {pod.host_if} scope link\n")
        subprocess.run(["ip", "-n", node.host, "-batch", "-"], input=script, text=True,
                       check=True)
        took = _wait_for_label(engine, pod.ipv4, ref.label, 3.0)
        assert took is not None and took < BOUND_SECONDS, took
        assert guard.resyncs > resyncs  # it got there through a resync
