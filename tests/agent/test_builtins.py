"""Standalone agent, end to end with real traffic, one test per built-in behaviour.

Each test writes policy and pod files, runs `lwt-agent run` as a process against a
topology node (client -> host -> pods), sends traffic from the client and reads the
agent's status (stdout), log (samples) and /metrics.
"""
from __future__ import annotations

import signal
import socket
import struct
import time

from tests.agent.harness import (
    AgentProcess,
    builtin_hook,
    encap_labels,
    pod_objects,
    policy,
    remote_endpoint,
    wait_for,
    write_docs,
)
from tests.topology import Node, drain_udp

WEB, DB, LEGACY = {"app": "web"}, {"app": "db"}, {"app": "legacy"}


def _udp(node: Node, dst: str, count: int, port: int = 7000) -> None:
    sender = node.udp_sender(node.client, dst)
    try:
        for _ in range(count):
            sender.sendto(b"x" * 64, (dst, port))
    finally:
        sender.close()


def test_every_builtin_with_real_traffic(agent: AgentProcess, node: Node) -> None:
    """port-filter drops and counts, counters count exactly, sampler samples arrive, encap
    packets show up on the wire at the tunnel endpoint: all from one agent, one program
    per (policy, hook) shared by every route."""
    with remote_endpoint(node) as remote:
        write_docs(agent.pods, pod_objects(node, [WEB, DB, LEGACY]))
        write_docs(agent.policies, [
            policy("deny", {"out": builtin_hook("port-filter", {"denyTCPPorts": [8080]})},
                   selector={"matchLabels": WEB}),
            policy("count", {"in": builtin_hook("counters")}, selector={"matchLabels": DB}),
            policy("sample", {"out": builtin_hook("sampler", {"oneIn": 1, "snapLength": 64})},
                   selector={"matchLabels": DB}),
            policy("tunnel", {"xmit": builtin_hook(
                "encap", {"remote": "10.213.253.2", "source": "10.213.253.1", "mode": "udp",
                          "udpPort": 5555}, headroom=28)}, selector={"matchLabels": LEGACY},
                   failurePolicy="FailClosed"),
        ])
        agent.start()
        for name in ("deny", "count", "sample", "tunnel"):
            entry = agent.wait_ready(f"shop/{name}")
            assert entry["routes"] == 2  # IPv4 + IPv6 of one pod

        web, db, legacy = node.pods
        # port-filter: 8080 dropped, 80 passes; counted per pod
        listeners = [node.tcp_listen(web.ns, web.ipv4, p) for p in (80, 8080)]
        try:
            assert node.tcp_connects(node.client, web.ipv4, 80)
            assert not node.tcp_connects(node.client, web.ipv4, 8080, timeout=0.5)
        finally:
            for sock in listeners:
                sock.close()
        assert agent.metric("lwt_route_dropped_packets_total", policy="deny",
                            pod_namespace="shop", pod_name="pod-0") >= 1
        assert agent.metric("lwt_route_packets_total", policy="deny",
                            pod_namespace="shop", pod_name="pod-0") >= 3

        # counters (in) and sampler (out) on the db pod: 25 UDP datagrams
        rx = node.udp_receiver(db.ns, db.ipv4, 7000)
        try:
            _udp(node, db.ipv4, 25)
            time.sleep(0.3)
            assert len(drain_udp(rx)) == 25  # counting and sampling drop nothing
        finally:
            rx.close()
        wait_for(lambda: agent.metric("lwt_agent_samples_total", policy="sample") == 25, 5,
                 "25 samples")
        pod1 = {"policy": "count", "pod_namespace": "shop", "pod_name": "pod-1"}
        assert agent.metric("lwt_route_packets_total", **pod1) == 25
        assert agent.metric("lwt_route_bytes_total", **pod1) == 25 * (20 + 8 + 64)
        # the length histogram: 92-byte packets are in (63, 127], as a Prometheus histogram
        length = "lwt_route_packet_length_bytes"
        assert agent.metric(f"{length}_bucket", le="63.0", **pod1) == 0
        assert agent.metric(f"{length}_bucket", le="127.0", **pod1) == 25
        assert agent.metric(f"{length}_bucket", le="+Inf", **pod1) == 25
        assert agent.metric(f"{length}_count", **pod1) == 25
        assert agent.metric(f"{length}_sum", **pod1) == 25 * (20 + 8 + 64)
        samples = [line for line in agent.log().splitlines() if '"event": "sample"' in line]
        assert len(samples) == 25
        assert f'"dst": "{db.ipv4}"' in samples[0] and '"dstPort": 7000' in samples[0]
        assert '"pod": "shop/pod-1"' in samples[0]

        # encap: the datagrams to the legacy pod arrive UDP-encapsulated at the remote
        tunnel = node.udp_receiver(remote, "10.213.253.2", 5555)
        direct = node.udp_receiver(legacy.ns, legacy.ipv4, 5432)
        try:
            _udp(node, legacy.ipv4, 5, port=5432)
            carried = wait_for(lambda: drain_udp(tunnel), 3, "encapsulated packets")
            time.sleep(0.2)
            carried += drain_udp(tunnel)
            assert drain_udp(direct) == []
        finally:
            tunnel.close()
            direct.close()
        assert len(carried) == 5
        inner = carried[0]
        assert inner[0] >> 4 == 4 and socket.inet_ntoa(inner[16:20]) == legacy.ipv4
        assert struct.unpack_from("!H", inner, 22)[0] == 5432
        assert agent.metric("lwt_encap_packets_total", policy="tunnel") == 5

        # one program per (policy, hook): 4 loaded, whatever the number of routes
        assert agent.metric("lwt_agent_programs") == 4
        labels = encap_labels(node)
        assert labels[f"{legacy.ipv4}"].endswith("+h28")  # headroom travels in the label
        assert agent.signal(signal.SIGTERM) == 0
    assert all(text == "" for text in encap_labels(node).values())


def test_fail_closed_gets_drop_all_when_the_program_cannot_load(
        agent: AgentProcess, node: Node) -> None:
    """A FailClosed policy whose ConfigMap program is missing: its routes get drop-all
    (traffic dropped and counted), lastError names the field; FailOpen leaves them plain."""
    write_docs(agent.pods, pod_objects(node, [WEB, DB]))
    missing = {"program": {"configMap": {"name": "absent", "key": "f.o"},
                           "section": "lwt/counters"}}
    write_docs(agent.policies, [
        policy("closed", {"out": missing}, selector={"matchLabels": WEB},
               failurePolicy="FailClosed"),
        policy("open", {"out": missing}, selector={"matchLabels": DB}),
    ])
    agent.start()
    closed = agent.wait_entry("shop/closed", lambda e: e["lastError"] is not None)
    assert "spec.hooks.out.program.configMap.name" in closed["lastError"]["message"]
    assert closed["attachedRoutes"] == 0 and closed["programs"] == {}
    opened = agent.wait_entry("shop/open", lambda e: e["lastError"] is not None)
    assert opened["attachedRoutes"] == 0
    web, db = node.pods[0], node.pods[1]
    labels = encap_labels(node)
    assert "lwt/shop/closed/out/" in labels[web.ipv4]  # drop-all under the policy's owner
    assert labels[db.ipv4] == ""
    assert not node.ping(node.client, web.ipv4)
    assert node.ping(node.client, db.ipv4)
    wait_for(lambda: agent.metric("lwt_route_dropped_packets_total", policy="closed") >= 1, 3,
             "drop-all counted the ping")
