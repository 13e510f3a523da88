"""A bridge-CNI node (pods behind `10.213.2.0/24 dev br0`): pod policies get owned /32
routes (created and removed by the agent), admin podSubnets policies ride on the node's
pod-CIDR route from the Node object of --nodes-file."""
from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from tests.agent.conftest import PREFIX
from tests.agent.harness import AgentProcess, builtin_hook, pod_objects, policy, write_docs
from tests.topology import Node, build_node, ip


@pytest.fixture
def bridge_node() -> Iterator[Node]:
    with build_node(PREFIX, pods=2, bridge=True) as built:
        yield built


def _routes(node: Node) -> dict[str, str]:
    return {line.split()[0]: line for line in ip(node.host, "route").splitlines()}


def test_owned_routes_and_pod_subnets_on_a_bridge_node(tmp_path, bridge_node: Node,
                                                        pin_dir) -> None:
    node = bridge_node
    agent = AgentProcess(tmp_path, node, pin_dir)
    try:
        write_docs(agent.pods, pod_objects(node, [{"app": "web"}, {"app": "db"}]))
        write_docs(agent.nodes, [{"apiVersion": "v1", "kind": "Node",
                                  "metadata": {"name": "node-a", "labels": {"zone": "z1"}},
                                  "spec": {"podCIDRs": ["10.213.2.0/24"]}}])
        subnet = policy("subnet-counters", {"in": builtin_hook("counters")},
                        namespace="lwt-system", selector=None,
                        nodeSelector={"matchLabels": {"zone": "z1"}})
        del subnet["spec"]["podSelector"]
        subnet["spec"]["podSubnets"] = ["local"]
        tenant_subnet = policy("tenant-subnet", {"in": builtin_hook("counters")})
        del tenant_subnet["spec"]["podSelector"]
        tenant_subnet["spec"]["podSubnets"] = ["local"]
        write_docs(agent.policies, [
            policy("deny", {"out": builtin_hook("port-filter", {"denyTCPPorts": [8080]})},
                   selector={"matchLabels": {"app": "web"}}),
            subnet, tenant_subnet])
        agent.start()
        agent.wait_ready("shop/deny")
        entry = agent.wait_ready("lwt-system/subnet-counters")
        # The pod-CIDR route, and web's owned /32 split from it, which inherits the admin's
        # in hook (tests/security/test_admin_inheritance.py).
        assert entry["routes"] == entry["attachedRoutes"] == 2
        refused = agent.wait_entry("shop/tenant-subnet", lambda e: e["lastError"] is not None)
        assert "spec.podSubnets" in refused["lastError"]["message"]

        web, db = node.pods
        routes = _routes(node)
        assert "proto 76" in routes[web.ipv4] and "lwt/shop/deny/out/" in routes[web.ipv4]
        assert "lwt/lwt-system/subnet-counters/in/" in routes[web.ipv4]
        assert "lwt/lwt-system/subnet-counters/in/" in routes["10.213.2.0/24"]
        assert db.ipv4 not in routes  # no policy on it: no owned route
        listener = node.tcp_listen(web.ns, web.ipv4, 8080)
        try:
            assert not node.tcp_connects(node.client, web.ipv4, 8080, timeout=0.4)
        finally:
            listener.close()
        assert node.ping(node.client, db.ipv4, count=3)
        assert agent.metric("lwt_route_packets_total", policy="subnet-counters",
                            pod_name="") >= 3  # subnet destinations have no pod

        assert agent.signal(signal.SIGTERM) == 0
        routes = _routes(node)
        assert web.ipv4 not in routes  # the owned /32 is gone again
        assert "encap" not in routes["10.213.2.0/24"]
    finally:
        agent.close()
