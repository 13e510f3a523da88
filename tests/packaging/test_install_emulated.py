"""`helm install` end to end against the emulated Kubernetes API (tests/k8s/emulator.py): the
chart's CRDs are installed, every rendered object is created, and the real `lwt-operator`
runs as the chart's Deployment runs it (command, args, environment, the agent.yaml mount), one
process per replica. They must come up healthy on the chart's probe port, meet in the chart's
kopf peering object with distinct priorities (one works, one stands by), create the agent
DaemonSet the chart's Service and RBAC expect, and accept a policy. What the emulator does not
do (no RBAC, no admission, no scheduler) is in docs/testing.md."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from lwt_kube import ApiError, Kube, api_path
from lwt_policy import contract

from tests.k8s.emulator import EmulatedApiServer
from tests.k8s.harness import wait_for

from .rendering import AGENT_CONFIG_MOUNT, CHART, NAMESPACE, RELEASE, run_helm_py
from .test_chart import documented_capabilities

REPO = Path(__file__).resolve().parents[2]
OPERATOR_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def resource_of(doc: dict[str, Any]) -> str:
    """kubectl-style resource string of a manifest: "apps/v1/deployments"."""
    kind = doc["kind"].lower()
    plural = kind[:-1] + "ies" if kind.endswith("y") else kind + "s"
    return f"{doc['apiVersion']}/{plural}"


@pytest.fixture
def api() -> Iterator[EmulatedApiServer]:
    crds = sorted(p.resolve() for p in (CHART / "crds").glob("*.yaml"))
    with tempfile.TemporaryDirectory(prefix="lwtP-install-") as workdir:
        server = EmulatedApiServer(Path(workdir), crd_paths=crds)
        server.start()
        try:
            yield server
        finally:
            server.close()


def test_helm_install_brings_up_the_operator_and_its_agent_daemonset(
    api: EmulatedApiServer, tmp_path: Path
) -> None:
    kube = Kube.at(api.url)
    health_port = free_port()
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({
        "image": {"repository": "registry.example.com/lwt-operator", "tag": "test"},
        "operator": {"healthPort": health_port},
    }))
    rendered = run_helm_py("template", RELEASE, str(CHART), "-n", NAMESPACE, "-f", str(values))
    assert rendered.returncode == 0, rendered.stderr
    documents = [d for d in yaml.safe_load_all(rendered.stdout) if d]

    # `helm install`: every object, in the order the script prints them (Helm's).
    for doc in documents:
        namespace = doc["metadata"].get("namespace")
        kube.create(api_path(resource_of(doc), namespace), doc)

    deployment = next(d for d in documents if d["kind"] == "Deployment")
    config_map = next(d for d in documents if d["kind"] == "ConfigMap")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    # The agent.yaml volume, where the Deployment mounts it.
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "agent-config"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "agent-config"]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert f"{mount['mountPath']}/agent.yaml" == AGENT_CONFIG_MOUNT
    agent_yaml = tmp_path / "agent.yaml"
    agent_yaml.write_text(config_map["data"]["agent.yaml"])
    args = [a.replace(AGENT_CONFIG_MOUNT, str(agent_yaml)) for a in container["args"]]
    env = {
        **os.environ,
        "KUBECONFIG": str(api.kubeconfig),
        "POD_NAMESPACE": NAMESPACE,   # the downward API's metadata.namespace
        "POD_NAME": f"{deployment['metadata']['name']}-7d9c-abcde",
        "PATH": f"{OPERATOR_BIN}:{os.environ.get('PATH', '')}",
    }
    # One process per replica. In a cluster each pod has its own network namespace; here they
    # share one, so every replica but the first gets a health port of its own.
    replicas = deployment["spec"]["replicas"]
    assert replicas == 2
    processes = []
    for replica in range(replicas):
        port = health_port if replica == 0 else free_port()
        replica_args = [
            f"--health-port={port}" if a.startswith("--health-port=") else a for a in args
        ]
        processes.append(subprocess.Popen(
            [*container["command"], *replica_args],
            env={**env, "POD_NAME": f"{env['POD_NAME']}{replica}"}, cwd=tmp_path,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
    try:
        # The probes' endpoint, on the port the chart gives them.
        probe = container["livenessProbe"]["httpGet"]

        def healthy() -> bool:
            url = f"http://127.0.0.1:{health_port}{probe['path']}"
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        wait_for(healthy, timeout=30, what="the operator's /healthz on the chart's health port")

        # The agent DaemonSet, as the chart's other objects expect it.
        settings = yaml.safe_load(config_map["data"]["agent.yaml"])
        ds_name = next(a.split("=", 1)[1] for a in args if a.startswith("--agent-daemonset="))
        daemonset = wait_for(
            lambda: _get(kube, api_path("apps/v1/daemonsets", NAMESPACE, ds_name)),
            timeout=30, what="the agent DaemonSet created by the operator",
        )
        ds_pod = daemonset["spec"]["template"]["spec"]
        kube.get(api_path("v1/serviceaccounts", NAMESPACE, ds_pod["serviceAccountName"]))
        (agent,) = ds_pod["containers"]
        assert agent["image"] == "registry.example.com/lwt-operator:test"
        assert set(agent["securityContext"]["capabilities"]["add"]) == documented_capabilities()
        service = next(d for d in documents if d["kind"] == "Service")
        labels = daemonset["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        assert agent["ports"][0]["containerPort"] == settings["metricsPort"]

        # kopf peering: both replicas announce themselves in the chart's peering object, with
        # different priorities, so that exactly one of them works and the other stands by.
        peering = next(d for d in documents if d["kind"] == "ClusterKopfPeering")
        path = api_path("kopf.dev/v1/clusterkopfpeerings", None, peering["metadata"]["name"])
        peers = wait_for(
            lambda: (lambda st: st if len(st) == replicas else None)(
                kube.get(path).get("status") or {}),
            timeout=30, what="both replicas' keep-alives in the ClusterKopfPeering object",
        )
        priorities = {peer["priority"] for peer in peers.values()}
        assert len(priorities) == replicas, f"replicas share a peering priority: {peers}"

        # And it does its job: a policy is judged.
        policy = yaml.safe_load((REPO / "examples" / "deny-port.yaml").read_text())
        policies = "lwt.dev/v1alpha1/lwtroutepolicies"
        namespace = policy["metadata"].get("namespace", "default")
        kube.create(api_path(policies, namespace), policy)
        wait_for(lambda: contract.is_accepted(
            kube.get(api_path(policies, namespace, policy["metadata"]["name"]))),
            timeout=30, what="the policy Accepted")
    finally:
        # Stopping cleanly is tests/k8s' subject (with a short --resync); here the processes
        # only have to go. The DaemonSet keeper waits out a watch of up to --resync (30 s by
        # default) before the operator exits: not worth 30 s of every CI run.
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _get(kube: Kube, path: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = kube.get(path)
        return found
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise
