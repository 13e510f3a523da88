"""The node agent, standalone (`lwt-agent run --policy-file`), as a real process.

For each number of pod routes R (settings.rss_route_counts; the measured pod plus R-1 others):
- time from the agent's start until all R pod routes carry its program;
- its resident memory once converged (VmRSS, and the peak VmHWM);
- policy change → enforcement: the policy file is rewritten to deny, then allow again, a
  probe port of the measured pod; probes from the client namespace send SYNs every
  millisecond and notes when the first one is dropped (or answered again). The time
  from the file write (atomic rename) to that SYN is one trial. The agent polls its files
  every 0.5 s (docs/agent.md), which bounds what this can show.

The agent runs in the benchmark's own node (benchmarks.topology), with one port-filter
policy on `out` selecting every pod; it is stopped with SIGTERM (it detaches everything).
"""
from __future__ import annotations

import errno
import os
import random
import select
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from lwt_agent.netns import socket_in

from benchmarks import shell
from benchmarks.errors import BenchError
from benchmarks.settings import Settings
from benchmarks.topology import POD_B_IP, BenchNode
from benchmarks.traffic import DENIED_TCP_PORT

PROBE_PORT = 7002  # nothing listens: a SYN gets a RST when allowed, nothing when dropped
PROBE_TIMEOUT_S = 0.02
TRIAL_TIMEOUT_S = 60.0  # a slower agent is a finding, not a failure: only this is
NAMESPACE = "bench"
NODE_NAME = "bench-node"


def run(settings: Settings, scratch: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    for routes in settings.rss_route_counts:
        node = BenchNode()
        try:
            results.append(_one_agent(node, routes, settings, scratch, progress))
        finally:
            node.close()
    return {"runs": results}


def failures(agent: dict[str, Any] | None) -> list[str]:
    if not agent:
        return []
    return [f"agent with {r['routes']} pod routes: {r['error']}"
            for r in agent.get("runs", []) if r.get("error")]


def _one_agent(node: BenchNode, routes: int, settings: Settings, scratch: Path,
               progress: Callable[[str], None]) -> dict[str, Any]:
    result: dict[str, Any] = {"routes": routes}
    work = scratch / f"agent-{routes}"
    work.mkdir()
    pin_dir = scratch / "bpffs" / f"agent-{routes}"
    pin_dir.mkdir()
    others = max(0, routes - 1)
    node.set_other_pods(others)
    policy_file = work / "policy.yaml"
    pods_file = work / "pods.yaml"
    _write_yaml(pods_file, _pods(node, routes))
    _write_yaml(policy_file, [policy([DENIED_TCP_PORT])])
    stdout = (work / "stdout").open("w")
    stderr = (work / "stderr").open("w")
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lwt_agent.cli", "run", "--policy-file", str(policy_file),
         "--pods-file", str(pods_file), "--netns", node.host, "--pin-dir", str(pin_dir),
         "--node-name", NODE_NAME],
        stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
        preexec_fn=shell.die_with_parent,
    )
    try:
        converged = _wait_attached(node, proc, routes, timeout=120, stderr=work / "stderr")
        result["seconds_to_attach_all"] = round(converged - started, 3)
        time.sleep(2.0)  # a few idle polls: memory as it stays, not mid-pass
        result.update(memory(proc.pid))
        trials = dict(settings.enforcement_trials).get(routes, 0)
        if trials:
            def apply(deny_ports: list[int]) -> None:
                _write_yaml(policy_file, [policy(deny_ports)])

            result["enforcement"] = enforcement_trials(node.client, apply, proc, trials)
        progress(
            f"agent, {routes} routes: attached all in {result['seconds_to_attach_all']} s, "
            f"RSS {result['rss_mb']:.1f} MB"
            + (f", policy change → drop p50 {result['enforcement']['deny']['p50_ms']:.0f} ms"
               if trials else "")
        )
    except BenchError as e:
        result["error"] = str(e)
        progress(f"FAILED agent with {routes} pod routes: {e}")
    finally:
        shell.stop(proc, grace=60)
        stdout.close()
        stderr.close()
    return result


def policy(deny_ports: list[int]) -> dict[str, Any]:
    return {
        "apiVersion": "lwt.dev/v1alpha1", "kind": "LwtRoutePolicy",
        "metadata": {"name": "bench-port-filter", "namespace": NAMESPACE},
        "spec": {
            "podSelector": {"matchLabels": {"app": "bench"}},
            "failurePolicy": "FailOpen",
            "hooks": {"out": {"program": {"builtin": "port-filter"},
                              "config": {"denyTCPPorts": deny_ports}}},
        },
    }


def _pods(node: BenchNode, routes: int) -> list[dict[str, Any]]:
    ips = [POD_B_IP, *node.other_pod_ips(routes - 1)] if routes else []
    return [{"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": f"pod-{i}", "namespace": NAMESPACE,
                          "labels": {"app": "bench"}},
             "spec": {"nodeName": NODE_NAME, "containers": [{"name": "c", "image": "i"}]},
             "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}
            for i, ip in enumerate(ips)]


def _write_yaml(path: Path, docs: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    tmp.replace(path)  # a new inode: the agent's poll sees the change at once


def _wait_attached(node: BenchNode, proc: subprocess.Popen[bytes], routes: int,
                   timeout: float, stderr: Path) -> float:
    deadline = time.monotonic() + timeout
    if routes == 0:
        time.sleep(2.0)  # nothing to attach: give it time to start and make a first pass
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"the agent exited {proc.returncode}: "
                             f"{stderr.read_text()[-800:].strip()}")
        dump = shell.run(["ip", "-n", node.host, "route", "show"]).stdout
        if dump.count("encap bpf out") >= routes:
            return time.monotonic()
        time.sleep(0.1)
    raise BenchError(f"the agent did not attach {routes} routes within {timeout:.0f} s: "
                     f"{stderr.read_text()[-800:].strip()}")


def memory(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return {"rss_mb": fields["VmRSS"], "peak_rss_mb": fields["VmHWM"]}


# -- policy change -> enforcement --------------------------------------------------------------

def enforcement_trials(client_netns: str, apply: Callable[[list[int]], None],
                       proc: subprocess.Popen[bytes], trials: int) -> dict[str, Any]:
    """`trials` times: `apply(deny ports)` with the probe port denied, time until the first
    SYN to it is dropped; then allowed again, time until one is answered. The probes'
    sockets are made in the client namespace; everything else stays where it is."""
    return _trials(apply, proc, trials, NetnsSockets(client_netns))


class NetnsSockets:
    """Creates the probes' sockets inside another network namespace (a socket keeps the
    namespace it was created in)."""

    def __init__(self, netns: str) -> None:
        self._netns = netns

    def tcp(self) -> socket.socket:
        return socket_in(self._netns, socket.AF_INET, socket.SOCK_STREAM)


def _trials(apply: Callable[[list[int]], None], proc: subprocess.Popen[bytes],
            trials: int, sockets: NetnsSockets) -> dict[str, Any]:
    if not _probe_answered(sockets):
        raise BenchError(f"port {PROBE_PORT} of the pod is not reachable before the trials")
    deny: list[float] = []
    allow: list[float] = []
    for _ in range(trials):
        # The standalone agent polls its files every 0.5 s: change at a random phase of that
        # cycle, or every trial would land just after a poll (the previous one ended there).
        time.sleep(random.uniform(0.0, 0.6))
        deny.append(_change_and_wait(apply, [DENIED_TCP_PORT, PROBE_PORT], False, proc,
                                     sockets))
        time.sleep(random.uniform(0.0, 0.6))
        allow.append(_change_and_wait(apply, [DENIED_TCP_PORT], True, proc, sockets))
    return {"trials": trials, "deny": stats(deny), "allow": stats(allow),
            "probe_timeout_ms": PROBE_TIMEOUT_S * 1000}


def _change_and_wait(apply: Callable[[list[int]], None], deny_ports: list[int], answered: bool,
                     proc: subprocess.Popen[bytes], sockets: NetnsSockets,
                     timeout: float = TRIAL_TIMEOUT_S) -> float:
    started = time.monotonic()
    apply(deny_ports)
    misses = 0
    first_miss = 0.0
    while time.monotonic() - started < timeout:
        sent = time.monotonic()
        ok = _probe_answered(sockets)
        if answered and ok:
            return sent - started
        if not answered and not ok:
            # two dropped SYNs in a row: one could be a RST delayed on a busy machine
            misses += 1
            first_miss = first_miss or sent
            if misses == 2:
                return first_miss - started
        elif not answered:
            misses, first_miss = 0, 0.0
        time.sleep(0.001)
    state = "answered" if answered else "dropped"
    alive = "running" if proc.poll() is None else f"exited {proc.returncode}"
    raise BenchError(f"SYNs to port {PROBE_PORT} not {state} {timeout:.0f} s after the policy "
                     f"change (agent {alive})")


def _probe_answered(sockets: NetnsSockets) -> bool:
    """True if a SYN to the probe port gets an answer (RST) within PROBE_TIMEOUT_S."""
    with sockets.tcp() as s:
        s.setblocking(False)
        code = s.connect_ex((POD_B_IP, PROBE_PORT))
        if code in (0, errno.ECONNREFUSED):
            return True
        if code not in (errno.EINPROGRESS, errno.EAGAIN):
            raise BenchError(f"probe connect: {os.strerror(code)}")
        _, writable, _ = select.select([], [s], [], PROBE_TIMEOUT_S)
        return bool(writable)


def stats(values_s: list[float]) -> dict[str, float]:
    ms = sorted(v * 1000 for v in values_s)
    return {
        "p50_ms": statistics.median(ms),
        "p99_ms": ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))],
        "max_ms": ms[-1],
        "min_ms": ms[0],
        "n": len(ms),
    }
