"""Swapping programs under continuous traffic drops no packet that both programs pass."""
from __future__ import annotations

import socket
import threading
import time

import pytest
from lwt_agent.route import RouteEngine

from tests.route.programs import TestPrograms
from tests.topology import Node, drain_udp

pytestmark = pytest.mark.kernel
SO_RCVBUFFORCE = 33


def test_swap_under_traffic_loses_nothing(node: Node, programs: TestPrograms) -> None:
    pod = node.pods[0]
    a, b = programs.out["drop_a"].ref(), programs.out["drop_b"].ref()
    addresses = (pod.ipv4, pod.ipv6)
    receivers = [node.udp_receiver(pod.ns, addr, 7003) for addr in addresses]
    for receiver in receivers:
        receiver.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
    senders = [node.udp_sender(node.host, addr) for addr in addresses]
    received: list[list[bytes]] = [[], []]
    sent = [0, 0]
    stop = threading.Event()

    def send() -> None:
        # Port 7003: passed by both programs (drop_a drops 7001, drop_b drops 7002).
        while not stop.is_set():
            for _ in range(10):
                for i, (sender, addr) in enumerate(zip(senders, addresses, strict=True)):
                    sender.sendto(sent[i].to_bytes(4, "big"), (addr, 7003))
                    sent[i] += 1
            time.sleep(0.0005)

    def drain() -> None:
        for i, receiver in enumerate(receivers):
            received[i].extend(drain_udp(receiver))

    with RouteEngine(node.host) as engine:
        engine.attach(addresses, "out", a)
        thread = threading.Thread(target=send)
        thread.start()
        swaps = 0
        try:
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                result = engine.attach(addresses, "out", b if swaps % 2 == 0 else a)
                assert result.counts["swap"] == 2
                swaps += 1
                drain()
        finally:
            stop.set()
            thread.join()
        time.sleep(0.1)
        drain()
        final = {str(r.dst): r.encap_labels.get("out") for r in engine.routes()}
    for sock in (*senders, *receivers):
        sock.close()
    assert swaps >= 50
    for i in range(2):
        assert sent[i] >= 1000
        seqs = {int.from_bytes(p, "big") for p in received[i]}
        assert len(received[i]) == sent[i] and seqs == set(range(sent[i])), (i, sent[i])
    last = (b if swaps % 2 else a).label
    assert final[f"{pod.ipv4}/32"] == last and final[f"{pod.ipv6}/128"] == last
