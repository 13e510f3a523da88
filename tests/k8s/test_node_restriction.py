"""Agents speak only for their own node, enforced by a real API server (issue 14).

The chart's agent RBAC, ServiceAccount and ValidatingAdmissionPolicy (`helm template
--show-only`) go onto the real control plane (tests/k8s/cluster.py) with the CRDs. Two Nodes,
an agent pod scheduled to each, and a token bound to each pod, as the kubelet mounts it: the
API server puts the pod's node into the token (user extra
authentication.kubernetes.io/node-name), and the policy compares it with the LwtNodeState's
name. The agent's own code path writes: `lwt_kube.Kube` with a kubeconfig holding only that
token, the object `lwt_policy.status.node_state_object` makes and the status
`node_state_status` makes.
"""
from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from lwt_kube import ApiError, Kube, api_path, load_configuration
from lwt_policy import schema
from lwt_policy.model import PolicyRef
from lwt_policy.status import (
    NodeResult,
    node_state_entry,
    node_state_object,
    node_state_status,
    node_status,
)

from tests.agent.harness import wait_for
from tests.k8s.cluster import ControlPlane
from tests.k8s.stand import CHART, CRDS, create_namespace

STATES = f"{schema.API_VERSION}/{schema.NODE_STATE_PLURAL}"
POLICIES = f"{schema.API_VERSION}/{schema.PLURAL}"
TEMPLATES = ("agent-serviceaccount.yaml", "agent-rbac.yaml", "agent-node-restriction.yaml")


@dataclass
class Restricted:
    cp: ControlPlane
    namespace: str
    nodes: dict[str, str]  # name -> uid
    agents: dict[str, Kube]  # node name -> client with the token bound to its agent pod
    unbound: Kube  # the agent ServiceAccount's token, not bound to a pod
    admin: Kube


def _node(cp: ControlPlane, name: str) -> str:
    body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}
    cp.kubectl("create", "-f", "-", input=json.dumps(body))
    return str(cp.kubectl_json("get", "node", name)["metadata"]["uid"])


def _agent_pod(cp: ControlPlane, namespace: str, sa: str, node: str) -> tuple[str, str]:
    name = f"lwt-agent-{node}"
    body = {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"nodeName": node, "serviceAccountName": sa,
                     "containers": [{"name": "agent", "image": "lwt-operator:test"}]}}
    cp.kubectl("create", "-f", "-", input=json.dumps(body))
    return name, str(cp.kubectl_json("get", "pod", name, "-n", namespace)["metadata"]["uid"])


def _client(path: Path) -> Kube:
    return Kube(load_configuration(path))


@pytest.fixture(scope="module")
def restricted(control_plane: ControlPlane) -> Iterator[Restricted]:
    cp = control_plane
    suffix = uuid.uuid4().hex[:6]
    namespace, release = f"lwt-nr-{suffix}", f"nr{suffix}"
    node_names = [f"nr-{suffix}-x", f"nr-{suffix}-y"]
    cp.kubectl("apply", "--server-side", "-f", str(CRDS))
    cp.kubectl("wait", "--for=condition=Established", "--timeout=60s",
               f"crd/{schema.NODE_STATE_CRD_NAME}", f"crd/{schema.CRD_NAME}")
    create_namespace(cp, namespace, "privileged")
    rendered = cp.helm("template", release, str(CHART), "--namespace", namespace,
                       "--kube-version", cp.server_version.lstrip("v"),
                       *[a for t in TEMPLATES for a in ("--show-only", f"templates/{t}")]).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    clients: list[Kube] = []
    probes: list[str] = []
    try:
        cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
        sa = next(d for d in docs if d["kind"] == "ServiceAccount")["metadata"]["name"]
        nodes = {name: _node(cp, name) for name in node_names}
        agents = {}
        for node in node_names:
            token = cp.token(namespace, sa, pod=_agent_pod(cp, namespace, sa, node))
            agents[node] = _client(cp.kubeconfig_for(f"agent-{node}", token))
        unbound = _client(cp.kubeconfig_for(f"agent-unbound-{suffix}", cp.token(namespace, sa)))
        admin = _client(cp.kubeconfig)
        clients = [*agents.values(), unbound, admin]
        # The policy is enforced once the API server's admission has loaded it (a probe that
        # got through before is removed below).
        def probe() -> str | None:
            name = f"nr-{suffix}-probe-{uuid.uuid4().hex[:6]}"
            probes.append(name)
            return _denied(lambda: unbound.create(api_path(STATES),
                                                  node_state_object(name, None)))
        wait_for(probe, 30, "the ValidatingAdmissionPolicy to be enforced")
        yield Restricted(cp, namespace, nodes, agents, unbound, admin)
    finally:
        for client in clients:
            client.close()
        cp.kubectl("delete", "-f", "-", "--ignore-not-found", "--wait=false",
                   input=yaml.safe_dump_all(docs), check=False)
        cp.kubectl("delete", "lwtnodestates", *node_names, *probes, "--ignore-not-found",
                   check=False)
        cp.kubectl("delete", "nodes", *node_names, "--ignore-not-found", "--wait=false",
                   check=False)
        cp.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def _denied(call: object) -> str | None:
    """The refusal's message when `call` is refused with 403, else None (it succeeded)."""
    try:
        call()  # type: ignore[operator]
    except ApiError as exc:
        if exc.status == 403:
            return exc.message
        raise
    return None


def _status(node: str) -> dict[str, object]:
    entry = node_state_entry(PolicyRef("shop", "web"), node_status(NodeResult(
        observed_generation=1, routes=2, attached_routes=2)))
    return {"status": node_state_status([entry])}


def test_agent_creates_and_writes_its_own_node_state(restricted: Restricted) -> None:
    x, _ = restricted.nodes
    agent = restricted.agents[x]
    created = agent.create(api_path(STATES), node_state_object(x, restricted.nodes[x]))
    assert created["metadata"]["ownerReferences"][0]["uid"] == restricted.nodes[x]
    written = agent.merge_patch(api_path(STATES, None, x, "status"), _status(x))
    assert written["status"]["summary"] == {"policies": 1, "errors": 0, "attachedRoutes": 2}
    assert agent.get(api_path(STATES, None, x))["status"]["policies"][0]["name"] == "web"


def test_agent_is_denied_another_nodes_state(restricted: Restricted) -> None:
    x, y = restricted.nodes
    agent = restricted.agents[x]
    message = _denied(lambda: agent.create(api_path(STATES),
                                           node_state_object(y, restricted.nodes[y])))
    assert message is not None and f"its own node {x}, not {y}" in message
    # Node y's agent creates its own; x may not overwrite it either.
    restricted.agents[y].create(api_path(STATES), node_state_object(y, restricted.nodes[y]))
    message = _denied(lambda: agent.merge_patch(api_path(STATES, None, y, "status"),
                                                _status(y)))
    assert message is not None and f"its own node {x}, not {y}" in message
    assert "status" not in restricted.admin.get(api_path(STATES, None, y))


def test_agent_is_denied_every_policy_write(restricted: Restricted) -> None:
    x, _ = restricted.nodes
    agent = restricted.agents[x]
    policy = {"apiVersion": schema.API_VERSION, "kind": schema.KIND,
              "metadata": {"name": "web", "namespace": restricted.namespace},
              "spec": {"podSelector": {}, "hooks": {"out": {"program": {"builtin": "counters"}}}}}
    path = api_path(POLICIES, restricted.namespace)
    assert _denied(lambda: agent.create(path, policy)) is not None
    restricted.admin.create(path, policy)
    named = api_path(POLICIES, restricted.namespace, "web")
    assert agent.get(named)["metadata"]["name"] == "web"  # reading is what it needs
    assert _denied(lambda: agent.merge_patch(f"{named}/status", {"status": {
        "conditions": []}})) is not None
    assert _denied(lambda: agent.merge_patch(named, {"metadata": {"labels": {"a": "b"}}}))
    assert _denied(lambda: agent.delete(named)) is not None


def test_a_token_without_node_claim_writes_no_node_state(restricted: Restricted) -> None:
    x, _ = restricted.nodes
    message = _denied(lambda: restricted.unbound.merge_patch(
        api_path(STATES, None, x, "status"), _status(x)))
    assert message is not None and "token bound to its pod" in message


def test_node_state_is_garbage_collected_with_its_node(restricted: Restricted) -> None:
    x, _ = restricted.nodes
    assert restricted.admin.get(api_path(STATES, None, x))  # created by the first test
    restricted.cp.kubectl("delete", "node", x, "--wait=false")

    def gone() -> bool:
        try:
            restricted.admin.get(api_path(STATES, None, x))
        except ApiError as exc:
            return exc.status == 404
        return False
    wait_for(gone, 60, f"the garbage collector to delete LwtNodeState {x}")
