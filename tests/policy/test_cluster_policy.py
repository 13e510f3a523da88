"""ClusterLwtRoutePolicy (issue 16): validation of the kind, its targets and the precedence
between cluster and namespaced policies, all pure (no API server, no kernel)."""
from __future__ import annotations

from ipaddress import ip_network
from typing import Any

import pytest
from lwt_policy import cluster_schema, crd, schema
from lwt_policy.admission import Layer, refused_by
from lwt_policy.model import LwtRoutePolicy, PolicyRef, parse_policy, validate_policy
from lwt_policy.targets import desired_attachments

from tests.policy.conftest import ADMIN_NS
from tests.policy.test_targets import NODE, node, pod, policy

COUNTERS = {"in": {"program": {"builtin": "counters"}}}


def cluster_obj(name: str = "platform", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": schema.API_VERSION, "kind": cluster_schema.KIND,
            "metadata": {"name": name, "uid": f"uid-{name}", "generation": 1},
            "spec": {"hooks": COUNTERS, **spec}}


def cluster(name: str = "platform", **spec: Any) -> LwtRoutePolicy:
    return parse_policy(cluster_obj(name, **spec), admin_namespace=ADMIN_NS)


def rules(obj: dict[str, Any]) -> list[str]:
    return [p.rule for p in validate_policy(obj, admin_namespace=ADMIN_NS)]


# --- the kind -------------------------------------------------------------------------------


def test_cluster_policy_parses_without_a_namespace() -> None:
    obj = cluster_obj(podSelector={"matchLabels": {"app": "web"}},
                      namespaceSelector={"matchLabels": {"team": "a"}})
    obj["metadata"]["namespace"] = "ignored"  # the API server drops it for cluster scope
    parsed = parse_policy(obj, admin_namespace=ADMIN_NS)
    assert parsed.ref == PolicyRef("", "platform") and parsed.ref.cluster
    assert str(parsed.ref) == "platform"
    assert parsed.spec.namespace_selector is not None
    assert parsed.spec.priority == schema.DEFAULT_PRIORITY


def test_pod_subnets_need_no_admin_namespace_in_the_cluster_kind() -> None:
    assert rules(cluster_obj(podSubnets=["local", "remote"])) == []


def test_one_cluster_policy_may_target_pods_and_subnets() -> None:
    assert rules(cluster_obj(podSelector={}, podSubnets=["remote"])) == []


@pytest.mark.parametrize(("spec", "rule"), [
    ({}, cluster_schema.CLUSTER_AT_LEAST_ONE_TARGET),
    ({"namespaceSelector": {}, "podSubnets": ["local"]},
     cluster_schema.NAMESPACE_SELECTOR_NEEDS_POD_SELECTOR),
])
def test_target_rules(spec: dict[str, Any], rule: schema.CelRule) -> None:
    problems = validate_policy(cluster_obj(**spec), admin_namespace=ADMIN_NS)
    assert rule.name in [p.rule for p in problems]
    assert refused_by(rule.name) is Layer.API_SERVER


def test_namespaced_kind_has_no_namespace_selector() -> None:
    obj = cluster_obj(podSelector={}, namespaceSelector={})
    obj["kind"] = schema.KIND
    obj["metadata"]["namespace"] = "shop"
    (problem,) = validate_policy(obj, admin_namespace=ADMIN_NS)
    assert (problem.path, problem.rule) == ("spec.namespaceSelector", "schema:unknown-field")


def test_configmap_programs_of_cluster_policies_live_in_the_admin_namespace() -> None:
    from lwt_policy.admission import policy_problems
    from lwt_policy.custom_programs import CustomProgramRule
    from lwt_policy.model import ConfigMapSource

    obj = cluster_obj(podSelector={})
    obj["spec"]["hooks"] = {"in": {"program": {"configMap": {"name": "p", "key": "o"},
                                               "section": "lwt_in"}}}
    source = parse_policy(obj, admin_namespace=ADMIN_NS).spec.hooks["in"].program
    assert source == ConfigMapSource(ADMIN_NS, "p", "o", "lwt_in")
    # The admin's rule: off by default, on for cluster policies whenever custom programs are.
    assert [p.rule for p in policy_problems(obj, admin_namespace=ADMIN_NS)] == [
        "custom-programs-allowed"]
    assert policy_problems(obj, admin_namespace=ADMIN_NS,
                           custom_programs=CustomProgramRule(enabled=True)) == []


def test_bad_namespace_selector_syntax_is_refused() -> None:
    obj = cluster_obj(podSelector={}, namespaceSelector={"matchLabels": {"-bad": "x"}})
    assert "label-selector-syntax" in rules(obj)


def test_generated_crd_is_cluster_scoped_and_shares_the_hooks() -> None:
    obj = crd.cluster_crd_object()
    assert obj["spec"]["scope"] == "Cluster"
    assert obj["spec"]["names"]["shortNames"] == ["clrp"]
    spec = obj["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["hooks"] == schema.spec_schema()["properties"]["hooks"]
    assert obj["spec"]["versions"][0]["additionalPrinterColumns"] == schema.printer_columns()


# --- targets and precedence -----------------------------------------------------------------

NS_LABELS = {"shop": {"team": "a"}, "blog": {"team": "a"}, "bank": {"team": "b"}}
PODS = [pod("web-1", ["10.244.1.11"], ns="shop"), pod("web-2", ["10.244.1.12"], ns="blog"),
        pod("web-3", ["10.244.1.13"], ns="bank")]
NODES = [node(NODE, ["10.244.1.0/24"]), node("node-b", ["10.244.2.0/24"])]


def test_namespace_selector_picks_pods_of_several_namespaces() -> None:
    clrp = cluster(podSelector={"matchLabels": {"app": "web"}},
                   namespaceSelector={"matchLabels": {"team": "a"}})
    state = desired_attachments([clrp], PODS, NODES, NODE, ADMIN_NS, namespaces=NS_LABELS)
    assert state.routes_of(clrp.ref) == {ip_network("10.244.1.11/32"),
                                         ip_network("10.244.1.12/32")}


def test_without_namespace_labels_a_namespace_selector_attaches_nothing() -> None:
    clrp = cluster(podSelector={}, namespaceSelector={"matchLabels": {"team": "a"}})
    state = desired_attachments([clrp], PODS, NODES, NODE, ADMIN_NS)
    assert not state.attachments
    assert [e.policy for e in state.excluded] == [clrp.ref]


def test_no_namespace_selector_means_every_namespace() -> None:
    clrp = cluster(podSelector={})
    state = desired_attachments([clrp], PODS, NODES, NODE, ADMIN_NS)
    assert len(state.routes_of(clrp.ref)) == 3


def test_equal_priority_cluster_wins_and_both_are_told() -> None:
    clrp = cluster(podSelector={})
    tenant = policy("web", ns="shop", hooks=COUNTERS)
    state = desired_attachments([tenant, clrp], PODS, NODES, NODE, ADMIN_NS)
    dest = ip_network("10.244.1.11/32")
    assert state.attachments[dest]["in"].policy == clrp.ref
    (loser,) = state.losers
    assert (loser.policy, loser.winner) == (tenant.ref, clrp.ref)
    assert "cluster policies win" in loser.reason
    assert state.conflicts_of(tenant.ref)[0][1] == clrp.ref


def test_a_lower_priority_number_lets_the_tenant_win() -> None:
    clrp = cluster(podSelector={})
    tenant = policy("web", ns="shop", hooks=COUNTERS, priority=10)
    state = desired_attachments([tenant, clrp], PODS, NODES, NODE, ADMIN_NS)
    assert state.attachments[ip_network("10.244.1.11/32")]["in"].policy == tenant.ref
    (loser,) = state.losers
    assert (loser.policy, loser.winner) == (clrp.ref, tenant.ref)
    assert "priority 10" in loser.reason


def test_precedence_is_per_hook() -> None:
    clrp = cluster(podSelector={})
    tenant = policy("web", ns="shop", hooks={**COUNTERS, "out": {
        "program": {"builtin": "counters"}}})
    state = desired_attachments([tenant, clrp], PODS, NODES, NODE, ADMIN_NS)
    hooks = state.attachments[ip_network("10.244.1.11/32")]
    assert (hooks["in"].policy, hooks["out"].policy) == (clrp.ref, tenant.ref)


def test_remote_subnets_and_owned_pod_route_keep_the_cluster_hooks() -> None:
    clrp = cluster(podSubnets=["local", "remote"])
    tenant = policy("web", ns="shop", hooks={"out": {"program": {"builtin": "counters"}}})
    state = desired_attachments([tenant, clrp], PODS, NODES, NODE, ADMIN_NS)
    assert state.attachments[ip_network("10.244.2.0/24")]["in"].policy == clrp.ref
    # web-1's owned /32 inside the local subnet: the tenant's out hook, the cluster's in hook.
    pod_route = state.attachments[ip_network("10.244.1.11/32")]
    assert (pod_route["in"].policy, pod_route["out"].policy) == (clrp.ref, tenant.ref)
    assert not state.losers


def test_route_owner_of_a_cluster_policy_is_its_pin_scope() -> None:
    from lwt_agent.route import labels
    from lwt_policy.model import CLUSTER_SCOPE

    assert labels.CLUSTER_SCOPE == CLUSTER_SCOPE
    ref = PolicyRef("", "platform")
    owner = labels.policy_owner(ref)
    assert owner == f"{ref.scope}/platform" and labels.is_policy_owner(owner)
    assert owner != labels.policy_owner(PolicyRef("platform", "x"))


def test_both_policies_summaries_count_the_contest() -> None:
    from lwt_policy.status import summarize

    loser = {"observedGeneration": 1, "routes": 2, "attachedRoutes": 0, "lastError": None,
             "conflicts": [{"hook": "out", "winner": "platform", "routes": 2}]}
    winner = {"observedGeneration": 1, "routes": 4, "attachedRoutes": 4, "lastError": None,
              "overrides": [{"hook": "out", "loser": "shop/web", "routes": 2}]}
    assert summarize({"a": loser, "b": loser}, 1)["routesLost"] == 4
    assert summarize({"a": winner}, 1)["routesWon"] == 2
    assert "routesLost" not in summarize({"a": winner}, 1)


def test_a_count_that_went_away_is_nulled_in_the_status_patch() -> None:
    import datetime as dt

    from lwt_operator.aggregate import DesiredStatus, status_patch

    summary = {"nodes": 1, "readyNodes": 1, "nodesReady": "1/1", "routes": 2,
               "attachedRoutes": 2}
    obj = {"status": {"summary": {**summary, "routesLost": 2}}}
    desired = DesiredStatus(conditions=(), summary=summary, observed_generation=0,
                            holding=frozenset(), not_ready=(), more_not_ready=0)
    patch = status_patch(obj, desired, dt.datetime.now(dt.UTC))
    assert patch["summary"] == {**summary, "routesLost": None}


def test_lwt_agent_validate_reports_a_cluster_policy_without_namespace(tmp_path) -> None:
    import yaml
    from lwt_agent.commands.validate import validate_files

    from tests.policy.conftest import EXAMPLES

    bad = cluster_obj(namespaceSelector={})
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    report = validate_files([str(EXAMPLES / "cluster-platform.yaml"),
                             str(tmp_path / "bad.yaml")], ADMIN_NS)
    good, refused = (f["policies"][0] for f in report["files"])
    assert (good["namespace"], good["valid"]) == ("", True)
    assert {p["rule"] for p in refused["problems"]} == {
        "cluster-at-least-one-target", "namespace-selector-needs-pod-selector"}
    assert {p["refusedBy"] for p in refused["problems"]} == {"api-server"}
