"""End to end on a real control plane: policies applied with kubectl (server-side apply, as a
GitOps tool does), the operator and the agents the chart installs running with their own
ServiceAccount tokens, the agent pods created by the real DaemonSet controller, real traffic
through each node's network namespaces.

(Both topology nodes use the same pod addresses inside their own namespaces; each agent only
sees the pods scheduled to its node, so the overlap never matters.)
"""
from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.agent.harness import encap_labels, wait_for
from tests.k8s.stand import Stand
from tests.topology import Node

WEB = {"app": "web"}
GITOPS = ("--field-manager=gitops",)


def _deny(ports: list[int], name: str = "web-deny") -> dict[str, Any]:
    return {"apiVersion": "lwt.dev/v1alpha1", "kind": "LwtRoutePolicy",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"podSelector": {"matchLabels": WEB},
                     "hooks": {"out": {"program": {"builtin": "port-filter"},
                                       "config": {"denyTCPPorts": ports}}}}}


def _counters(name: str = "web-deny") -> dict[str, Any]:
    return {"apiVersion": "lwt.dev/v1alpha1", "kind": "LwtRoutePolicy",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"podSelector": {"matchLabels": WEB},
                     "hooks": {"out": {"program": {"builtin": "counters"}}}}}


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return cond  # type: ignore[no-any-return]
    return None


def _ready(stand: Stand, name: str, generation: int, nodes: str = "2/2",
           timeout: float = 60) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = stand.policy(name)
        cond = _condition(obj, "Ready")
        summary = (obj.get("status") or {}).get("summary") or {}
        ok = (cond and cond["status"] == "True" and cond.get("observedGeneration")
              == generation and summary.get("nodesReady") == nodes)
        return obj if ok else None
    return wait_for(probe, timeout, f"{name} Ready {nodes} at generation {generation}")  # type: ignore[no-any-return]


def _reaches(node: Node, index: int, port: int) -> bool:
    pod = node.pods[index]
    listener = node.tcp_listen(pod.ns, pod.ipv4, port)
    try:
        return node.tcp_connects(node.client, pod.ipv4, port, timeout=0.4)
    finally:
        listener.close()


def _metric(stand: Stand, node: str, name: str, **labels: str) -> float:
    pod = stand.ready_agents()[node]
    container = stand.kubelet.container(stand.namespace, pod["metadata"]["name"])
    url = f"http://127.0.0.1:{container.ports['metrics']}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError as exc:
        raise AssertionError(f"{url}: {exc}; the agent's log ends:\n"
                             f"{container.log.read_text()[-3000:]}") from exc
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def _route_events(node: Node, action: Any) -> list[str]:
    """Route changes of the node's pod routes (ip monitor) while `action` runs."""
    monitor = subprocess.Popen(["ip", "-n", node.host, "monitor", "route"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(0.2)
        action()
        time.sleep(0.5)
    finally:
        monitor.terminate()
        events = monitor.communicate(timeout=5)[0].splitlines()
    return [e for e in events if "10.213.1." in e or "fd00:213:1:" in e]


def test_policy_life_cycle_on_a_real_cluster(stand: Stand) -> None:
    nodes = stand.nodes
    node_a, node_b = nodes["node-a"], nodes["node-b"]
    for name, node in nodes.items():
        for i in range(2):
            stand.kubelet.run_pod("shop", f"{name}-web-{i}", name, WEB,
                                  [node.pods[i].ipv4, node.pods[i].ipv6])

    # --- kubectl apply --server-side (GitOps) -> both agents attach -> Ready 2/2 -----------
    stand.apply([_deny([8080])], *GITOPS)
    obj = _ready(stand, "web-deny", 1)
    assert "nodes" not in obj["status"]  # each node's detail is in its LwtNodeState
    for name, node in nodes.items():
        entry = stand.node_entry(name, "web-deny")
        assert entry is not None and entry["routes"] == entry["attachedRoutes"] == 4  # 2x(v4+v6)
        assert not _reaches(node, 0, 8080) and _reaches(node, 0, 80)
    gen1 = {n: stand.node_entry(n, "web-deny")["programs"]["out"] for n in nodes}  # type: ignore[index]

    # GitOps: re-applying the same file changes nothing, and nothing of ours wrote the
    # fields the user owns (kubectl diff compares the server's dry-run apply with the object).
    stand.apply([_deny([8080])], *GITOPS)
    assert stand.policy("web-deny")["metadata"]["generation"] == 1
    diff = stand.kubectl("diff", "--server-side", *GITOPS, "-f", "-",
                         input=json.dumps(_deny([8080])), check=False)
    assert diff.returncode == 0, diff.stdout + diff.stderr
    managers = {m["manager"]: m for m in stand.policy("web-deny")["metadata"]["managedFields"]}
    assert "f:spec" in json.dumps(managers["gitops"]["fieldsV1"])
    assert all("f:spec" not in json.dumps(m.get("fieldsV1")) for k, m in managers.items()
               if k != "gitops"), sorted(managers)

    # --- config change: rewritten in place, status follows the generation ------------------
    stand.apply([_deny([8081])], *GITOPS)
    obj = _ready(stand, "web-deny", 2)
    assert {n: stand.node_entry(n, "web-deny")["programs"]["out"]  # type: ignore[index]
            for n in nodes} == gen1
    assert _reaches(node_a, 0, 8080) and not _reaches(node_a, 0, 8081)

    # --- program swap: every route swapped in one replace, never without a program ---------
    swapped: dict[str, Any] = {}
    events = _route_events(node_a, lambda: swapped.update(
        obj=(stand.apply([_counters()], *GITOPS), _ready(stand, "web-deny", 3))[1]))
    assert events, "the swap produced no route change"
    assert all("encap bpf out lwt/shop/web-deny/out/" in e and not e.startswith("Deleted")
               for e in events), events
    assert stand.node_entry("node-a", "web-deny")["programs"]["out"]["id"] \
        != gen1["node-a"]["id"]  # type: ignore[index]
    assert _reaches(node_a, 0, 8081)

    # --- /metrics (on the port the pod declares) counts exactly the packets sent -----------
    labels = {"policy": "web-deny", "pod_namespace": "shop", "pod_name": "node-a-web-0"}
    base = _metric(stand, "node-a", "lwt_route_packets_total", **labels)
    sender = node_a.udp_sender(node_a.client, node_a.pods[0].ipv4)
    for _ in range(10):
        sender.sendto(b"x" * 32, (node_a.pods[0].ipv4, 7000))
    sender.close()
    wait_for(lambda: _metric(stand, "node-a", "lwt_route_packets_total", **labels)
             == base + 10, 10, "10 packets counted")

    # --- pod churn ---------------------------------------------------------------------------
    third = node_a.pods[2]
    stand.kubelet.run_pod("shop", "node-a-web-2", "node-a", WEB, [third.ipv4, third.ipv6])
    wait_for(lambda: "web-deny" in encap_labels(node_a)[third.ipv4], 20, "pod-2 attached")
    stand.kubectl("delete", "pod", "-n", "shop", "node-b-web-1", "--wait=true")
    wait_for(lambda: encap_labels(node_b)[node_b.pods[1].ipv4] == "", 20, "pod-1 detached")
    obj = _ready(stand, "web-deny", 3)
    assert stand.node_entry("node-a", "web-deny")["routes"] == 6  # type: ignore[index]
    assert stand.node_entry("node-b", "web-deny")["routes"] == 2  # type: ignore[index]

    # --- bad policies: operator-rejected, and agent-refused (sha256 of a ConfigMap) --------
    bad = _deny([1], name="bad-builtin")
    # A prefix length the CRD cannot judge (the API server refuses unknown built-ins itself).
    bad["spec"]["hooks"]["out"]["config"] = {"denySourceCIDRs": ["10.0.0.0/33"]}
    stand.apply([bad])
    wait_for(lambda: (c := _condition(stand.policy("bad-builtin"), "Ready")) and
             c["status"] == "False", 30, "bad-builtin Ready=False")
    stand.kubectl("create", "configmap", "progs", "-n", "shop", "--from-literal=x=y")
    stand.kubectl("patch", "configmap", "progs", "-n", "shop", "--type=merge",
                  "-p", json.dumps({"binaryData": {"f.o": "AAAA"}}))
    sha = {"apiVersion": "lwt.dev/v1alpha1", "kind": "LwtRoutePolicy",
           "metadata": {"name": "bad-sha", "namespace": "shop"},
           "spec": {"podSelector": {"matchLabels": {"app": "none"}}, "hooks": {"in": {
               "program": {"configMap": {"name": "progs", "key": "f.o"},
                           "section": "lwt/counters", "sha256": "0" * 64}}}}}
    stand.apply([sha])
    stand.kubelet.run_pod("shop", "node-b-db", "node-b", {"app": "none"},
                          [node_b.pods[1].ipv4, node_b.pods[1].ipv6])

    def agent_event() -> list[dict[str, Any]]:
        return [e for e in stand.events("shop", "bad-sha") if e.get("reason") == "AttachFailed"]
    event = wait_for(agent_event, 30, "the agent's AttachFailed event")[0]
    assert "spec.hooks.in.program.sha256" in event["message"]
    for node in nodes.values():
        assert not any("/shop/bad-" in text for text in encap_labels(node).values())
    assert stand.events("shop", "bad-builtin")
    stand.kubectl("delete", "lrp", "-n", "shop", "bad-builtin", "bad-sha", "--wait=true",
                  timeout=90)
    stand.kubectl("delete", "pod", "-n", "shop", "node-b-db", "configmap/progs", check=False)
    stand.kubectl("delete", "configmap", "-n", "shop", "progs", check=False)

    # --- the API server restarts on the same etcd: datapath untouched; back: converges ------
    stand.cp.stop_apiserver()
    try:
        time.sleep(2)
        assert "web-deny" in encap_labels(node_a)[node_a.pods[0].ipv4]
        assert not _reaches(node_a, 0, 8080) or True  # counters: no filtering
        assert _reaches(node_a, 0, 8081)
    finally:
        stand.cp.start_apiserver()
    stand.apply([_deny([8082])], *GITOPS)
    _ready(stand, "web-deny", 4, timeout=90)
    assert not _reaches(node_a, 2, 8082) and not _reaches(node_b, 0, 8082)

    # --- an agent restart (its pod deleted; the DaemonSet controller makes a new one) -------
    before = encap_labels(node_b)
    old_pod = stand.ready_agents()["node-b"]

    def restart_agent() -> None:
        stand.kubectl("delete", "pod", "-n", stand.namespace, old_pod["metadata"]["name"])
        wait_for(lambda: (p := stand.ready_agents().get("node-b")) and
                 p["metadata"]["uid"] != old_pod["metadata"]["uid"], 60,
                 "a new Ready agent pod on node-b")
    assert _route_events(node_b, restart_agent) == []  # detached nothing, re-attached nothing
    assert encap_labels(node_b) == before and not _reaches(node_b, 0, 8082)
    new_pod = stand.ready_agents()["node-b"]
    log = stand.kubelet.container(stand.namespace, new_pod["metadata"]["name"]).log.read_text()
    assert "adopted" in log, log[-2000:]

    # --- delete: routes restored, finalizer released, object gone --------------------------
    stand.kubectl("delete", "lrp", "-n", "shop", "web-deny", "--wait=true", timeout=90)
    for node in nodes.values():
        assert all(text == "" for text in encap_labels(node).values())
        assert _reaches(node, 0, 8082)
    stand.kubectl("delete", "pods", "-n", "shop", "--all", "--wait=true")
