"""The attach/detach/status verbs with the real loader and built-ins."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.topology import Node, drain_udp, route_dump

pytestmark = pytest.mark.kernel


def agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lwt_agent.cli", *args],
                          capture_output=True, text=True, timeout=60)


def status(netns: str) -> dict[str, Any]:
    proc = agent("status", "--netns", netns, "--json")
    assert proc.returncode == 0, proc.stderr
    return {r["dst"]: r for r in json.loads(proc.stdout)["routes"]}


def test_cli_attach_status_detach_with_port_filter(node: Node) -> None:
    pod = node.pods[0]
    before = route_dump(node.host)
    listeners = [node.tcp_listen(pod.ns, pod.ipv4, port) for port in (8080, 8081)]
    receiver = node.udp_receiver(pod.ns, pod.ipv4, 8081)
    sender = node.udp_sender(node.host, pod.ipv4)
    try:
        proc = agent("attach", "--dst", pod.ipv4, "--hook", "out", "--builtin", "port-filter",
                     "--config", '{"denyTCPPorts": [8080]}', "--netns", node.host, "--json")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        attached = json.loads(proc.stdout)
        assert attached["ok"] and attached["counts"]["attach"] == 1
        # The CLI process is gone; the route holds the program.
        assert not node.tcp_connects(node.host, pod.ipv4, 8080, timeout=0.5)
        assert node.tcp_connects(node.host, pod.ipv4, 8081)

        (hook,) = status(node.host)[f"{pod.ipv4}/32"]["hooks"]
        assert hook["label"] == attached["label"] and hook["ours"]
        assert hook["prog_id"] == attached["prog_id"] and hook["tag"] == attached["tag"]
        assert hook["counters"]["builtin"] == "port-filter"
        assert hook["counters"]["droppedPackets"] >= 1  # the SYN(s) to 8080
        seen = hook["counters"]["packets"]
        for _ in range(7):
            sender.sendto(b"z", (pod.ipv4, 8081))
        time.sleep(0.1)
        assert len(drain_udp(receiver)) == 7
        (hook,) = status(node.host)[f"{pod.ipv4}/32"]["hooks"]
        assert hook["counters"]["packets"] - seen == 7

        proc = agent("detach", "--dst", pod.ipv4, "--netns", node.host)
        assert proc.returncode == 0, proc.stderr
        assert route_dump(node.host) == before
        assert node.tcp_connects(node.host, pod.ipv4, 8080)
        assert status(node.host) == {}
    finally:
        sender.close()
        receiver.close()
        for sock in listeners:
            sock.close()


def test_cli_refusals_exit_codes(node: Node) -> None:
    pod = node.pods[0]
    before = route_dump(node.host)
    cases = [
        (["--dst", "10.99.0.1", "--hook", "out", "--builtin", "drop-all"], 2, "no route"),
        (["--dst", pod.ipv4, "--hook", "xmit", "--builtin", "drop-all", "--headroom", "257"],
         2, "outside 0..256"),
        (["--dst", pod.ipv4, "--hook", "out", "--builtin", "nope"], 2, "unknown built-in"),
        (["--dst", pod.ipv4, "--hook", "out", "--object", "x.o"], 2, "needs --section"),
    ]
    for args, code, text in cases:
        proc = agent("attach", *args, "--netns", node.host)
        assert proc.returncode == code, (args, proc.stderr)
        assert text in proc.stderr
    proc = agent("attach", "--dst", pod.ipv4, "--hook", "out", "--builtin", "drop-all",
                 "--netns", "lwtR-none")
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    assert route_dump(node.host) == before


def test_status_pin_dir_that_holds_no_pins_falls_back_to_ids(node: Node, tmp_path: Path) -> None:
    # --pin-dir is only where to look first: a missing directory, or one holding files that are
    # not bpffs pins, is no error; programs are then opened by id (root).
    pod = node.pods[0]
    (tmp_path / "not-a-pin").write_text("x")
    proc = agent("attach", "--dst", pod.ipv4, "--hook", "out", "--builtin", "counters",
                 "--netns", node.host, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    attached = json.loads(proc.stdout)
    try:
        for pin_dir in (tmp_path / "missing", tmp_path):
            shown = agent("status", "--netns", node.host, "--pin-dir", str(pin_dir), "--json")
            assert shown.returncode == 0, shown.stderr
            (route,) = json.loads(shown.stdout)["routes"]
            (hook,) = route["hooks"]
            assert hook["prog_id"] == attached["prog_id"] and hook["problem"] is None
    finally:
        assert agent("detach", "--dst", pod.ipv4, "--netns", node.host).returncode == 0
