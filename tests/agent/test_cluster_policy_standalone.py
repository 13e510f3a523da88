"""Standalone mode reads ClusterLwtRoutePolicies and Namespaces from its files (issue 16 item 6):
a real `lwt-agent run` on a netns node, real TCP."""
from __future__ import annotations

import re

from lwt_policy import cluster_schema, schema

from tests.agent.harness import (
    AgentProcess,
    builtin_hook,
    configmap,
    pod_objects,
    policy,
    write_docs,
)
from tests.conftest import BPF_BUILD
from tests.topology import Node, ip, route_dump

WEB = {"app": "web"}


def _namespace(name: str, team: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"team": team}}}


def _reaches(node: Node, index: int, port: int) -> bool:
    pod = node.pods[index]
    listener = node.tcp_listen(pod.ns, pod.ipv4, port)
    try:
        return node.tcp_connects(node.client, pod.ipv4, port, timeout=0.5)
    finally:
        listener.close()


def test_cluster_policy_across_namespaces_in_standalone_mode(agent: AgentProcess,
                                                             node: Node) -> None:
    pods = (pod_objects(node, [WEB], "shop") + pod_objects(node, [{}, WEB], "blog")[1:]
            + pod_objects(node, [{}, {}, WEB], "bank")[2:])
    write_docs(agent.pods, pods)
    write_docs(agent.nodes, [_namespace("shop", "a"), _namespace("blog", "a"),
                             _namespace("bank", "b")])
    tenant = policy("web-count", {"out": builtin_hook("counters")}, selector={
        "matchLabels": WEB})
    write_docs(agent.policies, [tenant])
    agent.start()
    agent.wait_ready("shop/web-count")
    before = route_dump(node.host)

    platform = {"apiVersion": schema.API_VERSION, "kind": cluster_schema.KIND,
                "metadata": {"name": "platform"},
                "spec": {"namespaceSelector": {"matchLabels": {"team": "a"}},
                         "podSelector": {"matchLabels": WEB},
                         "hooks": {"out": builtin_hook("port-filter",
                                                       {"denyTCPPorts": [8080]})}}}
    write_docs(agent.policies, [tenant, platform])
    entry = agent.wait_ready("/platform")
    assert entry["routes"] == entry["attachedRoutes"] == 4  # shop's and blog's pod, v4 + v6
    assert entry["overrides"] == [{"hook": "out", "loser": "shop/web-count", "routes": 2}]
    lost = agent.wait_entry("shop/web-count", lambda e: bool(e["conflicts"]))
    assert lost["conflicts"][0]["winner"] == "platform"
    assert agent.statuses()["/platform"]["kind"] == cluster_schema.KIND  # type: ignore[index]
    assert not _reaches(node, 0, 8080) and not _reaches(node, 1, 8080)
    assert _reaches(node, 0, 80) and _reaches(node, 2, 8080)
    route = ip(node.host, "route", "show", node.pods[1].ipv4)
    assert "lwt/_cluster/platform/out/" in route, route
    assert (agent.pin_dir / "_cluster" / "platform" / "out").is_dir()

    # Out of the files: detached, the tenant's program back on shop's pod.
    write_docs(agent.policies, [tenant])
    agent.wait_entry("shop/web-count", lambda e: not e["conflicts"]
                     and e["attachedRoutes"] == 2)
    assert _reaches(node, 1, 8080)
    assert not (agent.pin_dir / "_cluster").exists()
    # The routes are as before, but for the id of the tenant's program: it lost every route
    # here, so it was unloaded, and loaded again (same code, same tag) when it won them back.
    assert _without_prog_ids(route_dump(node.host)) == _without_prog_ids(before)


def _without_prog_ids(routes: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{k: re.sub(r"\.[0-9]+$", ".<id>", v) if k in ("in", "out", "xmit")
             and isinstance(v, str) else v for k, v in r.items()} for r in routes]


def test_cluster_policy_runs_a_configmap_program_of_the_admin_namespace(
        agent: AgentProcess, node: Node) -> None:
    """A cluster policy's ConfigMap lives in the admin namespace (lwt-system here, the
    standalone default): the same object in a tenant namespace is not what it names."""
    counters_o = (BPF_BUILD / "counters.o").read_bytes()
    write_docs(agent.configmaps, [configmap("progs", "counters.o", counters_o,
                                            namespace="shop")])
    write_docs(agent.pods, pod_objects(node, [WEB]))
    platform = {"apiVersion": schema.API_VERSION, "kind": cluster_schema.KIND,
                "metadata": {"name": "custom"},
                "spec": {"podSelector": {"matchLabels": WEB}, "hooks": {"in": {"program": {
                    "configMap": {"name": "progs", "key": "counters.o"},
                    "section": "lwt/counters"}}}}}
    write_docs(agent.policies, [platform])
    agent.start()
    missing = agent.wait_entry("/custom", lambda e: e["lastError"] is not None)
    assert "lwt-system" in missing["lastError"]["message"], missing
    write_docs(agent.configmaps, [configmap("progs", "counters.o", counters_o,
                                            namespace="lwt-system")])
    agent.wait_ready("/custom")
    route = ip(node.host, "route", "show", node.pods[0].ipv4)
    assert "lwt/_cluster/custom/in/" in route, route
