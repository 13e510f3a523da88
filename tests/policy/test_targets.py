"""Pure targeting: pods, nodes and policies in, per-destination per-hook attachments out."""
from __future__ import annotations

from ipaddress import ip_network
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lwt_policy.model import BuiltinSource, ConfigMapSource, LwtRoutePolicy, PolicyRef, parse_policy
from lwt_policy.targets import PodRef, desired_attachments, node_pod_cidrs, pod_prefixes

from tests.policy.conftest import ADMIN_NS

NODE = "node-a"


def pod(name: str, ips: list[str], *, ns: str = "shop", node: str = NODE,
        labels: dict[str, str] | None = None, phase: str = "Running",
        host_network: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"nodeName": node}
    if host_network:
        spec["hostNetwork"] = True
    status: dict[str, Any] = {"phase": phase, "podIPs": [{"ip": ip} for ip in ips]}
    if ips:
        status["podIP"] = ips[0]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels or {"app": "web"}},
            "spec": spec, "status": status}


def node(name: str, cidrs: list[str], labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {"podCIDR": cidrs[0] if cidrs else None, "podCIDRs": cidrs}}


def policy(name: str, *, ns: str = "shop", hooks: dict[str, Any] | None = None,
           priority: int | None = None, selector: dict[str, Any] | None = None,
           subnets: list[str] | None = None, node_selector: dict[str, Any] | None = None,
           failure: str | None = None, deleting: bool = False) -> LwtRoutePolicy:
    spec: dict[str, Any] = {"hooks": hooks or {"out": {"program": {"builtin": "counters"}}}}
    if subnets is not None:
        spec["podSubnets"] = subnets
    else:
        spec["podSelector"] = selector if selector is not None else {
            "matchLabels": {"app": "web"}}
    if priority is not None:
        spec["priority"] = priority
    if node_selector is not None:
        spec["nodeSelector"] = node_selector
    if failure is not None:
        spec["failurePolicy"] = failure
    meta: dict[str, Any] = {"name": name, "namespace": ns, "uid": f"uid-{name}",
                            "generation": 2}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return parse_policy({"apiVersion": "lwt.dev/v1alpha1", "kind": "LwtRoutePolicy",
                         "metadata": meta, "spec": spec}, admin_namespace=ADMIN_NS)


NODES = [node(NODE, ["10.244.1.0/24", "fd00:244:1::/64"], {"zone": "a"}),
         node("node-b", ["10.244.2.0/24"], {"zone": "b"}),
         node("node-c", ["10.244.3.0/24", "fd00:244:3::/64"], {"zone": "a"})]


def desired(policies: list[LwtRoutePolicy], pods: list[dict[str, Any]],
            nodes: list[dict[str, Any]] = NODES, node_name: str = NODE):
    return desired_attachments(policies, pods, nodes, node_name, ADMIN_NS)


def net(text: str):
    return ip_network(text)


def test_pod_selector_targets_every_ip_of_matching_pods_on_this_node() -> None:
    pods = [pod("web-1", ["10.244.1.7", "fd00:244:1::7"]),
            pod("web-2", ["10.244.1.8"]),
            pod("db-1", ["10.244.1.9"], labels={"app": "db"}),
            pod("web-far", ["10.244.2.5"], node="node-b")]
    state = desired([policy("p")], pods)
    assert set(state.attachments) == {net("10.244.1.7/32"), net("fd00:244:1::7/128"),
                                      net("10.244.1.8/32")}
    dest = state.destinations[net("fd00:244:1::7/128")]
    assert dest.kind == "pod" and dest.pod == PodRef("shop", "web-1")
    att = state.attachments[net("10.244.1.8/32")]["out"]
    assert att.policy == PolicyRef("shop", "p")
    assert att.program == BuiltinSource("counters")
    assert att.failure_policy == "FailOpen" and att.priority == 100
    assert att.uid == "uid-p" and att.generation == 2
    assert state.losers == [] and state.excluded == []


@pytest.mark.parametrize("bad_pod", [
    pod("pending", ["10.244.1.20"], phase="Pending"),
    pod("done", ["10.244.1.21"], phase="Succeeded"),
    pod("host", ["192.0.2.5"], host_network=True),
    pod("no-ip", []),
    pod("other-ns", ["10.244.1.22"], ns="billing"),
    pod("garbage-ip", ["not-an-ip"]),
], ids=lambda p: p["metadata"]["name"])
def test_pods_that_have_no_route_of_their_own_are_skipped(bad_pod: dict[str, Any]) -> None:
    state = desired([policy("p")], [bad_pod, pod("ok", ["10.244.1.30"])])
    assert set(state.attachments) == {net("10.244.1.30/32")}


def test_pod_ip_fallback_and_dedup() -> None:
    only_pod_ip = pod("a", [])
    only_pod_ip["status"]["podIP"] = "10.244.1.40"
    assert pod_prefixes(only_pod_ip) == [net("10.244.1.40/32")]
    twice = pod("b", ["10.244.1.41", "10.244.1.41"])
    assert pod_prefixes(twice) == [net("10.244.1.41/32")]


def test_selector_expressions_and_empty_selector() -> None:
    pods = [pod("a", ["10.244.1.1"], labels={"tier": "frontend"}),
            pod("b", ["10.244.1.2"], labels={"tier": "backend", "canary": "yes"}),
            pod("c", ["10.244.1.3"], labels={"tier": "batch"})]
    expr = {"matchExpressions": [{"key": "tier", "operator": "In",
                                  "values": ["frontend", "backend"]},
                                 {"key": "canary", "operator": "DoesNotExist"}]}
    assert set(desired([policy("p", selector=expr)], pods).attachments) == {
        net("10.244.1.1/32")}
    everything = desired([policy("all", selector={})], pods)
    assert len(everything.attachments) == 3


def test_node_selector_applies_to_this_nodes_labels() -> None:
    pods = [pod("web-1", ["10.244.1.7"])]
    zone_a = policy("za", node_selector={"matchLabels": {"zone": "a"}})
    zone_b = policy("zb", node_selector={"matchLabels": {"zone": "b"}})
    state = desired([zone_a, zone_b], pods)
    assert state.attachments[net("10.244.1.7/32")]["out"].policy.name == "za"
    assert [(e.policy.name, e.reason) for e in state.excluded] == [
        ("zb", "nodeSelector does not match this node")]
    # The same policies seen from node-b: zb applies there (its pods, its labels).
    state_b = desired([zone_a, zone_b], [pod("web-b", ["10.244.2.7"], node="node-b")],
                      node_name="node-b")
    assert state_b.attachments[net("10.244.2.7/32")]["out"].policy.name == "zb"


def test_unknown_node_has_no_labels() -> None:
    sel = policy("sel", node_selector={"matchLabels": {"zone": "a"}})
    anywhere = policy("any")
    state = desired([sel, anywhere], [pod("w", ["10.0.0.5"], node="lonely")],
                    nodes=[], node_name="lonely")
    assert {a["out"].policy.name for a in state.attachments.values()} == {"any"}
    assert [e.policy.name for e in state.excluded] == ["sel"]


def test_pod_subnets_local_and_remote() -> None:
    admin = policy("subnets", ns=ADMIN_NS, subnets=["local", "remote"],
                   hooks={"in": {"program": {"builtin": "counters"}}})
    state = desired([admin], [])
    kinds = {str(p): (d.kind, d.node) for p, d in state.destinations.items()}
    assert kinds == {
        "10.244.1.0/24": ("local-subnet", NODE),
        "fd00:244:1::/64": ("local-subnet", NODE),
        "10.244.2.0/24": ("remote-subnet", "node-b"),
        "10.244.3.0/24": ("remote-subnet", "node-c"),
        "fd00:244:3::/64": ("remote-subnet", "node-c"),
    }
    assert all(set(hooks) == {"in"} for hooks in state.attachments.values())
    local_only = desired([policy("l", ns=ADMIN_NS, subnets=["local"])], [])
    assert set(local_only.attachments) == {net("10.244.1.0/24"), net("fd00:244:1::/64")}
    remote_only = desired([policy("r", ns=ADMIN_NS, subnets=["remote"])], [])
    assert net("10.244.1.0/24") not in remote_only.attachments
    assert len(remote_only.attachments) == 3


def test_pod_subnets_outside_admin_namespace_are_excluded() -> None:
    # parse_policy already refuses it; targeting re-checks (e.g. admin namespace changed).
    admin_policy = policy("s", ns=ADMIN_NS, subnets=["local"])
    state = desired_attachments([admin_policy], [], NODES, NODE, "another-admin-ns")
    assert state.attachments == {}
    assert "admin namespace" in state.excluded[0].reason


def test_node_pod_cidrs_fallback_and_garbage() -> None:
    legacy = {"metadata": {"name": "n"}, "spec": {"podCIDR": "10.1.0.0/24"}}
    assert node_pod_cidrs(legacy) == [net("10.1.0.0/24")]
    assert node_pod_cidrs({"metadata": {"name": "n"}, "spec": {"podCIDRs": ["bad"]}}) == []
    assert node_pod_cidrs({"metadata": {"name": "n"}}) == []


def test_deleting_policies_attach_nothing() -> None:
    state = desired([policy("gone", deleting=True)], [pod("w", ["10.244.1.7"])])
    assert state.attachments == {}
    assert state.excluded[0].reason.startswith("being deleted")


def test_lower_priority_number_wins_per_hook() -> None:
    pods = [pod("w", ["10.244.1.7"])]
    strong = policy("zz-strong", priority=10,
                    hooks={"out": {"program": {"builtin": "port-filter"},
                                   "config": {"denyTCPPorts": [22]}}})
    weak = policy("aa-weak", priority=500,
                  hooks={"out": {"program": {"builtin": "counters"}},
                         "in": {"program": {"builtin": "counters"}}})
    state = desired([weak, strong], pods)
    hooks = state.attachments[net("10.244.1.7/32")]
    assert hooks["out"].policy.name == "zz-strong"
    assert hooks["out"].config == {"denyTCPPorts": [22]}
    # The weak policy keeps the hook nobody else wants.
    assert hooks["in"].policy.name == "aa-weak"
    (loser,) = state.losers
    assert (loser.policy.name, loser.hook, loser.winner.name) == ("aa-weak", "out", "zz-strong")
    assert "priority 10" in loser.reason
    assert state.conflicts_of(PolicyRef("shop", "aa-weak")) == [
        ("out", PolicyRef("shop", "zz-strong"), 1, loser.reason)]
    assert state.routes_of(PolicyRef("shop", "aa-weak")) == {net("10.244.1.7/32")}


def test_priority_ties_go_to_the_name_that_sorts_first() -> None:
    pods = [pod("w1", ["10.244.1.7"]), pod("w2", ["10.244.1.8"])]
    state = desired([policy("beta"), policy("alpha")], pods)
    assert {h["out"].policy.name for h in state.attachments.values()} == {"alpha"}
    assert [(x.policy.name, str(x.destination)) for x in state.losers] == [
        ("beta", "10.244.1.7/32"), ("beta", "10.244.1.8/32")]
    assert "same priority" in state.losers[0].reason
    assert state.conflicts_of(PolicyRef("shop", "beta"))[0][2] == 2
    assert state.routes_of(PolicyRef("shop", "beta")) == set()
    assert state.targeted[PolicyRef("shop", "beta")] == {net("10.244.1.7/32"),
                                                         net("10.244.1.8/32")}


def test_result_does_not_depend_on_input_order() -> None:
    pods = [pod(f"w{i}", [f"10.244.1.{i}"]) for i in range(1, 6)]
    policies = [policy("c"), policy("a", priority=100), policy("b", priority=50)]
    one = desired(policies, pods)
    two = desired(list(reversed(policies)), list(reversed(pods)))
    assert one.attachments == two.attachments
    assert one.losers == two.losers


def test_subnet_policies_conflict_like_pod_policies() -> None:
    # Tenants can only reach their own pods, so conflicts are within one namespace: pod
    # policies of a namespace, or the admin namespace's subnet policies.
    audit = policy("audit", ns=ADMIN_NS, subnets=["local"], priority=5)
    bulk = policy("bulk", ns=ADMIN_NS, subnets=["local", "remote"], priority=50)
    state = desired([bulk, audit], [])
    assert state.attachments[net("10.244.1.0/24")]["out"].policy.name == "audit"
    assert state.attachments[net("10.244.2.0/24")]["out"].policy.name == "bulk"
    assert {str(x.destination) for x in state.losers} == {"10.244.1.0/24", "fd00:244:1::/64"}


def test_configmap_source_headroom_and_failure_policy_are_carried() -> None:
    hooks = {"xmit": {"program": {"configMap": {"name": "prog", "key": "f.o"},
                                  "section": "lwt_xmit"}, "headroom": 24}}
    state = desired([policy("cm", hooks=hooks, failure="FailClosed")],
                    [pod("w", ["10.244.1.7"])])
    att = state.attachments[net("10.244.1.7/32")]["xmit"]
    assert att.program == ConfigMapSource("shop", "prog", "f.o", "lwt_xmit", None)
    assert att.headroom == 24 and att.failure_policy == "FailClosed"


def test_scale_thousand_pods_stays_fast() -> None:
    import time

    pods = [pod(f"w{i}", [f"10.244.{i // 250}.{i % 250 + 1}"]) for i in range(1000)]
    policies = [policy(f"p{i}", priority=i) for i in range(5)]
    start = time.perf_counter()
    state = desired(policies, pods)
    elapsed = time.perf_counter() - start
    assert len(state.attachments) == 1000
    assert len(state.losers) == 4000
    assert elapsed < 2.0, f"targeting 1000 pods x 5 policies took {elapsed:.2f}s"


# --- properties over random clusters ---------------------------------------------------------


LABEL_VALUES = ["a", "b", "c"]
HOOK_SETS = [("out",), ("in",), ("in", "out"), ("xmit",)]


@st.composite
def clusters(draw: st.DrawFn):
    pods = []
    for i in range(draw(st.integers(0, 12))):
        pods.append(pod(f"p{i}", [f"10.244.1.{i + 1}"] + ([f"fd00::{i + 1}"] if i % 3 else []),
                        node=draw(st.sampled_from([NODE, "node-b"])),
                        labels={"app": draw(st.sampled_from(LABEL_VALUES))},
                        phase=draw(st.sampled_from(["Running", "Running", "Pending"]))))
    policies = []
    for i in range(draw(st.integers(0, 6))):
        hooks = {h: {"program": {"builtin": "counters"}}
                 for h in draw(st.sampled_from(HOOK_SETS))}
        if draw(st.booleans()):
            selector: dict[str, Any] = {"matchLabels": {"app": draw(st.sampled_from(LABEL_VALUES))}}
        else:
            selector = {"matchExpressions": [{"key": "app", "operator": "NotIn",
                                              "values": [draw(st.sampled_from(LABEL_VALUES))]}]}
        policies.append(policy(f"pol{i}", hooks=hooks, selector=selector,
                               priority=draw(st.sampled_from([10, 100, 100, 500]))))
    return policies, pods


@settings(max_examples=150, deadline=None)
@given(clusters())
def test_every_contested_hook_has_exactly_the_strongest_winner(cluster) -> None:
    policies, pods = cluster
    state = desired(policies, pods)
    by_ref = {p.ref: p for p in policies}
    running_here = [p for p in pods if p["spec"]["nodeName"] == NODE
                    and p["status"]["phase"] == "Running"]
    for prefix, hooks in state.attachments.items():
        owner = next(p for p in running_here if prefix in pod_prefixes(p))
        labels = owner["metadata"]["labels"]
        for hook, attachment in hooks.items():
            contenders = [p for p in policies if hook in p.spec.hooks
                          and p.spec.pod_selector.matches(labels)]
            best = min(contenders, key=lambda p: (p.spec.priority, p.ref))
            assert attachment.policy == best.ref
            losers = {x.policy for x in state.losers
                      if x.destination == prefix and x.hook == hook}
            assert losers == {p.ref for p in contenders} - {best.ref}
    # Nothing else is attached: every attached prefix belongs to a Running pod of this node.
    here = {pfx for p in running_here for pfx in pod_prefixes(p)}
    assert set(state.attachments) <= here
    # Every pod IP matched by some policy is attached on each hook some matching policy has.
    for p in running_here:
        for pfx in pod_prefixes(p):
            wanted = {h for pol in policies if pol.spec.pod_selector.matches(
                p["metadata"]["labels"]) for h in pol.spec.hooks}
            assert set(state.attachments.get(pfx, {})) == wanted
    assert all(loser.policy in by_ref for loser in state.losers)
