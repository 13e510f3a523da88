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
    receiver = node.udp_receiver(pod.ns, pod.ipv4, 7003)
    receiver.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
    sender = node.udp_sender(node.host, pod.ipv4)
    received: list[bytes] = []
    sent = 0
    stop = threading.Event()

    def send() -> None:
        nonlocal sent
        while not stop.is_set():
            for _ in range(20):
                sender.sendto(sent.to_bytes(4, "big"), (pod.ipv4, 7003))
                sent += 1
            time.sleep(0.0005)

    with RouteEngine(node.host) as engine:
        engine.attach([pod.ipv4], "out", a)
        thread = threading.Thread(target=send)
        thread.start()
        swaps = 0
        try:
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                program = b if swaps % 2 == 0 else a
                result = engine.attach([pod.ipv4], "out", program)
                assert result.counts["swap"] == 1
                swaps += 1
                received.extend(drain_udp(receiver))
        finally:
            stop.set()
            thread.join()
        time.sleep(0.1)
        received.extend(drain_udp(receiver))
        final = engine.routes({4})
    sender.close()
    receiver.close()
    assert swaps >= 50
    assert sent >= 1000
    seqs = {int.from_bytes(p, "big") for p in received}
    assert len(received) == sent and seqs == set(range(sent)), (sent, len(received))
    labels_now = {str(r.dst): r.encap_labels.get("out") for r in final}
    assert labels_now[f"{pod.ipv4}/32"] == (b if swaps % 2 else a).label
