"""The end-to-end stand: emulated API + operator (in this process) + real agent processes,
each managing its own netns "node" (tests/topology.py)."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from lwt_kube import Kube, api_path
from prometheus_client.parser import text_string_to_metric_families

from tests.agent.harness import wait_for
from tests.topology import Node

REPO = Path(__file__).resolve().parents[2]
POLICIES = "lwt.dev/v1alpha1/lwtroutepolicies"


class ClusterAgent:
    """`lwt-agent run --kubeconfig ... --node-name ...` for one topology node."""

    def __init__(self, name: str, node: Node, kubeconfig: Path, pin_dir: Path,
                 workdir: Path, run: int = 1) -> None:
        self.name = name
        self.node = node
        self.pin_dir = pin_dir
        self.log_path = workdir / f"agent-{name}-{run}.log"
        args = [sys.executable, "-m", "lwt_agent.cli", "-v", "run",
                "--kubeconfig", str(kubeconfig), "--node-name", name,
                "--netns", node.host, "--pin-dir", str(pin_dir),
                "--metrics-port", "0", "--metrics-address", "127.0.0.1",
                "--resync-seconds", "2"]
        self.proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL,
                                     stderr=self.log_path.open("w"))
        self.metrics_url = wait_for(self._metrics_url, 20, f"agent {name} metrics address")

    def _metrics_url(self) -> str | None:
        found = re.search(r"# metrics: (http://\S+)", self.log())
        if found:
            return found.group(1)
        if self.proc.poll() is not None:
            raise AssertionError(f"agent {self.name} exited:\n{self.log()}")
        return None

    def log(self) -> str:
        return self.log_path.read_text()

    def get(self, path: str) -> tuple[int, str]:
        url = self.metrics_url.rsplit("/", 1)[0] + path
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        _, text = self.get("/metrics")
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v
                                               for k, v in labels.items()):
                    total += sample.value
        return total

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def create_pod(kube: Kube, name: str, node_name: str, labels: dict[str, str],
               ips: list[str], namespace: str = "shop") -> None:
    """A Pod scheduled to `node_name` and Running with `ips` (what the kubelet reports)."""
    kube.create(api_path("v1/pods", namespace), {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": node_name, "containers": [{"name": "app", "image": "app"}]}})
    kube.merge_patch(api_path("v1/pods", namespace, name, "status"), {"status": {
        "phase": "Running", "podIP": ips[0], "podIPs": [{"ip": ip} for ip in ips]}})


def policy_path(name: str, namespace: str = "shop", subresource: str | None = None) -> str:
    return api_path(POLICIES, namespace, name, subresource)


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return cond
    return None
