"""A ClusterLwtRoutePolicy on the real API server, with the chart installed and two nodes made
of network namespaces (issue 16, "what must be shown").

One cluster policy (port-filter denying TCP 8080 on the out hook) selects the `app: web` pods
of the two namespaces labelled `team: a` and the remote pod subnet on node-a; the third
namespace's pod is not selected. Tenant policies on the same routes win by a lower priority
number or lose at equal priority, and both sides' entries in the node's LwtNodeState say so.
Deleting the cluster policy restores node-a's routes exactly (`ip -j -d route` before and
after), and node-b, which the policy's nodeSelector leaves out, never changes.
"""
from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lwt_policy import cluster_schema, contract, schema

from tests.agent.harness import wait_for
from tests.k8s.cluster import ControlPlane
from tests.k8s.stand import Stand, create_namespace, installed_stand
from tests.topology import Node, ip, route_dump

WEB = {"app": "web"}
REMOTE_V4, REMOTE_V6 = "10.214.1.0/24", "fd00:214:1::/64"  # node-b's podCIDRs (stand.py)


@pytest.fixture
def stand(control_plane: ControlPlane, bpffs: Path) -> Iterator[Stand]:
    with installed_stand(control_plane, bpffs, release=f"c{uuid.uuid4().hex[:5]}",
                         namespace=f"lwt-c{uuid.uuid4().hex[:5]}", pods_per_node=(3, 1),
                         prefix="lwtQ") as stand:
        namespaces = {"shop": "a", "blog": "a", "bank": "b"}
        try:
            for ns, team in namespaces.items():
                create_namespace(stand.cp, ns, None)
                stand.kubectl("label", "namespace", ns, f"team={team}")
            node_a, node_b = stand.nodes["node-a"], stand.nodes["node-b"]
            for index, ns in enumerate(namespaces):
                pod = node_a.pods[index]
                stand.kubelet.run_pod(ns, f"web-{index}", "node-a", WEB, [pod.ipv4, pod.ipv6])
            stand.kubelet.run_pod("shop", "web-b", "node-b", WEB,
                                  [node_b.pods[0].ipv4, node_b.pods[0].ipv6])
            # Host-gw style: node-a reaches node-b's pod CIDRs by a route of its own.
            ip(node_a.host, "route", "add", REMOTE_V4, "dev", "cl0")
            ip(node_a.host, "-6", "route", "add", REMOTE_V6, "dev", "cl0")
            yield stand
        finally:
            stand.kubectl("delete", cluster_schema.PLURAL, "--all", "--wait=true",
                          "--timeout=60s", check=False)
            stand.kubectl("delete", "namespace", *namespaces, "--wait=false", check=False)


def _cluster_policy() -> dict[str, Any]:
    return {"apiVersion": schema.API_VERSION, "kind": cluster_schema.KIND,
            "metadata": {"name": "platform"},
            "spec": {"namespaceSelector": {"matchLabels": {"team": "a"}},
                     "podSelector": {"matchLabels": WEB},
                     "podSubnets": ["remote"],
                     "nodeSelector": {"matchLabels": {"kubernetes.io/hostname": "node-a"}},
                     "hooks": {"out": {"program": {"builtin": "port-filter"},
                                       "config": {"denyTCPPorts": [8080]}}}}}


def _tenant_policy(namespace: str, name: str, priority: int) -> dict[str, Any]:
    return {"apiVersion": schema.API_VERSION, "kind": schema.KIND,
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"podSelector": {"matchLabels": WEB}, "priority": priority,
                     "hooks": {"out": {"program": {"builtin": "counters"}}}}}


def _entry(stand: Stand, node: str, namespace: str, name: str) -> dict[str, Any] | None:
    proc = stand.kubectl("get", schema.NODE_STATE_PLURAL, node, "-o", "json", check=False)
    state = json.loads(proc.stdout) if proc.returncode == 0 else {}
    for entry in (state.get("status") or {}).get("policies") or []:
        if (entry["namespace"], entry["name"]) == (namespace, name):
            return entry  # type: ignore[no-any-return]
    return None


def _ready(stand: Stand, args: list[str], generation: int | None = None) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = stand.cp.kubectl_json("get", *args)
        status = obj.get("status") or {}
        ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})
        current = obj["metadata"]["generation"]
        ok = (ready.get("status") == "True" and ready.get("observedGeneration") == current
              and (generation is None or current == generation))
        return obj if ok else None
    return wait_for(probe, 90, f"{' '.join(args)} Ready")  # type: ignore[no-any-return]


def _entry_where(stand: Stand, namespace: str, name: str, test: Any, what: str
                 ) -> dict[str, Any]:
    return wait_for(  # type: ignore[no-any-return]
        lambda: (e if (e := _entry(stand, "node-a", namespace, name)) is not None and test(e)
                 else None), 60, what)


def _summary(stand: Stand, args: list[str], key: str, value: int) -> None:
    """Wait until the policy object's own status.summary says `key: value`."""
    wait_for(lambda: (stand.cp.kubectl_json("get", *args).get("status") or {}).get(
        "summary", {}).get(key) == value, 60, f"{' '.join(args)}: summary.{key} == {value}")


def _reaches(node: Node, index: int, port: int) -> bool:
    pod = node.pods[index]
    listener = node.tcp_listen(pod.ns, pod.ipv4, port)
    try:
        return node.tcp_connects(node.client, pod.ipv4, port, timeout=0.5)
    finally:
        listener.close()


def _route_encap(node: Node, prefix: str) -> str:
    line = ip(node.host, "-6" if ":" in prefix else "-4", "route", "show", prefix).strip()
    return line.split("encap", 1)[1].split(" dev ")[0].strip() if "encap" in line else ""


def _diagnostics(stand: Stand) -> str:
    """The operator's and agents' log tails and the cluster policy, for a failure message."""
    out = [stand.kubectl("get", cluster_schema.PLURAL, "-o", "yaml", check=False).stdout]
    for log in sorted(stand.workdir.rglob("*.log")):
        lines = log.read_text(errors="replace").splitlines()
        out.append(f"--- {log.name}\n" + "\n".join(lines[-25:]))
    return "\n".join(out)[-12000:]


def test_cluster_policy_precedence_and_exact_restore(stand: Stand) -> None:
    try:
        _scenario(stand)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_diagnostics(stand)}") from None


def _scenario(stand: Stand) -> None:
    node_a, node_b = stand.nodes["node-a"], stand.nodes["node-b"]
    # A tenant's policy that wins by priority, there before the cluster policy.
    stand.apply([_tenant_policy("shop", "web-count", 10)])
    _ready(stand, [schema.PLURAL, "-n", "shop", "web-count"])
    before_a, before_b = route_dump(node_a.host), route_dump(node_b.host)
    assert all(_reaches(node_a, i, 8080) for i in range(3))

    stand.apply([_cluster_policy()])
    obj = _ready(stand, [cluster_schema.PLURAL, "platform"])
    accepted = next(c for c in obj["status"]["conditions"] if c["type"] == "Accepted")
    assert accepted["status"] == "True"
    assert contract.FINALIZER in obj["metadata"]["finalizers"]
    printed = stand.kubectl("get", "clrp").stdout
    assert "platform" in printed and "True" in printed, printed

    # blog's pod and the remote subnet carry the cluster policy; shop's pod stays with the
    # tenant (priority 10 beats 100); bank (team b) is not selected.
    assert "/platform/out/" in _route_encap(node_a, REMOTE_V4)
    assert "/platform/out/" in _route_encap(node_a, REMOTE_V6)
    assert "/shop/web-count/out/" in _route_encap(node_a, node_a.pods[0].ipv4)
    assert "/platform/out/" in _route_encap(node_a, node_a.pods[1].ipv4)
    assert _route_encap(node_a, node_a.pods[2].ipv4) == ""
    assert _reaches(node_a, 0, 8080) and not _reaches(node_a, 1, 8080)
    assert _reaches(node_a, 1, 80) and _reaches(node_a, 2, 8080)
    # Both sides say so: the cluster policy lost shop's pod, the tenant won it.
    platform = _entry_where(stand, "", "platform", lambda e: e.get("conflicts"),
                            "platform's conflict on node-a")
    assert [(c["hook"], c["winner"], c["routes"]) for c in platform["conflicts"]] == [
        ("out", "shop/web-count", 2)]
    assert "priority 10" in platform["conflicts"][0]["reason"]
    tenant = _entry_where(stand, "shop", "web-count", lambda e: e.get("overrides"),
                          "web-count's override on node-a")
    assert tenant["overrides"] == [{"hook": "out", "loser": "platform", "routes": 2}]
    # ... and so do the two policy objects themselves.
    _summary(stand, [cluster_schema.PLURAL, "platform"], "routesLost", 2)
    _summary(stand, [schema.PLURAL, "-n", "shop", "web-count"], "routesWon", 2)

    # A tenant policy at the default priority loses to the cluster policy.
    stand.apply([_tenant_policy("blog", "web-log", 100)])
    loser = _entry_where(stand, "blog", "web-log", lambda e: e.get("conflicts"),
                         "web-log's conflict on node-a")
    assert [(c["hook"], c["winner"], c["routes"]) for c in loser["conflicts"]] == [
        ("out", "platform", 2)]
    assert "cluster policies win" in loser["conflicts"][0]["reason"]
    platform = _entry_where(stand, "", "platform",
                            lambda e: len(e.get("overrides") or []) == 1,
                            "platform's override on node-a")
    assert platform["overrides"] == [{"hook": "out", "loser": "blog/web-log", "routes": 2}]
    _summary(stand, [schema.PLURAL, "-n", "blog", "web-log"], "routesLost", 2)
    _summary(stand, [cluster_schema.PLURAL, "platform"], "routesWon", 2)
    assert not _reaches(node_a, 1, 8080)
    stand.kubectl("delete", schema.PLURAL, "-n", "blog", "web-log", "--timeout=60s")

    # Deleting the cluster policy waits for node-a to detach, then node-a is as before.
    stand.kubectl("delete", cluster_schema.PLURAL, "platform", "--timeout=60s")
    assert route_dump(node_a.host) == before_a
    assert route_dump(node_b.host) == before_b
    assert _reaches(node_a, 1, 8080)
    events = json.loads(stand.kubectl(
        "get", "events", "-n", "default", "-o", "json",
        "--field-selector", "involvedObject.name=platform").stdout)["items"]
    assert {contract.ACCEPTED, contract.EVENT_DETACHED} <= {e["reason"] for e in events}, events
