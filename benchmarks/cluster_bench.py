"""Policy change → enforcement through the Kubernetes API emulator.

The stand of the end-to-end tests, for one node: the emulated API server (tests/k8s), the
operator (in a thread, production timings), and a real `lwt-agent run --kubeconfig` process
managing the benchmark's node. A trial merge-patches the policy's config (deny a probe port,
then allow it again) and times, from the PATCH, the first SYN the pod's route drops (or
answers again): operator validation and the accepted-generation handshake, the agent's
watch, the map write. Same probe as the standalone trials (benchmarks.agent_bench).
"""
from __future__ import annotations

import logging
import signal
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


def run(settings: Settings, scratch: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    trials = settings.cluster_trials
    result: dict[str, Any] = {"routes": 1, "trials": trials}
    if not trials:
        return {"skipped": True}
    try:
        # The emulator and its client are the Kubernetes area's test harness (tests/k8s).
        from lwt_operator.config import OperatorConfig, Timings
        from lwt_operator.settings import AgentSettings

        from tests.k8s.client import KubeClient, api_path
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
        kube = KubeClient(api.url)
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
             "--detach-on-exit"],
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
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
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
    return []


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
