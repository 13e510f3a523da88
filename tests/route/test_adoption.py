"""A restarted agent adopts programs attached by an earlier process, by label, untouched."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from lwt_agent.route import RouteEngine, RouteIntent, netlink
from lwt_agent.route.model import Destination

from tests.topology import Node

pytestmark = pytest.mark.kernel


def test_restart_adopts_by_label_and_collects_garbage(node: Node) -> None:
    pod, other = node.pods
    for dst in (pod.ipv4, pod.ipv6, other.ipv4):
        proc = subprocess.run(
            [sys.executable, "-m", "lwt_agent.cli", "attach", "--dst", dst, "--hook", "out",
             "--builtin", "counters", "--netns", node.host, "--owner", "shop/web"],
            capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
    # The "restarted agent": no fd of its own, only what the routes say.
    with RouteEngine(node.host) as engine:
        in_use = engine.labels_in_use("shop/web")
        assert len(in_use) == 3 and set(in_use.values()) == {1}  # one load per CLI call
        label_of = {str(r.dst): r.encap_labels["out"] for r in engine.routes() if r.encap_labels}
        refs = {dst: engine.reopen(label) for dst, label in label_of.items()}
        events = netlink.RouteSocket(
            node.host, groups=netlink.RTMGRP_IPV4_ROUTE | netlink.RTMGRP_IPV6_ROUTE)
        try:
            keep = [f"{pod.ipv4}/32", f"{pod.ipv6}/128"]
            result = engine.converge(
                [RouteIntent(Destination.of(d), {"out": refs[d]}) for d in keep],
                owners={"shop/web"})
            assert result.counts["unchanged"] == 2  # adopted: nothing rewritten
            assert result.counts["detach"] == 1  # other pod: no longer wanted
            events.sock.setblocking(False)
            changed = [str(e.route.dst) for e in events.recv_events()]
            assert changed == [f"{other.ipv4}/32"]  # only the garbage route was touched
        finally:
            events.close()
            for ref in refs.values():
                os.close(ref.fd)
        assert engine.labels_in_use("shop/web") == {label_of[k]: 1 for k in keep}
