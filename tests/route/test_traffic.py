"""Real traffic through attached programs: out/in/xmit hooks, counters, detach, bridge CNI."""
from __future__ import annotations

import socket
import time

import pytest
from lwt_agent.route import RTPROT_LWT, RouteEngine

from tests.route.programs import TestPrograms
from tests.topology import Node, drain_udp, in_netns, ip, route_dump

pytestmark = pytest.mark.kernel


def test_out_drops_one_tcp_port_and_passes_another(node: Node, programs: TestPrograms) -> None:
    pod, other = node.pods
    listeners = [node.tcp_listen(p.ns, p.ipv4, port) for p in (pod, other) for port in (7001, 7003)]
    try:
        assert node.tcp_connects(node.host, pod.ipv4, 7001)
        with RouteEngine(node.host) as engine:
            engine.attach([pod.ipv4], "out", programs.out["drop_a"].ref())
        assert not node.tcp_connects(node.host, pod.ipv4, 7001, timeout=0.5)
        assert node.tcp_connects(node.host, pod.ipv4, 7003)
        assert node.tcp_connects(node.host, other.ipv4, 7001)  # other pod's route is plain
        assert node.tcp_connects(node.client, pod.ipv4, 7003)  # forwarded traffic passes too
        assert not node.tcp_connects(node.client, pod.ipv4, 7001, timeout=0.5)
    finally:
        for sock in listeners:
            sock.close()


def test_ipv6_out_drop(node: Node, programs: TestPrograms) -> None:
    pod = node.pods[0]
    listeners = [node.tcp_listen(pod.ns, pod.ipv6, port) for port in (7001, 7003)]
    try:
        assert node.tcp_connects(node.host, pod.ipv6, 7001)
        with RouteEngine(node.host) as engine:
            result = engine.attach([pod.ipv6], "out", programs.out["drop_a"].ref())
        assert result.counts["attach"] == 1
        assert not node.tcp_connects(node.host, pod.ipv6, 7001, timeout=0.5)
        assert node.tcp_connects(node.host, pod.ipv6, 7003)
        assert not node.tcp_connects(node.client, pod.ipv6, 7001, timeout=0.5)
    finally:
        for sock in listeners:
            sock.close()


def test_in_drops_forwarded_traffic_only(node: Node, programs: TestPrograms) -> None:
    pod, other = node.pods
    assert node.ping(node.client, pod.ipv4)
    with RouteEngine(node.host) as engine:
        engine.attach([pod.ipv4, pod.ipv6], "in", programs.in_["drop_all"].ref())
    assert not node.ping(node.client, pod.ipv4, timeout=0.5)
    assert not node.ping(node.client, pod.ipv6, timeout=0.5)
    assert node.ping(node.host, pod.ipv4)  # locally sent: output path, no `in` hook
    assert node.ping(node.client, other.ipv4)


def test_counters_equal_packets_sent(node: Node, programs: TestPrograms) -> None:
    pod, other = node.pods
    programs.reset_counts()
    with RouteEngine(node.host) as engine:
        result = engine.attach([pod.ipv4, other.ipv4], "out", programs.out["count"].ref())
    assert result.counts["attach"] == 2
    receivers = [node.udp_receiver(p.ns, p.ipv4, 7003) for p in (pod, other)]
    sender = node.udp_sender(node.host, pod.ipv4)
    try:
        for _ in range(25):
            sender.sendto(b"x", (pod.ipv4, 7003))
        for _ in range(10):
            sender.sendto(b"y", (other.ipv4, 7003))
        time.sleep(0.2)
        assert len(drain_udp(receivers[0])) == 25
        assert len(drain_udp(receivers[1])) == 10
        assert programs.count_for(pod.ipv4) == 25
        assert programs.count_for(other.ipv4) == 10
    finally:
        sender.close()
        for sock in receivers:
            sock.close()


def test_xmit_pushes_outer_header_seen_at_pod(node: Node, programs: TestPrograms) -> None:
    pod = node.pods[0]
    # The outer destination of route_push_ipip (10.213.99.2) lives in the pod, routed plainly.
    ip(pod.ns, "addr", "add", "10.213.99.2/32", "dev", "eth0")
    ip(node.host, "route", "add", "10.213.99.2/32", "dev", pod.host_if, "scope", "link")
    capture = in_netns(
        pod.ns, lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    )
    capture.bind(("eth0", 0))
    capture.settimeout(0.2)
    with RouteEngine(node.host) as engine:
        engine.attach([pod.ipv4], "xmit", programs.xmit.ref(), headroom=20)
    sender = node.udp_sender(node.host, pod.ipv4)
    try:
        for _ in range(3):
            sender.sendto(b"payload", (pod.ipv4, 7003))
        frames = []
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and len(frames) < 3:
            try:
                frame = capture.recv(2048)
            except TimeoutError:
                continue
            if frame[12:14] == b"\x08\x00" and frame[14 + 9] == 4:  # IPv4, protocol IPIP
                frames.append(frame)
        assert len(frames) == 3
        outer, inner = frames[0][14:34], frames[0][34:54]
        assert socket.inet_ntoa(outer[16:20]) == "10.213.99.2"
        assert socket.inet_ntoa(inner[16:20]) == pod.ipv4
        assert inner[9] == socket.IPPROTO_UDP
    finally:
        sender.close()
        capture.close()


def test_detach_restores_route_and_connectivity(node: Node, programs: TestPrograms) -> None:
    pod = node.pods[0]
    # Give the route attributes a CNI might set, to check every one survives.
    ip(node.host, "route", "replace", f"{pod.ipv4}/32", "dev", pod.host_if, "scope", "link",
       "proto", "80", "metric", "0", "src", "10.213.254.1", "mtu", "1400", "realm", "7")
    before = route_dump(node.host)
    listener = node.tcp_listen(pod.ns, pod.ipv4, 7001)
    try:
        with RouteEngine(node.host) as engine:
            engine.attach([pod.ipv4, pod.ipv6], "out", programs.out["drop_a"].ref())
            engine.attach([pod.ipv4], "in", programs.in_["drop_all"].ref())
            during = {r.dst.key: r for r in engine.routes()}
            attached = [r for r in during.values() if r.encap_labels]
            assert len(attached) == 2
            assert not node.tcp_connects(node.host, pod.ipv4, 7001, timeout=0.5)
            result = engine.detach([pod.ipv4, pod.ipv6])
        assert result.counts["detach"] == 2
        assert route_dump(node.host) == before
        assert node.tcp_connects(node.host, pod.ipv4, 7001)
        assert node.ping(node.client, pod.ipv4)
    finally:
        listener.close()


def test_bridge_cni_gets_owned_host_route(bridge_node: Node, programs: TestPrograms) -> None:
    node = bridge_node
    pod, other = node.pods
    before = route_dump(node.host)
    listeners = [node.tcp_listen(p.ns, p.ipv4, 7001) for p in (pod, other)]
    try:
        assert node.tcp_connects(node.host, pod.ipv4, 7001)
        with RouteEngine(node.host) as engine:
            result = engine.attach([pod.ipv4, pod.ipv6], "out", programs.out["drop_a"].ref())
            assert result.counts["create-owned"] == 2
            owned = [r for r in engine.routes() if r.owned]
            assert {str(r.dst) for r in owned} == {f"{pod.ipv4}/32", f"{pod.ipv6}/128"}
            links = engine.links()
            assert {links[r.oif] for r in owned} == {"br0"}
            assert all(r.protocol == RTPROT_LWT for r in owned)
            assert not node.tcp_connects(node.host, pod.ipv4, 7001, timeout=0.5)
            assert node.tcp_connects(node.host, other.ipv4, 7001)
            # Attaching again adopts the owned routes: nothing is sent.
            again = engine.attach([pod.ipv4, pod.ipv6], "out", programs.out["drop_a"].ref())
            assert again.counts["unchanged"] == 2 and again.changed == 0
            result = engine.detach([pod.ipv4, pod.ipv6])
            assert result.counts["delete-owned"] == 2
        assert route_dump(node.host) == before
        assert node.tcp_connects(node.host, pod.ipv4, 7001)
    finally:
        for sock in listeners:
            sock.close()


def test_detach_one_hook_keeps_the_other(node: Node, programs: TestPrograms) -> None:
    pod = node.pods[0]
    listener = node.tcp_listen(pod.ns, pod.ipv4, 7001)
    out_ref, in_ref = programs.out["drop_a"].ref(), programs.in_["drop_all"].ref()
    try:
        with RouteEngine(node.host) as engine:
            engine.attach([pod.ipv4], "out", out_ref)
            engine.attach([pod.ipv4], "in", in_ref)  # `out` is kept (re-opened by its id)
            (route,) = [r for r in engine.routes({4}) if str(r.dst) == f"{pod.ipv4}/32"]
            assert dict(route.encap_labels) == {"in": in_ref.label, "out": out_ref.label}
            assert engine.detach([pod.ipv4], ["in"]).counts["swap"] == 1
            (route,) = [r for r in engine.routes({4}) if str(r.dst) == f"{pod.ipv4}/32"]
            assert dict(route.encap_labels) == {"out": out_ref.label}
        assert node.ping(node.client, pod.ipv4)  # `in` drop-all gone
        assert not node.tcp_connects(node.host, pod.ipv4, 7001, timeout=0.5)  # `out` still on
    finally:
        listener.close()
