"""Running `lwt-agent run` (standalone) as a real process against a topology node.

The agent process inherits the test process's private mount namespace, so it sees the
`bpffs` fixture's mount. Its stdout (status YAML documents) and stderr (log, sample lines)
go to files that the helpers parse.
"""
from __future__ import annotations

import base64
import contextlib
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.topology import Node, ip

REPO = Path(__file__).resolve().parents[2]
NODE_STATE = "LwtNodeState"  # statuses() key of the node state document


def policy(name: str, hooks: Mapping[str, Any], *, namespace: str = "shop",
           selector: Mapping[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "lwt.dev/v1alpha1", "kind": "LwtRoutePolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"podSelector": dict(selector if selector is not None else {}),
                     "hooks": dict(hooks), **spec}}


def builtin_hook(name: str, config: Mapping[str, Any] | None = None,
                 **extra: Any) -> dict[str, Any]:
    hook: dict[str, Any] = {"program": {"builtin": name}, **extra}
    if config is not None:
        hook["config"] = dict(config)
    return hook


def pod_objects(node: Node, labels: Sequence[Mapping[str, str]],
                namespace: str = "shop") -> list[dict[str, Any]]:
    """Pod objects for node.pods[i] with labels[i] (fewer labels: fewer pods)."""
    return [{"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": f"pod-{i}", "namespace": namespace, "labels": dict(lab)},
             "spec": {"containers": [{"name": "c", "image": "i"}]},
             "status": {"phase": "Running",
                        "podIPs": [{"ip": node.pods[i].ipv4}, {"ip": node.pods[i].ipv6}]}}
            for i, lab in enumerate(labels)]


def configmap(name: str, key: str, blob: bytes, namespace: str = "shop") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace},
            "binaryData": {key: base64.b64encode(blob).decode()}}


def write_docs(path: Path, docs: Sequence[Mapping[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump_all([dict(d) for d in docs], sort_keys=False))
    tmp.replace(path)


def encap_labels(node: Node) -> dict[str, str]:
    """Pod route -> its `encap bpf ...` text (empty when plain), IPv4 and IPv6."""
    found: dict[str, str] = {}
    for family in ("-4", "-6"):
        for line in ip(node.host, family, "route").splitlines():
            parts = line.split()
            if parts and parts[0].startswith(("10.213.1.", "fd00:213:1:")):
                found[parts[0]] = line.split("encap", 1)[1].split(" dev ")[0].strip() \
                    if "encap" in line else ""
    return found


def wait_for(probe: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


class AgentProcess:
    """One `lwt-agent run` process with policy/pod/configmap/node files in `workdir`."""

    def __init__(self, workdir: Path, node: Node, pin_dir: Path,
                 extra_args: Sequence[str] = (), node_name: str = "node-a") -> None:
        self.workdir = workdir
        self.node = node
        self.pin_dir = pin_dir
        self.node_name = node_name
        self.policies = workdir / "policies.yaml"
        self.pods = workdir / "pods.yaml"
        self.configmaps = workdir / "configmaps.yaml"
        self.nodes = workdir / "nodes.yaml"
        for path in (self.policies, self.pods, self.configmaps, self.nodes):
            if not path.exists():
                write_docs(path, [])
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.metrics_url = ""

    @property
    def status_path(self) -> Path:
        return self.workdir / f"status-{self.runs}.yaml"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"agent-{self.runs}.log"

    def start(self, *more: str) -> AgentProcess:
        self.runs += 1
        args = [sys.executable, "-m", "lwt_agent.cli", "-v", "run",
                "--policy-file", str(self.policies), "--pods-file", str(self.pods),
                "--configmaps-file", str(self.configmaps), "--nodes-file", str(self.nodes),
                "--node-name", self.node_name, "--netns", self.node.host,
                "--pin-dir", str(self.pin_dir), "--metrics-port", "0",
                "--metrics-address", "127.0.0.1", "--resync-seconds", "2",
                *self.extra_args, *more]
        self.proc = subprocess.Popen(args, cwd=REPO, stdout=self.status_path.open("w"),
                                     stderr=self.log_path.open("w"))
        self.metrics_url = wait_for(self._metrics_url, 20, "the agent's metrics address")
        return self

    def _metrics_url(self) -> str | None:
        found = re.search(r"# metrics: (http://\S+)", self.log())
        if found:
            return found.group(1)
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"agent exited with {self.proc.returncode}:\n{self.log()}")
        return None

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stdout(self) -> str:
        return self.status_path.read_text() if self.status_path.exists() else ""

    def statuses(self) -> dict[str, dict[str, Any] | None]:
        """Latest status document per policy (ns/name), in the order printed; None for a
        policy reported as removed from the files; the node's LwtNodeState under NODE_STATE."""
        latest: dict[str, dict[str, Any] | None] = {}
        for chunk in ("\n" + self.stdout()).split("\n--- ")[1:]:
            header, _, body = chunk.partition("\n")
            removed = re.search(r"(Cluster)?LwtRoutePolicy (\S+): no longer in the policy files",
                                header)
            if removed:
                latest[("/" if removed.group(1) else "") + removed.group(2)] = None
                continue
            try:
                doc = yaml.safe_load(body)
            except yaml.YAMLError:
                continue  # the last document may be half written
            if isinstance(doc, dict) and doc.get("kind") == "LwtNodeState":
                latest[NODE_STATE] = doc
            elif isinstance(doc, dict) and "metadata" in doc:
                meta = doc["metadata"]
                # A ClusterLwtRoutePolicy has no namespace: "/<name>".
                latest[f"{meta.get('namespace', '')}/{meta['name']}"] = doc
        return latest

    def entry(self, name: str) -> dict[str, Any] | None:
        """This node's entry for policy `name` (ns/name), from the LwtNodeState printed last
        (None while the policy is not printed or was removed)."""
        statuses = self.statuses()
        state = statuses.get(NODE_STATE)
        if statuses.get(name) is None or state is None:
            return None
        namespace, _, policy = name.partition("/")
        for entry in state["status"]["policies"]:
            if (entry["namespace"], entry["name"]) == (namespace, policy):
                return entry
        return None

    def wait_entry(self, name: str, check: Callable[[dict[str, Any]], bool],
                   timeout: float = 15, what: str = "") -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            self._check_alive()
            entry = self.entry(name)
            return entry if entry is not None and check(entry) else None
        return wait_for(probe, timeout, what or f"status of {name}")

    def wait_ready(self, name: str, generation: int = 1, timeout: float = 15
                   ) -> dict[str, Any]:
        return self.wait_entry(
            name, lambda e: e["observedGeneration"] == generation and e["lastError"] is None
            and e["attachedRoutes"] == e["routes"] > 0, timeout, f"{name} ready at "
            f"generation {generation}")

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"agent exited with {self.proc.returncode}:\n{self.log()}")

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            text = response.read().decode()
        values = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return values

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        return sum(v for (n, lab), v in self.metrics().items()
                   if n == name and all((k, val) in lab for k, val in labels.items()))

    def signal(self, signum: int = signal.SIGTERM, timeout: float = 20) -> int:
        assert self.proc is not None
        self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"agent did not stop on {signum}:\n{self.log()}") from None

    def close(self) -> None:
        """Stop a still running agent (SIGTERM detaches; then kill as a last resort)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def remote_endpoint(node: Node) -> Iterator[str]:
    """A netns `<node>-rm` the host routes to (10.213.253.2), for encap tests; the node
    owns it, so the topology's cleanup removes it."""
    yield node.add_peer("rm", "rm0", ["10.213.253.1/24"], ["10.213.253.2/24"])
