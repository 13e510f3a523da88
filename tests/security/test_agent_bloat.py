"""Issue 12 item 7, "bloat agents": 50 oversized policies must not push an agent past its
256 Mi limit, and the agent keeps serving the other policies.

The API here is the emulator (tests/k8s/emulator.py) with LwtRoutePolicy registered without
a schema: that is what an API server holds for objects stored before the CRD typed `config`
(the typed CRD now refuses these at the API, tests/security/test_typed_config.py). The
shared real control plane (tests/k8s/cluster.py) runs the typed CRD, so it cannot hold them.
The agent is the real `lwt-agent run` process on a network-namespace node; its peak RSS
(VmHWM) is read from /proc. Before: the agent kept every policy whole (and, once any
ConfigMap policy existed, every ConfigMap) and went past the limit.
"""
from __future__ import annotations

import datetime as dt
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lwt_kube import ApiError, Kube, api_path

from tests.agent.harness import wait_for
from tests.e2e.harness import ClusterAgent, create_pod, policy_path
from tests.k8s.emulator import EmulatedApiServer
from tests.topology import Node, build_node

AGENT_LIMIT = 256 * 2**20  # the chart's agent.resources.limits.memory
POLICIES = 50


def _bloated(index: int) -> dict[str, Any]:
    # ~650 KB of JSON (the emulator takes 1 MiB bodies; a real API server 3 MiB), ~6 MB
    # once decoded: 50 of them are ~300 MB for an agent that keeps them.
    junk = {f"k{j:05d}": j for j in range(50_000)}
    return {"apiVersion": "lwt.dev/v1alpha1", "kind": "LwtRoutePolicy",
            "metadata": {"name": f"bloat-{index}", "namespace": "tenant",
                         "annotations": {"note": "x" * 1000}},
            "spec": {"podSelector": {}, "hooks": {"out": {
                "program": {"builtin": "counters"}, "config": junk}}}}


def _accept(kube: Kube, name: str, generation: int = 1) -> None:
    """What the operator writes once it judged a generation valid (lwt_policy.contract)."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    kube.merge_patch(policy_path(name, subresource="status"), {"status": {
        "observedGeneration": generation,
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Valid",
                        "message": f"generation {generation} is valid",
                        "observedGeneration": generation, "lastTransitionTime": now}]}})


@pytest.fixture
def schemaless_api(tmp_path: Path) -> Iterator[EmulatedApiServer]:
    server = EmulatedApiServer(tmp_path / "api", crd_paths=[])
    (tmp_path / "api").mkdir(exist_ok=True)
    server.start()
    server.register_resource("lwt.dev", "v1alpha1", "lwtroutepolicies", kind="LwtRoutePolicy",
                             namespaced=True, shortnames=["lrp"], status_subresource=True)
    server.register_resource("lwt.dev", "v1alpha1", "lwtnodestates", kind="LwtNodeState",
                             namespaced=False, shortnames=["lns"], status_subresource=True)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def node() -> Iterator[Node]:
    with build_node("lwtB", pods=1) as built:
        yield built


@pytest.fixture
def pin_dir(bpffs: Path) -> Iterator[Path]:
    path = bpffs / f"bloat-{uuid.uuid4().hex[:8]}"
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_fifty_oversized_policies_stay_under_the_agent_limit(
        tmp_path: Path, schemaless_api: EmulatedApiServer, node: Node, pin_dir: Path) -> None:
    kube = Kube.at(schemaless_api.url)
    kube.create(api_path("v1/nodes"), {"apiVersion": "v1", "kind": "Node",
                                       "metadata": {"name": "node-a"}, "spec": {}})
    create_pod(kube, "web", "node-a", {"app": "web"}, [node.pods[0].ipv4])
    for index in range(POLICIES):
        kube.create(api_path("lwt.dev/v1alpha1/lwtroutepolicies", "tenant"), _bloated(index))
    kube.create(api_path("lwt.dev/v1alpha1/lwtroutepolicies", "shop"), {
        "apiVersion": "lwt.dev/v1alpha1", "kind": "LwtRoutePolicy",
        "metadata": {"name": "good", "namespace": "shop"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "failurePolicy": "FailOpen",
                 "priority": 100, "hooks": {"out": {"program": {"builtin": "counters"}}}}})
    _accept(kube, "good")

    agent = ClusterAgent("node-a", node, schemaless_api.kubeconfig, pin_dir, tmp_path)
    try:
        def attached() -> dict[str, Any] | None:
            try:
                state = kube.get(api_path("lwt.dev/v1alpha1/lwtnodestates", None, "node-a"))
            except ApiError:
                return None
            entry = next((e for e in (state.get("status") or {}).get("policies") or []
                          if e["name"] == "good"), None)
            return entry if entry and entry.get("attachedRoutes") == 1 else None

        wait_for(attached, 120, "the good policy attached while 50 bloated ones exist")
        peak = _peak_rss(agent.proc.pid)
        dropped = agent.metric("lwt_agent_errors_total", kind="object")
        assert dropped >= POLICIES, agent.log()[-2000:]
        assert "more than the" in agent.log()  # each refusal names the cap
        assert peak < AGENT_LIMIT, f"agent peak RSS {peak / 2**20:.0f} MiB"
        print(f"agent peak RSS with {POLICIES} oversized policies: {peak / 2**20:.0f} MiB")
    finally:
        agent.stop()
        kube.close()
