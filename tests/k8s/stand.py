"""lwt-operator installed as a user installs it, on the real control plane, with nodes made
of network namespaces whose kubelet the harness plays (tests/k8s/kubelet.py).

    with installed_stand(cp, bpffs, release="lwt") as stand:
        stand.kubectl("apply", "--server-side", "-f", "policy.yaml")
        stand.policy("web-deny")

The CRDs go in with `kubectl apply --server-side -f crds/`, the chart with `helm install`
into a namespace labelled with the Pod Security level docs/install.md names, then the real
controllers create the agent DaemonSet's pods and the harness runs them.
"""
from __future__ import annotations

import contextlib
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import yaml

from tests.agent.harness import wait_for
from tests.k8s.cluster import ControlPlane
from tests.k8s.kubelet import Kubelet
from tests.topology import Node, build_node

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "lwt-operator"
CRDS = REPO / "crds"
POD_SECURITY_LEVEL = "privileged"  # docs/install.md: what the agent's pods need
AGENT_LABELS = "app.kubernetes.io/name=lwt-agent,app.kubernetes.io/component=agent"
# Values for the test stand: one operator replica (peering stays on, as by default) and a
# short resync so convergence after faults is seconds, not half a minute.
TEST_VALUES: dict[str, Any] = {
    "operator": {"replicas": 1, "extraArgs": ["--resync=3", "--finalizer-timeout=20"]},
    # The tests scrape the agents without a token (the chart's default, kubernetes, is
    # tested in tests/k8s/test_metrics_auth.py).
    "agent": {"metricsAuth": "none"},
}


@dataclass
class Stand:
    cp: ControlPlane
    kubelet: Kubelet
    nodes: dict[str, Node]
    release: str
    namespace: str
    workdir: Path

    def __post_init__(self) -> None:
        self.api_client = kubernetes.config.new_client_from_config(
            config_file=str(self.cp.kubeconfig))
        self.core = kubernetes.client.CoreV1Api(self.api_client)
        self.apps = kubernetes.client.AppsV1Api(self.api_client)
        self.custom = kubernetes.client.CustomObjectsApi(self.api_client)

    # --- names ----------------------------------------------------------------------------

    @property
    def fullname(self) -> str:
        return self.release if "lwt-operator" in self.release else f"{self.release}-lwt-operator"

    @property
    def daemonset(self) -> str:
        return f"{self.fullname}-agent"

    # --- kubectl and helm -----------------------------------------------------------------

    def kubectl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.cp.kubectl(*args, **kwargs)

    def apply(self, docs: list[dict[str, Any]], *extra: str,
              kubeconfig: Path | None = None, check: bool = True
              ) -> subprocess.CompletedProcess[str]:
        """`kubectl apply --server-side` of these documents (a user's file)."""
        return self.cp.kubectl("apply", "--server-side", *extra, "-f", "-",
                               input=yaml.safe_dump_all(docs), kubeconfig=kubeconfig,
                               check=check)

    def values_file(self, values: dict[str, Any]) -> Path:
        path = self.workdir / f"values-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(yaml.safe_dump(values))
        return path

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cp.helm(*args, check=check, timeout=240)

    # --- reads ----------------------------------------------------------------------------

    def policy(self, name: str, namespace: str = "shop") -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(  # type: ignore[no-any-return]
            "lwt.dev", "v1alpha1", namespace, "lwtroutepolicies", name)

    def node_entry(self, node: str, name: str, namespace: str = "shop"
                   ) -> dict[str, Any] | None:
        """Node `node`'s entry for policy namespace/name, from its LwtNodeState (None when the
        node state or the entry is not there)."""
        try:
            state = self.custom.get_cluster_custom_object(
                "lwt.dev", "v1alpha1", "lwtnodestates", node)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        for entry in (state.get("status") or {}).get("policies") or []:
            if (entry["namespace"], entry["name"]) == (namespace, name):
                return entry  # type: ignore[no-any-return]
        return None

    def agent_pods(self) -> list[dict[str, Any]]:
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=AGENT_LABELS)
        return self.api_client.sanitize_for_serialization(pods)["items"]  # type: ignore[no-any-return]

    def ready_agents(self) -> dict[str, dict[str, Any]]:
        """node -> its agent pod, for pods that are Ready and not being deleted."""
        found = {}
        for pod in self.agent_pods():
            conditions = (pod.get("status") or {}).get("conditions") or []
            if pod["metadata"].get("deletionTimestamp"):
                continue
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                found[pod["spec"]["nodeName"]] = pod
        return found

    def wait_agents(self, timeout: float = 90, template_hash: str | None = None
                    ) -> dict[str, dict[str, Any]]:
        """Every node has a Ready agent pod (of this template generation, when given)."""
        def probe() -> dict[str, dict[str, Any]] | None:
            ready = self.ready_agents()
            if set(ready) != set(self.nodes):
                return None
            if template_hash and any(p["metadata"]["labels"].get("controller-revision-hash")
                                     != template_hash for p in ready.values()):
                return None
            return ready
        return wait_for(probe, timeout, f"a Ready agent pod on each of {sorted(self.nodes)}; "
                        f"kubelet errors: {self.kubelet.errors[-3:]}")  # type: ignore[no-any-return]

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        out = self.core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name}")
        return self.api_client.sanitize_for_serialization(out)["items"]  # type: ignore[no-any-return]

    def sa_kubeconfig(self, service_account: str, pod: dict[str, Any] | None = None) -> Path:
        """A kubeconfig with a token of one of the chart's ServiceAccounts (pod-bound if a pod
        is given), for checking what that identity may and may not do."""
        bound = (pod["metadata"]["name"], pod["metadata"]["uid"]) if pod else None
        token = self.cp.token(self.namespace, service_account, pod=bound)
        return self.cp.kubeconfig_for(f"{service_account}-{uuid.uuid4().hex[:6]}", token)

    def close(self) -> None:
        self.api_client.close()


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Helm's merging of values files: mappings key by key, anything else replaced."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def apply_crds(cp: ControlPlane) -> None:
    """`kubectl apply --server-side -f crds/` and wait until the API serves them."""
    cp.kubectl("apply", "--server-side", "-f", str(CRDS))
    # `kubectl wait` fails outright ("accessor error") on a CRD whose status has no
    # conditions yet, a moment after the apply: wait for that first.
    names = [f"crd/{path.name.removesuffix('.yaml').split('_', 1)[1]}.lwt.dev"
             for path in sorted(CRDS.glob("lwt.dev_*.yaml"))]
    wait_for(lambda: all(cp.kubectl("get", name, "-o", "jsonpath={.status.conditions}",
                                    check=False).stdout.strip() for name in names), 60,
             f"conditions on {names}")
    cp.kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)


def create_namespace(cp: ControlPlane, name: str, level: str | None) -> None:
    """A namespace (with a Pod Security level), usable once its `default` ServiceAccount is
    there: the ServiceAccount admission refuses pods until the controller made it."""
    cp.kubectl("create", "namespace", name)
    if level:
        cp.kubectl("label", "namespace", name, f"pod-security.kubernetes.io/enforce={level}")
    wait_for(lambda: cp.kubectl("get", "serviceaccount", "default", "-n", name,
                                check=False).returncode == 0, 120,
             f"the default ServiceAccount of namespace {name}")


@contextlib.contextmanager
def installed_stand(cp: ControlPlane, bpffs: Path, *, release: str = "lwt",
                    namespace: str = "lwt-system", pods_per_node: tuple[int, int] = (3, 2),
                    values: dict[str, Any] | None = None, prefix: str = "lwtK"
                    ) -> Iterator[Stand]:
    """Two netns nodes registered with the cluster, their kubelet running, the CRDs applied,
    the chart installed with helm, every agent Ready. Everything is undone on exit (helm
    uninstall, nodes deleted, namespaces removed), also after a failure."""
    workdir = cp.workdir / f"stand-{release}-{uuid.uuid4().hex[:6]}"
    workdir.mkdir()
    pins = bpffs / f"cluster-{uuid.uuid4().hex[:8]}"
    with contextlib.ExitStack() as stack:
        node_a = stack.enter_context(build_node(prefix, pods=pods_per_node[0]))
        node_b = stack.enter_context(build_node(prefix, pods=pods_per_node[1]))
        nodes = {"node-a": node_a, "node-b": node_b}
        kubelet = Kubelet(cp, workdir)
        stack.callback(kubelet.stop)
        apply_crds(cp)
        create_namespace(cp, namespace, POD_SECURITY_LEVEL)
        # Undone while the harness's kubelet still runs (it finishes the pods' graceful
        # deletion), and waited for: the next tests share this control plane.
        stack.callback(cp.kubectl, "delete", "namespace", namespace, "--timeout=90s",
                       check=False, timeout=120)
        for index, (name, node) in enumerate(nodes.items()):
            kubelet.add_node(name, netns=node.host, internal_ip=f"127.0.0.{11 + index}",
                             pod_cidrs=[f"10.{213 + index}.1.0/24", f"fd00:{213 + index}:1::/64"],
                             host_paths={"/sys/fs/bpf": pins / name})
        stack.callback(cp.kubectl, "delete", "nodes", *nodes, "--timeout=60s", check=False,
                       timeout=90)
        kubelet.start()
        stand = Stand(cp, kubelet, nodes, release, namespace, workdir)
        stack.callback(stand.close)
        values_file = stand.values_file(merged(TEST_VALUES, values or {}))
        t0 = time.monotonic()
        try:
            stand.helm("install", release, str(CHART), "--namespace", namespace,
                       "--values", str(values_file), "--wait", "--timeout", "180s")
        except Exception:
            print(diagnose(stand), flush=True)
            raise
        print(f"helm install --wait: {time.monotonic() - t0:.1f} s", flush=True)
        stack.callback(stand.helm, "uninstall", release, "--namespace", namespace,
                       "--wait", "--timeout", "120s", check=False)
        wait_for(lambda: _exists(stand, namespace, stand.daemonset), 60,
                 "the operator's agent DaemonSet")
        try:
            stand.wait_agents()
        except Exception:
            print(diagnose(stand), flush=True)
            raise
        print(f"installed, every agent Ready: {time.monotonic() - t0:.1f} s", flush=True)
        yield stand


def diagnose(stand: Stand) -> str:
    """What a failed install looked like: pods, the harness's errors, the programs' logs."""
    lines = [stand.cp.kubectl("get", "pods,ds,deploy,rs", "-A", "-o", "wide",
                              check=False).stdout,
             f"kubelet errors: {stand.kubelet.errors[-5:]}"]
    for container in list(stand.kubelet.containers.values()):
        tail = container.log.read_text(errors="replace")[-3000:] if container.log.exists() \
            else "(no log)"
        lines.append(f"--- {container.pod_key} (running: {container.running()}, ready probe "
                     f"{container.probe_url}):\n{tail}")
    return "\n".join(lines)


def _exists(stand: Stand, namespace: str, name: str) -> bool:
    try:
        stand.apps.read_namespaced_daemon_set(name, namespace)
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True)[:4000]
