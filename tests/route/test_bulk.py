"""10,000 routes: SIGKILL mid-batch, restart, converge; a re-run adopts without flapping."""
from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lwt_agent.route import RouteEngine, labels, netlink

from tests.route.programs import TestPrograms
from tests.topology import Node, ip

pytestmark = [pytest.mark.kernel, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
HALF = 5000


def _destinations(node: Node) -> tuple[list[str], list[str]]:
    """5,000 CNI /32 routes on cali0 and 5,000 pod IPs behind a /16 on cali1 (owned)."""
    cni = [str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("10.214.0.0")) + 1 + i))
           for i in range(HALF)]
    bridged = [str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("10.215.0.0")) + 1 + i))
               for i in range(HALF)]
    script = "".join(f"route add {d}/32 dev cali0 scope link proto 80\n" for d in cni)
    subprocess.run(["ip", "-n", node.host, "-batch", "-"], input=script, text=True, check=True)
    ip(node.host, "route", "add", "10.215.0.0/16", "dev", "cali1", "scope", "link")
    return cni, bridged


def _agent(node: Node, pin: Path, dst_file: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.route.attach_many", "--netns", node.host, "--pin",
         str(pin), "--owner", "crash/test", "--dst-file", str(dst_file), *extra],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _labelled(node: Node) -> dict[str, list[str]]:
    """dst -> labels of every route in the host's main table (duplicates kept)."""
    found: dict[str, list[str]] = {}
    with RouteEngine(node.host) as engine:
        for route in engine.routes({4}):
            found.setdefault(str(route.dst), []).append(route.encap_labels.get("out", ""))
    return found


def test_sigkill_mid_batch_then_restart_converges(
    node: Node, programs: TestPrograms, tmp_path: Path
) -> None:
    cni, bridged = _destinations(node)
    dst_file = tmp_path / "dsts"
    dst_file.write_text("\n".join(cni + bridged) + "\n")
    prog = programs.out["drop_a"]
    assert prog.pin is not None
    pin = prog.pin
    label = labels.program_label("crash/test", "out", prog.tag, prog.id)

    agent = _agent(node, pin, dst_file, "--chunk", "200", "--pause", "0.01")
    assert agent.stdout is not None
    for line in agent.stdout:
        if line.startswith("sent ") and int(line.split()[1]) >= 2000:
            os.kill(agent.pid, signal.SIGKILL)
            break
    agent.wait(timeout=30)
    assert agent.returncode == -signal.SIGKILL

    state = _labelled(node)
    done = sum(1 for d in cni + bridged if state.get(f"{d}/32", [""])[0] == label)
    assert 2000 <= done < 2 * HALF, done  # killed in the middle, not before or after
    # Each route is either untouched or carries the whole encap, never anything between;
    # an owned route never exists without its encap (created with it in one message).
    for dst in cni:
        assert state[f"{dst}/32"] in ([""], [label]), dst
    for dst in bridged:
        assert state.get(f"{dst}/32", []) in ([], [label]), dst

    restarted = _agent(node, pin, dst_file)
    out, err = restarted.communicate(timeout=60)
    assert restarted.returncode == 0, err
    counts = json.loads(out.splitlines()[-1])["counts"]
    assert counts["unchanged"] == done
    assert counts["attach"] + counts["create-owned"] == 2 * HALF - done

    state = _labelled(node)
    for dst in cni + bridged:
        assert state[f"{dst}/32"] == [label], dst  # present, ours, exactly once
    with RouteEngine(node.host) as engine:
        routes = engine.routes({4})
    assert sum(1 for r in routes if r.owned) == HALF
    cni_set = {f"{d}/32" for d in cni}
    assert all(r.protocol == 80 for r in routes if str(r.dst) in cni_set)  # CNI's proto kept

    # A third run (an agent restart with nothing to do) adopts everything: no route event.
    events = netlink.RouteSocket(node.host, groups=netlink.RTMGRP_IPV4_ROUTE)
    try:
        again = _agent(node, pin, dst_file)
        out, err = again.communicate(timeout=60)
        assert again.returncode == 0, err
        assert json.loads(out.splitlines()[-1])["counts"]["unchanged"] == 2 * HALF
        events.sock.setblocking(False)
        time.sleep(0.05)
        with pytest.raises(BlockingIOError):
            events.recv_events()
    finally:
        events.close()
