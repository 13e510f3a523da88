"""Policy change → enforcement through the Kubernetes API emulator.

The stand of the end-to-end tests, for one node: the emulated API server (tests/k8s), the
operator (in a thread, production timings), and a real `lwt-agent run --kubeconfig` process
managing the benchmark's node. A trial merge-patches the policy's config (deny a probe port,
then allow it again) and times, from the PATCH, the first SYN the pod's route drops (or
answers again): operator validation and the accepted-generation handshake, the agent's
watch, the map write. Same probe as the standalone trials (benchmarks.agent_bench).

Policy create → enforced on every node (issue 5): a second stand with TWO cluster-mode agents,
each on its own node (a BenchNode: host netns with pod routes), N pods per node created as
API objects whose IPs are that node's pod routes. A trial POSTs a new policy selecting every
pod and times, from the POST, until every pod route on both nodes carries `encap bpf out`
(counted in `ip -n <host> route show`, as the standalone agent's attach time is); the policy
is then deleted and the next trial starts once every route is plain again and the object is
gone (its finalizer released). The agents' RSS is read once they have converged.
"""
from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import agent_bench, shell
from benchmarks.errors import BenchError
from benchmarks.settings import Settings
from benchmarks.topology import POD_B_IP, BenchNode

NODE = "bench-node"
NAMESPACE = agent_bench.NAMESPACE
POLICY = "bench-port-filter"
# any free port on loopback: two agents (and other users of this machine) must not collide
METRICS_ANY_PORT = ("--metrics-port", "0", "--metrics-address", "127.0.0.1")


def run(settings: Settings, scratch: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    result = _change_run(settings, scratch, progress)
    if result.get("skipped") or result.get("error"):
        return result
    result["create"] = [_create_run(pods, trials, scratch, progress)
                        for pods, trials in settings.cluster_create_trials]
    return result


def _change_run(settings: Settings, scratch: Path,
                progress: Callable[[str], None]) -> dict[str, Any]:
    trials = settings.cluster_trials
    result: dict[str, Any] = {"routes": 1, "trials": trials}
    if not trials:
        return {"skipped": True}
    try:
        # The emulator and its client are the Kubernetes area's test harness (tests/k8s).
        from lwt_kube import Kube, api_path
        from lwt_operator.config import OperatorConfig, Timings
        from lwt_operator.settings import AgentSettings

        from tests.k8s.conftest import POLICIES, start_api_server
        from tests.k8s.harness import RunningOperator
    except ImportError as e:
        result["error"] = (f"the API emulator harness is not importable ({e}): run from the "
                           "repository root with the test dependencies installed")
        return result
    for noisy in ("aiohttp.access", "kopf"):  # the operator's handler log, not our report
        logging.getLogger(noisy).setLevel(logging.WARNING)
    work = scratch / "cluster"
    work.mkdir()
    node = BenchNode()
    api = operator = proc = None
    try:
        api = start_api_server(work)
        kube = Kube.at(api.url)
        operator = RunningOperator(OperatorConfig(
            kubeconfig=api.kubeconfig, agent=AgentSettings(image="registry.example/lwt:bench"),
            timings=Timings())).start()
        kube.create(api_path("v1/nodes"), {"metadata": {"name": NODE, "labels": {
            "kubernetes.io/os": "linux", "kubernetes.io/hostname": NODE}}})
        kube.create(api_path("v1/pods", NAMESPACE), {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "pod-b", "labels": {"app": "bench"}},
            "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "app"}]}})
        kube.merge_patch(api_path("v1/pods", NAMESPACE, "pod-b", "status"), {"status": {
            "phase": "Running", "podIP": POD_B_IP, "podIPs": [{"ip": POD_B_IP}]}})
        log_path = work / "agent.log"
        pins = scratch / "bpffs" / "cluster"
        pins.mkdir()
        proc = subprocess.Popen(
            [sys.executable, "-m", "lwt_agent.cli", "run", "--kubeconfig", str(api.kubeconfig),
             "--node-name", NODE, "--netns", node.host, "--pin-dir", str(pins),
             "--detach-on-exit", *METRICS_ANY_PORT],
            stdout=subprocess.DEVNULL, stderr=log_path.open("w"), stdin=subprocess.DEVNULL,
            preexec_fn=shell.die_with_parent)
        kube.create(api_path(POLICIES, NAMESPACE),
                    agent_bench.policy([agent_bench.DENIED_TCP_PORT]))
        _wait_encap(node, proc, log_path)

        def apply(deny_ports: list[int]) -> None:
            kube.merge_patch(api_path(POLICIES, NAMESPACE, POLICY), {"spec": {"hooks": {"out": {
                "config": {"denyTCPPorts": deny_ports}}}}})

        result["enforcement"] = agent_bench.enforcement_trials(node.client, apply, proc, trials)
        enf = result["enforcement"]
        progress(f"API emulator: policy change → drop p50 {enf['deny']['p50_ms']:.0f} ms, "
                 f"p99 {enf['deny']['p99_ms']:.0f} ms ({trials} trials)")
    except (BenchError, OSError, TimeoutError) as e:
        result["error"] = str(e)
        progress(f"FAILED policy change through the API emulator: {e}")
    finally:
        if proc is not None:
            shell.stop(proc, grace=30)
        if operator is not None:
            # its watches end with the API server's shutdown: their retry warnings are noise
            logging.getLogger("lwt_operator").setLevel(logging.ERROR)
            try:
                operator.stop()
            except Exception as e:  # a stop problem must not hide the figures
                result.setdefault("warnings", []).append(f"operator stop: {e}")
        if api is not None:
            api.close()
        node.close()
    return result


def failures(cluster: dict[str, Any] | None) -> list[str]:
    if cluster and cluster.get("error"):
        return [f"policy change through the API emulator: {cluster['error']}"]
    return [f"policy create through the API emulator, {c['pods_per_node']} pods per node: "
            f"{c['error']}" for c in (cluster or {}).get("create", []) if c.get("error")]


# -- policy create -> enforced on every node --------------------------------------------------

CREATE_NODES = ("bench-node-1", "bench-node-2")
ENFORCE_TIMEOUT_S = 120.0  # a slower stand is a finding, not a failure: only this is


def _create_run(pods: int, trials: int, scratch: Path,
                progress: Callable[[str], None]) -> dict[str, Any]:
    """One stand (API emulator, operator, two agents on two nodes, `pods` pods per node) and
    `trials` create → enforced → delete → plain cycles."""
    from lwt_kube import ApiError, Kube, api_path
    from lwt_operator.config import OperatorConfig, Timings
    from lwt_operator.settings import AgentSettings

    from tests.k8s.conftest import POLICIES, start_api_server
    from tests.k8s.harness import RunningOperator

    result: dict[str, Any] = {"pods_per_node": pods, "nodes": len(CREATE_NODES),
                              "trials": trials}
    work = scratch / f"cluster-create-{pods}"
    work.mkdir()
    nodes: list[BenchNode] = []
    agents: list[tuple[subprocess.Popen[bytes], Path]] = []
    api = operator = None
    try:
        api = start_api_server(work)
        kube = Kube.at(api.url)
        operator = RunningOperator(OperatorConfig(
            kubeconfig=api.kubeconfig, agent=AgentSettings(image="registry.example/lwt:bench"),
            timings=Timings())).start()
        for name in CREATE_NODES:
            node = BenchNode()
            nodes.append(node)
            node.set_other_pods(pods - 1)
            kube.create(api_path("v1/nodes"), {"metadata": {"name": name, "labels": {
                "kubernetes.io/os": "linux", "kubernetes.io/hostname": name}}})
            ips = [POD_B_IP, *node.other_pod_ips(pods - 1)]
            for i, ip in enumerate(ips):  # a pod's create keeps its status (a built-in kind)
                kube.create(api_path("v1/pods", NAMESPACE), {
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": f"{name}-pod-{i}", "labels": {"app": "bench"}},
                    "spec": {"nodeName": name, "containers": [{"name": "app", "image": "app"}]},
                    "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
        for name, node in zip(CREATE_NODES, nodes, strict=True):
            log_path = work / f"{name}.log"
            pins = scratch / "bpffs" / f"cluster-create-{pods}-{name}"
            pins.mkdir()
            agents.append((subprocess.Popen(
                [sys.executable, "-m", "lwt_agent.cli", "run", "--kubeconfig",
                 str(api.kubeconfig), "--node-name", name, "--netns", node.host,
                 "--pin-dir", str(pins), "--detach-on-exit", *METRICS_ANY_PORT],
                stdout=subprocess.DEVNULL, stderr=log_path.open("w"), stdin=subprocess.DEVNULL,
                preexec_fn=shell.die_with_parent), log_path))
        time.sleep(2.0)  # the agents start and list their pods before the first POST
        path = api_path(POLICIES, NAMESPACE)
        times: list[float] = []
        for trial in range(trials):
            started = time.monotonic()
            kube.create(path, agent_bench.policy([agent_bench.DENIED_TCP_PORT]))
            _wait_routes(nodes, agents, pods, started)
            times.append(time.monotonic() - started)
            if trial == 0:
                time.sleep(2.0)  # memory as it stays, not mid-pass
                result["rss_mb"] = [agent_bench.memory(p.pid)["rss_mb"] for p, _ in agents]
            kube.delete(api_path(POLICIES, NAMESPACE, POLICY))
            _wait_routes(nodes, agents, 0, time.monotonic())
            deadline = time.monotonic() + ENFORCE_TIMEOUT_S
            while True:  # the finalizer is released once both nodes report detached
                try:
                    kube.get(api_path(POLICIES, NAMESPACE, POLICY))
                except ApiError as e:
                    if e.status == 404:
                        break
                    raise
                if time.monotonic() > deadline:
                    raise BenchError(f"the deleted policy still exists {ENFORCE_TIMEOUT_S:.0f} "
                                     "s later (finalizer not released)")
                time.sleep(0.05)
        result["enforced"] = agent_bench.stats(times)
        progress(f"API emulator, 2 nodes x {pods} pods: policy create → enforced on every node "
                 f"p50 {result['enforced']['p50_ms']:.0f} ms, p99 "
                 f"{result['enforced']['p99_ms']:.0f} ms ({trials} trials); agent RSS "
                 + ", ".join(f"{m:.1f} MB" for m in result.get("rss_mb", [])))
    except (BenchError, OSError, TimeoutError, ApiError) as e:
        result["error"] = str(e)
        progress(f"FAILED policy create through the API emulator ({pods} pods per node): {e}")
    finally:
        for proc, _log in agents:
            shell.stop(proc, grace=30)
        if operator is not None:
            logging.getLogger("lwt_operator").setLevel(logging.ERROR)
            try:
                operator.stop()
            except Exception as e:  # a stop problem must not hide the figures
                result.setdefault("warnings", []).append(f"operator stop: {e}")
        if api is not None:
            api.close()
        for node in nodes:
            node.close()
    return result


def _wait_routes(nodes: list[BenchNode], agents: list[tuple[subprocess.Popen[bytes], Path]],
                 encapped: int, started: float) -> None:
    """Until exactly `encapped` routes carry the program on every node (0: all plain)."""
    while time.monotonic() - started < ENFORCE_TIMEOUT_S:
        for proc, log_path in agents:
            if proc.poll() is not None:
                raise BenchError(f"a cluster agent exited {proc.returncode}: "
                                 f"{log_path.read_text()[-800:].strip()}")
        counts = [shell.run(["ip", "-n", n.host, "route", "show"]).stdout.count("encap bpf out")
                  for n in nodes]
        if all(c == encapped for c in counts):
            return
        time.sleep(0.02)
    raise BenchError(f"routes with the program per node still {counts}, not {encapped}, "
                     f"{ENFORCE_TIMEOUT_S:.0f} s after the policy create/delete")


def _wait_encap(node: BenchNode, proc: subprocess.Popen[bytes], log_path: Path,
                timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"the cluster agent exited {proc.returncode}: "
                             f"{log_path.read_text()[-800:].strip()}")
        if "encap bpf out" in node.measured_route_dump():
            return
        time.sleep(0.1)
    raise BenchError(f"the cluster agent did not attach within {timeout:.0f} s: "
                     f"{log_path.read_text()[-800:].strip()}")
