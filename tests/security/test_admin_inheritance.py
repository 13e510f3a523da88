"""Issue 12 item 5, "bypass an admin policy": on bridge/host-gw CNIs a tenant's pod policy got
an owned /32 carrying only the tenant's hooks; longest-prefix match then skipped the admin's
podSubnets route and nothing reported it. Now the pod route inherits the subnet policies'
hooks, contests are per hook by the usual rules, and the loser is reported.

Pure targeting here; the same attack with real traffic on a bridge-style node is
test_admin_policy_holds_on_a_tenant_owned_route below."""
from __future__ import annotations

import shutil
import signal
import uuid
from collections.abc import Iterator
from ipaddress import ip_network
from pathlib import Path

import pytest
from lwt_policy.model import BuiltinSource, PolicyRef
from lwt_policy.targets import desired_attachments

from tests.policy.conftest import ADMIN_NS
from tests.policy.test_targets import NODE, node, pod, policy

DENY_22 = {"out": {"program": {"builtin": "port-filter"}, "config": {"denyTCPPorts": [22]}},
           "xmit": {"program": {"builtin": "counters"}}}
POD = ip_network("10.244.1.7/32")


def _admin(priority: int | None = None) -> object:
    return policy("deny-ssh", ns=ADMIN_NS, hooks=DENY_22, subnets=["local"], priority=priority)


def _tenant(priority: int | None = None) -> object:
    return policy("mine", hooks={"out": {"program": {"builtin": "counters"}}},
                  priority=priority)


def _state(*policies: object) -> object:
    return desired_attachments(policies, [pod("web", ["10.244.1.7", "fd00::7"])],
                               [node(NODE, ["10.244.1.0/24"])], NODE, ADMIN_NS)


def test_the_admin_hooks_stay_on_a_tenant_owned_pod_route() -> None:
    state = _state(_admin(), _tenant())
    hooks = state.attachments[POD]
    assert hooks["out"].policy == PolicyRef(ADMIN_NS, "deny-ssh")  # 100 vs 100: name order
    assert hooks["out"].program == BuiltinSource("port-filter")
    assert hooks["xmit"].policy == PolicyRef(ADMIN_NS, "deny-ssh")  # a hook only it has
    (lost,) = [x for x in state.losers if x.destination == POD]
    assert (lost.policy, lost.hook, lost.winner) == (PolicyRef("shop", "mine"), "out",
                                                     PolicyRef(ADMIN_NS, "deny-ssh"))
    assert state.conflicts_of(PolicyRef("shop", "mine"))
    # The IPv6 address is not inside the IPv4 pod CIDR: the tenant keeps it alone.
    assert set(state.attachments[ip_network("fd00::7/128")]) == {"out"}
    assert POD in state.targeted[PolicyRef(ADMIN_NS, "deny-ssh")]


def test_a_tenant_wins_only_by_the_rules_and_per_hook() -> None:
    state = _state(_admin(priority=200), _tenant(priority=5))
    hooks = state.attachments[POD]
    assert hooks["out"].policy == PolicyRef("shop", "mine")
    assert hooks["xmit"].policy == PolicyRef(ADMIN_NS, "deny-ssh")  # no contest on xmit
    lost = [x for x in state.losers if x.destination == POD]
    assert [(x.policy, x.hook) for x in lost] == [(PolicyRef(ADMIN_NS, "deny-ssh"), "out")]
    assert "priority 5" in lost[0].reason


def test_untargeted_pods_get_no_route_of_their_own() -> None:
    state = _state(_admin())
    assert set(state.attachments) == {ip_network("10.244.1.0/24")}


# --- the same with real traffic ---------------------------------------------------------------

@pytest.fixture
def bridge_node() -> Iterator[object]:
    from tests.topology import build_node

    with build_node("lwtS", pods=1, bridge=True) as built:
        yield built


@pytest.fixture
def pin_dir(bpffs: Path) -> Iterator[Path]:
    path = bpffs / f"admin-{uuid.uuid4().hex[:8]}"
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_admin_policy_holds_on_a_tenant_owned_route(tmp_path, bridge_node, pin_dir) -> None:
    """Admin: deny TCP 8080 to the node's pod CIDR. Tenant: counters on its own pod. Before,
    the tenant's owned /32 carried only counters and port 8080 answered."""
    from tests.agent.harness import AgentProcess, builtin_hook, pod_objects, write_docs
    from tests.agent.harness import policy as agent_policy
    from tests.topology import ip

    node = bridge_node
    agent = AgentProcess(tmp_path, node, pin_dir)
    try:
        write_docs(agent.pods, pod_objects(node, [{"app": "web"}]))
        write_docs(agent.nodes, [{"apiVersion": "v1", "kind": "Node",
                                  "metadata": {"name": "node-a"},
                                  "spec": {"podCIDRs": ["10.213.2.0/24"]}}])
        admin = agent_policy("deny-8080", {"out": builtin_hook(
            "port-filter", {"denyTCPPorts": [8080]})}, namespace="lwt-system", selector=None)
        del admin["spec"]["podSelector"]
        admin["spec"]["podSubnets"] = ["local"]
        tenant = agent_policy("mine", {"out": builtin_hook("counters")},
                              selector={"matchLabels": {"app": "web"}})
        write_docs(agent.policies, [admin, tenant])
        agent.start()
        agent.wait_ready("lwt-system/deny-8080")
        entry = agent.wait_entry("shop/mine", lambda e: bool(e.get("conflicts")))
        assert entry["conflicts"][0]["winner"] == "lwt-system/deny-8080"
        (web,) = node.pods
        route = next(line for line in ip(node.host, "route").splitlines()
                     if line.startswith(web.ipv4 + " "))
        assert "lwt/lwt-system/deny-8080/out/" in route, route
        listener = node.tcp_listen(web.ns, web.ipv4, 8080)
        try:
            assert not node.tcp_connects(node.client, web.ipv4, 8080, timeout=0.4)
        finally:
            listener.close()
        listener = node.tcp_listen(web.ns, web.ipv4, 9090)
        try:
            assert node.tcp_connects(node.client, web.ipv4, 9090, timeout=2.0)
        finally:
            listener.close()
        assert agent.signal(signal.SIGTERM) == 0
    finally:
        agent.close()
