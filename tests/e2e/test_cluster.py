"""End to end, in one test process: the emulated API (tests/k8s), the operator (kopf, in a
thread), and two real agents (`lwt-agent run --kubeconfig`), each managing its own "node"
built of network namespaces, with pods created as API objects whose IPs are the pod
namespaces' addresses. Real traffic from each node's client checks what the policies say.

(Both topology nodes use the same pod addresses inside their own namespaces; each agent
only sees the pods scheduled to its node, so the overlap never matters.)
"""
from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lwt_operator.config import OperatorConfig, Timings
from lwt_operator.settings import AgentSettings

from tests.agent.harness import encap_labels, wait_for
from tests.e2e.harness import ClusterAgent, condition, create_pod, policy_path
from tests.k8s.client import ApiError, KubeClient, api_path
from tests.k8s.conftest import POLICIES, start_api_server
from tests.k8s.emulator import EmulatedApiServer
from tests.k8s.harness import RunningOperator
from tests.topology import Node, build_node

PREFIX = "lwtA"
DAEMONSET = api_path("apps/v1/daemonsets", "lwt-system", "lwt-agent")
WEB = {"app": "web"}


class Stand:
    def __init__(self, api: EmulatedApiServer, kube: KubeClient, nodes: dict[str, Node],
                 agents: dict[str, ClusterAgent]) -> None:
        self.api = api
        self.kube = kube
        self.nodes = nodes
        self.agents = agents

    def policy(self, name: str) -> dict[str, Any]:
        return self.kube.get(policy_path(name))  # type: ignore[no-any-return]

    def entry(self, name: str, node: str) -> dict[str, Any] | None:
        return ((self.policy(name).get("status") or {}).get("nodes") or {}).get(node)

    def ready(self, name: str, generation: int, nodes: str = "2/2") -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            obj = self.policy(name)
            cond = condition(obj, "Ready")
            summary = (obj.get("status") or {}).get("summary") or {}
            ok = (cond and cond["status"] == "True" and cond.get("observedGeneration")
                  == generation and summary.get("nodesReady") == nodes)
            return obj if ok else None
        return wait_for(probe, 30, f"{name} Ready {nodes} at generation {generation}")  # type: ignore[no-any-return]


@pytest.fixture
def stand(bpffs: Path) -> Iterator[Stand]:
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="lwt-e2e-") as tmp, \
            build_node(PREFIX, pods=3) as node_a, build_node(PREFIX, pods=2) as node_b:
        workdir = Path(tmp)
        api = start_api_server(workdir)
        kube = KubeClient(api.url)
        agents: dict[str, ClusterAgent] = {}
        operator: RunningOperator | None = None
        pins = bpffs / f"e2e-{uuid.uuid4().hex[:8]}"
        try:
            config = OperatorConfig(kubeconfig=api.kubeconfig, finalizer_timeout=10.0,
                                    agent=AgentSettings(image="registry.example/lwt:test"),
                                    timings=Timings.fast())
            operator = RunningOperator(config).start()
            nodes = {"node-a": node_a, "node-b": node_b}
            for name in nodes:
                kube.create(api_path("v1/nodes"), {"metadata": {"name": name, "labels": {
                    "kubernetes.io/os": "linux", "kubernetes.io/hostname": name}}})
            for name, node in nodes.items():
                for i in range(2):
                    create_pod(kube, f"{name}-web-{i}", name, WEB,
                               [node.pods[i].ipv4, node.pods[i].ipv6])
            for name, node in nodes.items():
                agents[name] = ClusterAgent(name, node, api.kubeconfig, pins / name, workdir)
            yield Stand(api, kube, nodes, agents)
        finally:
            for agent in agents.values():
                agent.stop()
            if operator is not None:
                operator.stop()
            api.close()
            shutil.rmtree(pins, ignore_errors=True)


def _deny(ports: list[int]) -> dict[str, Any]:
    return {"apiVersion": "lwt.dev/v1alpha1", "kind": "LwtRoutePolicy",
            "metadata": {"name": "web-deny"},
            "spec": {"podSelector": {"matchLabels": WEB},
                     "hooks": {"out": {"program": {"builtin": "port-filter"},
                                       "config": {"denyTCPPorts": ports}}}}}


def _reaches(node: Node, index: int, port: int) -> bool:
    pod = node.pods[index]
    listener = node.tcp_listen(pod.ns, pod.ipv4, port)
    try:
        return node.tcp_connects(node.client, pod.ipv4, port, timeout=0.4)
    finally:
        listener.close()


def _owner_routes(node: Node, name: str) -> dict[str, str]:
    return {dst: text for dst, text in encap_labels(node).items() if f"/shop/{name}/" in text}


def test_operator_and_two_agents_end_to_end(stand: Stand) -> None:
    kube, nodes, agents = stand.kube, stand.nodes, stand.agents
    node_a, node_b = nodes["node-a"], nodes["node-b"]

    # --- apply -> DaemonSet -> both agents attach -> Ready 2/2 -> traffic -------------------
    kube.create(api_path(POLICIES, "shop"), _deny([8080]))
    wait_for(lambda: kube.get(DAEMONSET), 20, "the agent DaemonSet")
    obj = stand.ready("web-deny", 1)
    for name, node in nodes.items():
        entry = obj["status"]["nodes"][name]
        assert entry["routes"] == entry["attachedRoutes"] == 4  # 2 pods x (v4 + v6)
        assert not _reaches(node, 0, 8080) and _reaches(node, 0, 80)
        assert agents[name].get("/readyz")[0] == 200
        assert agents[name].get("/healthz")[0] == 200
    gen1 = {n: obj["status"]["nodes"][n]["programs"]["out"] for n in nodes}

    # --- spec change (config): rewritten in place, status follows the generation -----------
    kube.merge_patch(policy_path("web-deny"), {"spec": {"hooks": {"out": {
        "config": {"denyTCPPorts": [8081]}}}}})
    obj = stand.ready("web-deny", 2)
    assert {n: obj["status"]["nodes"][n]["programs"]["out"] for n in nodes} == gen1
    assert _reaches(node_a, 0, 8080) and not _reaches(node_a, 0, 8081)

    # --- spec change (program): every route swapped in one replace, never plain -------------
    monitor = subprocess.Popen(["ip", "-n", node_a.host, "monitor", "route"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(0.2)
        kube.merge_patch(policy_path("web-deny"), {"spec": {"hooks": {"out": {
            "program": {"builtin": "counters"}, "config": None}}}})
        obj = stand.ready("web-deny", 3)
        time.sleep(0.3)
    finally:
        monitor.terminate()
        events = monitor.communicate(timeout=5)[0].splitlines()
    pod_events = [e for e in events if "10.213.1." in e or "fd00:213:1:" in e]
    assert pod_events, "the swap produced no route change"
    assert all("encap bpf out lwt/shop/web-deny/out/" in e and not e.startswith("Deleted")
               for e in pod_events), pod_events  # no window without a program
    assert obj["status"]["nodes"]["node-a"]["programs"]["out"]["id"] != gen1["node-a"]["id"]
    assert _reaches(node_a, 0, 8081)

    # --- /metrics counts exactly the packets sent ------------------------------------------
    pod = node_a.pods[0]
    base = agents["node-a"].metric("lwt_route_packets_total", policy="web-deny",
                                   pod="shop/node-a-web-0")  # the TCP checks above count too
    sender = node_a.udp_sender(node_a.client, pod.ipv4)
    for _ in range(10):
        sender.sendto(b"x" * 32, (pod.ipv4, 7000))
    sender.close()
    counted = wait_for(lambda: agents["node-a"].metric(
        "lwt_route_packets_total", policy="web-deny", pod="shop/node-a-web-0") == base + 10
        or None,
        5, "10 packets counted")
    assert counted
    assert agents["node-b"].metric("lwt_route_packets_total", policy="web-deny",
                                   pod="shop/node-b-web-0") == 0

    # --- pod added / deleted -----------------------------------------------------------------
    third = node_a.pods[2]
    create_pod(kube, "node-a-web-2", "node-a", WEB, [third.ipv4, third.ipv6])
    wait_for(lambda: "web-deny" in encap_labels(node_a)[third.ipv4], 10, "pod-2 attached")
    kube.delete(api_path("v1/pods", "shop", "node-b-web-1"))
    wait_for(lambda: encap_labels(node_b)[node_b.pods[1].ipv4] == "", 10, "pod-1 detached")
    obj = stand.ready("web-deny", 3)
    assert obj["status"]["nodes"]["node-a"]["routes"] == 6
    assert obj["status"]["nodes"]["node-b"]["routes"] == 2

    # --- bad policies: operator-rejected, and agent-refused (sha256) -------------------------
    bad = _deny([1])
    bad["metadata"]["name"] = "bad-builtin"
    bad["spec"]["hooks"]["out"]["program"]["builtin"] = "no-such-program"
    kube.create(api_path(POLICIES, "shop"), bad)
    wait_for(lambda: (c := condition(stand.policy("bad-builtin"), "Ready")) and
             c["status"] == "False", 20, "bad-builtin Ready=False")
    kube.create(api_path("v1/configmaps", "shop"), {"metadata": {"name": "progs"},
                "binaryData": {"f.o": "AAAA"}})
    sha = {"apiVersion": "lwt.dev/v1alpha1", "kind": "LwtRoutePolicy",
           "metadata": {"name": "bad-sha"},
           "spec": {"podSelector": {"matchLabels": {"app": "none"}}, "hooks": {"in": {
               "program": {"configMap": {"name": "progs", "key": "f.o"},
                           "section": "lwt/counters", "sha256": "0" * 64}}}}}
    kube.create(api_path(POLICIES, "shop"), sha)
    # (no pod matches bad-sha, so no program is needed; create one that does)
    create_pod(kube, "node-b-db", "node-b", {"app": "none"},
               [node_b.pods[1].ipv4, node_b.pods[1].ipv6])

    def agent_event() -> list[dict[str, Any]]:
        items = kube.get(api_path("v1/events", "shop"))["items"]
        return [e for e in items if e.get("reason") == "AttachFailed"
                and e["involvedObject"]["name"] == "bad-sha"]
    event = wait_for(agent_event, 20, "the agent's AttachFailed event")[0]
    assert "spec.hooks.in.program.sha256" in event["message"]
    entry = wait_for(lambda: stand.entry("bad-sha", "node-b"), 10, "bad-sha node-b entry")
    assert "sha256" in entry["lastError"]["message"]
    for node in nodes.values():
        assert _owner_routes(node, "bad-builtin") == {}
        assert _owner_routes(node, "bad-sha") == {}
    operator_events = [e for e in kube.get(api_path("v1/events", "shop"))["items"]
                       if e["involvedObject"]["name"] == "bad-builtin"]
    assert operator_events
    kube.delete(policy_path("bad-builtin"))
    kube.delete(policy_path("bad-sha"))
    kube.delete(api_path("v1/pods", "shop", "node-b-db"))

    # --- the API server goes away: datapath untouched; back: converges ---------------------
    stand.api.stop_listening()
    try:
        time.sleep(1.5)
        assert "web-deny" in encap_labels(node_a)[node_a.pods[0].ipv4]
        assert agents["node-a"].metric("lwt_route_packets_total", policy="web-deny") >= 10
    finally:
        stand.api.start_listening()
    kube.merge_patch(policy_path("web-deny"), {"spec": {"hooks": {"out": {
        "program": {"builtin": "port-filter"}, "config": {"denyTCPPorts": [8082]}}}}})
    stand.ready("web-deny", 4)
    assert not _reaches(node_a, 2, 8082) and not _reaches(node_b, 0, 8082)

    # --- an agent restart (DaemonSet upgrade) detaches nothing and adopts everything --------
    before = encap_labels(node_b)
    assert agents["node-b"].stop() == 0
    assert encap_labels(node_b) == before and not _reaches(node_b, 0, 8082)
    monitor = subprocess.Popen(["ip", "-n", node_b.host, "monitor", "route"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(0.2)
        old = agents["node-b"]
        agents["node-b"] = ClusterAgent("node-b", node_b, stand.api.kubeconfig, old.pin_dir,
                                        old.log_path.parent, run=2)
        wait_for(lambda: agents["node-b"].get("/readyz")[0] == 200, 20, "node-b ready again")
        time.sleep(0.5)
    finally:
        monitor.terminate()
        events = monitor.communicate(timeout=5)[0].splitlines()
    assert [e for e in events if "10.213.1." in e or "fd00:213:1:" in e] == []
    assert encap_labels(node_b) == before
    assert "adopted" in agents["node-b"].log()

    # --- delete: routes restored, finalizer released, object gone --------------------------
    kube.delete(policy_path("web-deny"))

    def gone() -> bool:
        try:
            kube.get(policy_path("web-deny"))
        except ApiError as exc:
            return exc.status == 404
        return False
    wait_for(gone, 30, "the policy gone (finalizer released)")
    for node in nodes.values():
        assert all(text == "" for text in encap_labels(node).values())
        assert _reaches(node, 0, 8082)
