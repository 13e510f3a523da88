"""Unit tests of the operator's pure parts: settings, DaemonSet, validation verdicts, status."""
from __future__ import annotations

import copy
import datetime
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from lwt_operator.aggregate import (
    NodeInfo,
    desired_status,
    expected_nodes,
    status_patch,
    tolerates,
)
from lwt_operator.daemonset import (
    SETTINGS_HASH_ANNOTATION,
    build_daemonset,
    daemonset_drift,
    drift,
    owner_reference,
    repair_patch,
    selector_changed,
    superseded,
    with_owner,
)
from lwt_operator.errors import SettingsError
from lwt_operator.settings import AgentSettings
from lwt_operator.validation import Verdict, judge
from lwt_policy import contract
from lwt_policy.errors import Problem
from lwt_policy.status import entry_problem, policy_status, render_conditions

from tests.k8s.emulator import merge_patch

REPO = Path(__file__).resolve().parents[2]
NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)


# --- settings -------------------------------------------------------------------------------

def test_settings_from_the_chart_keys(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump({
        "image": "registry.example/lwt:1.2", "imagePullPolicy": "Always",
        "serviceAccountName": "sa", "tolerations": [{"operator": "Exists"}],
        "nodeSelector": {"kubernetes.io/os": "linux"}, "affinity": {},
        "resources": {"limits": {"memory": "256Mi"}}, "updateStrategy": {"type": "OnDelete"},
        "priorityClassName": "system-node-critical", "metricsPort": 9500,
        "bpffsPath": "/sys/fs/bpf", "capabilities": ["BPF", "NET_ADMIN", "PERFMON"],
        "logLevel": "debug", "podLabels": {"app": "agent"}, "imagePullSecrets": [],
    }))
    settings = AgentSettings.from_file(path)
    assert settings.metricsPort == 9500 and settings.capabilities[-1] == "PERFMON"


@pytest.mark.parametrize(("data", "complaint"), [
    ({"imagee": "x"}, "unknown key(s) imagee"),
    ({"metricsPort": 0}, "metricsPort"),
    ({"capabilities": ["CAP_BPF"]}, "without CAP_"),
    ({"bpffsPath": "sys/fs/bpf"}, "absolute"),
    ({"logLevel": "loud"}, "logLevel"),
    ({"tolerations": {"operator": "Exists"}}, "must be a list"),
])
def test_settings_refuse_wrong_values(data: dict[str, Any], complaint: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(complaint)):
        AgentSettings.from_mapping(data)


def test_settings_file_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="--agent-config"):
        AgentSettings.from_file(tmp_path / "missing.yaml")


# --- DaemonSet ------------------------------------------------------------------------------

def ds(**settings: Any) -> dict[str, Any]:
    return build_daemonset(AgentSettings.from_mapping(settings), name="lwt-agent",
                           namespace="lwt-system", admin_namespace="lwt-system")


def test_daemonset_manifest_gives_the_agent_what_it_needs_and_no_more() -> None:
    manifest = ds(capabilities=["BPF", "NET_ADMIN"], bpffsPath="/run/bpf", metricsPort=9500,
                  tolerations=[{"key": "a", "operator": "Exists"}],
                  updateStrategy={"type": "RollingUpdate",
                                  "rollingUpdate": {"maxUnavailable": 2}})
    pod = manifest["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert container["securityContext"]["privileged"] is False
    assert container["securityContext"]["capabilities"] == {"add": ["BPF", "NET_ADMIN"],
                                                            "drop": ["ALL"]}
    assert pod["volumes"] == [{"name": "bpffs", "hostPath": {
        "path": "/run/bpf/lwt-operator", "type": "DirectoryOrCreate"}}]
    assert container["volumeMounts"][0]["mountPath"] == "/run/bpf/lwt-operator"
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["LWT_METRICS_PORT"]["value"] == "9500"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics",
                                                     "scheme": "HTTP"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics",
                                                      "scheme": "HTTP"}
    assert env["LWT_METRICS_AUTH"]["value"] == "none"  # AgentSettings' default; the chart's:
    secure = build_daemonset(AgentSettings(metricsAuth="kubernetes"), name="n", namespace="ns",
                             admin_namespace="ns")["spec"]["template"]["spec"]["containers"][0]
    assert secure["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert {e["name"]: e.get("value") for e in secure["env"]}["LWT_METRICS_AUTH"] == "kubernetes"
    assert container["ports"] == [{"name": "metrics", "containerPort": 9500, "protocol": "TCP"}]
    assert manifest["spec"]["updateStrategy"]["rollingUpdate"] == {"maxUnavailable": 2}
    assert pod["tolerations"] == [{"key": "a", "operator": "Exists"}]
    labels = manifest["spec"]["template"]["metadata"]["labels"]
    assert manifest["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_daemonset_manifest_passes_the_official_schema() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubernetes_validate.validate(ds(), "1.30", strict=True)


def test_settings_hash_follows_settings() -> None:
    assert ds()["metadata"]["annotations"][SETTINGS_HASH_ANNOTATION] == \
        ds()["metadata"]["annotations"][SETTINGS_HASH_ANNOTATION]
    assert ds(image="a:1")["metadata"]["annotations"] != ds(image="a:2")["metadata"][
        "annotations"]


def test_drift_ignores_server_defaults_but_not_changes() -> None:
    desired = ds()
    actual = merge_patch(desired, {
        "metadata": {"uid": "u", "annotations": {"deprecated.daemonset.template.generation": "1"}},
        "spec": {"revisionHistoryLimit": 10,
                 "template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt":
                                                           "now"}},
                              "spec": {"schedulerName": "default-scheduler"}}},
    })
    assert daemonset_drift(desired, actual) == []
    changed = merge_patch(actual, {"spec": {"template": {"spec": {"hostNetwork": False}}}})
    assert daemonset_drift(desired, changed) == ["spec.template.spec.hostNetwork"]
    extra_container = copy.deepcopy(actual)
    extra_container["spec"]["template"]["spec"]["containers"].append({"name": "sidecar"})
    assert daemonset_drift(desired, extra_container) == ["spec.template.spec.containers"]
    repaired = merge_patch(changed, repair_patch(desired))
    assert daemonset_drift(desired, repaired) == []
    assert repaired["spec"]["revisionHistoryLimit"] == 10  # defaults survive the repair


def test_drift_on_lists_and_scalars() -> None:
    assert drift({"a": [1, {"b": 2}]}, {"a": [1, {"b": 2, "c": 3}]}) == []
    assert drift({"a": [1, 2]}, {"a": [1]}) == ["a"]
    assert drift({"a": {"b": 1}}, {"a": 5}) == ["a"]
    assert drift({"a": {}}, {}) == []  # an empty desired value is what an absent one means


def test_the_newest_operator_wins_during_a_rollout() -> None:
    old = build_daemonset(AgentSettings(image="a:1"), name="n", namespace="ns",
                          admin_namespace="ns", started_at="2026-01-01T10:00:00+00:00")
    new = build_daemonset(AgentSettings(image="a:2"), name="n", namespace="ns",
                          admin_namespace="ns", started_at="2026-01-01T11:00:00+00:00")
    assert superseded(old, new)  # the old replica leaves the new replica's DaemonSet alone
    assert not superseded(new, old)  # the new replica repairs the old one's
    restarted_same = build_daemonset(AgentSettings(image="a:1"), name="n", namespace="ns",
                                     admin_namespace="ns", started_at="2026-01-01T12:00:00+00:00")
    assert not superseded(old, restarted_same)  # same settings: no contest
    assert daemonset_drift(old, restarted_same) == []  # the start time alone is no drift


def test_the_daemonset_is_owned_by_the_operator_deployment() -> None:
    deployment = {"metadata": {"name": "lwt-lwt-operator", "uid": "d-1", "namespace": "ns"}}
    owner = owner_reference(deployment)
    assert owner == {"apiVersion": "apps/v1", "kind": "Deployment",
                     "name": "lwt-lwt-operator", "uid": "d-1"}
    assert with_owner(ds(), None) == ds()
    owned = with_owner(ds(), owner)
    assert owned["metadata"]["ownerReferences"] == [owner]
    # A DaemonSet made before the owner was known (an upgrade) is drift, and the repair adds it.
    assert daemonset_drift(owned, ds()) == ["metadata.ownerReferences"]
    assert daemonset_drift(owned, merge_patch(ds(), repair_patch(owned))) == []
    # A re-created Deployment has a new uid: the reference follows it.
    moved = with_owner(ds(), owner_reference(
        {"metadata": {**deployment["metadata"], "uid": "d-2"}}))
    assert daemonset_drift(moved, owned) == ["metadata.ownerReferences[0].uid"]


def test_selector_change_is_detected() -> None:
    assert not selector_changed(ds(), ds())
    assert selector_changed(ds(podLabels={"app": "x"}), ds())


# --- validation -----------------------------------------------------------------------------

def example(name: str) -> dict[str, Any]:
    obj = yaml.safe_load((REPO / "examples" / name).read_text())
    obj["metadata"].update(generation=3, uid="u1")
    return obj


def test_verdict_on_a_valid_policy_ignores_status() -> None:
    obj = example("deny-port.yaml")
    obj["status"] = {"nodes": {"n1": {"routes": "not a number"}}}
    verdict = judge(obj, admin_namespace="lwt-system")
    assert verdict.accepted and verdict.reason == contract.VALID and verdict.generation == 3


def test_verdict_names_the_field() -> None:
    obj = example("deny-port.yaml")
    obj["spec"]["hooks"]["out"]["config"]["denyTCPPorts"] = [70000]
    verdict = judge(obj, admin_namespace="lwt-system")
    assert not verdict.accepted and verdict.reason == contract.INVALID_SPEC
    assert "spec.hooks.out.config.denyTCPPorts[0]" in verdict.message


def test_pod_subnets_only_in_the_admin_namespace() -> None:
    obj = example("admin-pod-subnets.yaml")
    assert judge(obj, admin_namespace="lwt-system").accepted
    assert not judge(obj, admin_namespace="elsewhere").accepted


# --- status aggregation --------------------------------------------------------------------

AGENT = AgentSettings()
LINUX = {"kubernetes.io/os": "linux"}
NODES = {"n1": NodeInfo(LINUX), "n2": NodeInfo(LINUX)}
VALID = Verdict(2, ())


def policy(nodes: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    """A policy, with its entries in the nodes' LwtNodeStates under ENTRIES (by node)."""
    return {"metadata": {"name": "p", "namespace": "shop", "generation": 2, **meta},
            "spec": {}, "status": {}, ENTRIES: nodes or {}}


ENTRIES = "_entries"  # not a field of the object: what the node states hold for it


def entry(generation: int = 2, routes: int = 3, attached: int = 3, **extra: Any) -> dict[str, Any]:
    return {"observedGeneration": generation, "routes": routes, "attachedRoutes": attached,
            "lastError": None, **extra}


def conditions(status: Any) -> dict[str, tuple[bool, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


def compute(obj: dict[str, Any], verdict: Verdict = VALID,
            nodes: dict[str, NodeInfo] = NODES, timeout: float = 60) -> Any:
    return desired_status(obj, verdict, nodes, AGENT, entries=obj.get(ENTRIES) or {}, now=NOW,
                          finalizer_timeout=timeout)


def test_all_nodes_ready() -> None:
    status = compute(policy({"n1": entry(), "n2": entry(routes=2, attached=2)}))
    assert conditions(status)[contract.READY] == (True, contract.ALL_NODES_READY)
    assert conditions(status)[contract.PROGRESSING] == (False, contract.ROLLED_OUT)
    assert conditions(status)[contract.DEGRADED] == (False, contract.NO_ERRORS)
    assert dict(status.summary) == {"nodes": 2, "readyNodes": 2, "nodesReady": "2/2",
                                    "routes": 5, "attachedRoutes": 5}
    assert status.observed_generation == 2
    assert status.not_ready == () and status.more_not_ready == 0


def test_missing_and_stale_nodes_are_progressing() -> None:
    status = compute(policy({"n1": entry(generation=1)}))
    assert conditions(status)[contract.READY] == (False, contract.NODES_NOT_READY)
    assert conditions(status)[contract.PROGRESSING] == (True, contract.ROLLING_OUT)
    ready = next(c for c in status.conditions if c.type == contract.READY)
    assert "n1: at generation 1, not 2" in ready.message
    assert "n2: no report yet" in ready.message
    assert status.summary["nodesReady"] == "0/2"


def test_node_errors_degrade() -> None:
    status = compute(policy({"n1": entry(), "n2": entry(lastError={"message": "verifier: no"})}))
    assert conditions(status)[contract.DEGRADED] == (True, contract.NODE_ERRORS)
    assert conditions(status)[contract.READY][0] is False
    assert conditions(status)[contract.PROGRESSING][0] is False
    assert "n2: error: verifier: no" in status.conditions[2].message


def test_partially_attached_and_conflicts() -> None:
    assert entry_problem(entry(routes=3, attached=2), 2) == "2/3 routes attached"
    lost = entry(routes=3, attached=2, conflicts=[{"hook": "out", "winner": "a/b", "routes": 1}])
    assert entry_problem(lost, 2) is None


def test_invalid_spec() -> None:
    verdict = Verdict(2, ())
    bad = Verdict(2, (Problem("spec.x", "bad"),))
    assert compute(policy(), verdict).conditions[0].status is True
    status = compute(policy({"n1": entry()}), bad)
    assert conditions(status)[contract.ACCEPTED] == (False, contract.INVALID_SPEC)
    assert conditions(status)[contract.READY] == (False, contract.INVALID_SPEC)
    assert status.conditions[0].message == "spec.x: bad"


def test_entries_of_nodes_gone_are_ignored_and_old_node_maps_dropped() -> None:
    # The garbage collector deletes a gone node's LwtNodeState; until then it does not count.
    status = compute(policy({"n1": entry(), "n2": entry(), "gone": entry()}))
    assert status.summary["nodes"] == 2
    old = policy()
    old["status"]["nodes"] = {"gone": entry()}  # written into the policy by older agents
    assert status_patch(old, status, NOW)["nodes"] is None


def test_status_is_bounded_at_5000_failing_nodes() -> None:
    nodes = {f"n{i:04}": NodeInfo(LINUX) for i in range(5000)}
    failing = entry(attached=0, lastError={"message": "verifier: " + "x" * 4000,
                                           "verifierLog": "v" * 4096})
    obj = policy({name: failing for name in nodes})
    status = compute(obj, nodes=nodes)
    patch = status_patch(obj, status, NOW)
    assert len(patch["nodesNotReady"]) == 10 and patch["moreNodesNotReady"] == 4990
    assert {n["reason"] for n in patch["nodesNotReady"]} == {"Error"}
    assert len(json.dumps(patch)) <= 16 * 1024
    assert "verifierLog" not in json.dumps(patch)


def test_expected_nodes_follow_node_selector_and_agent_placement() -> None:
    nodes = {
        "worker": NodeInfo({**LINUX, "role": "worker"}),
        "cp": NodeInfo({**LINUX, "role": "cp"}),
        "windows": NodeInfo({"kubernetes.io/os": "windows", "role": "worker"}),
        "tainted": NodeInfo({**LINUX, "role": "worker"},
                            ({"key": "dedicated", "value": "x", "effect": "NoSchedule"},)),
    }
    obj = {"spec": {"nodeSelector": {"matchLabels": {"role": "worker"}}}}
    assert expected_nodes(obj, nodes, AGENT) == {"worker", "tainted"}  # default: tolerate all
    strict = AgentSettings(tolerations=())
    assert expected_nodes(obj, nodes, strict) == {"worker"}


def test_tolerations() -> None:
    taint = {"key": "k", "value": "v", "effect": "NoSchedule"}
    assert tolerates([{"operator": "Exists"}], taint)
    assert tolerates([{"key": "k", "operator": "Exists"}], taint)
    assert tolerates([{"key": "k", "value": "v"}], taint)
    assert not tolerates([{"key": "k", "value": "w"}], taint)
    assert not tolerates([{"key": "k", "operator": "Exists", "effect": "NoExecute"}], taint)


def test_deletion_waits_for_detached_nodes_then_times_out() -> None:
    deleting = policy({"n1": entry(detached=True), "n2": entry(), "gone": entry()},
                      deletionTimestamp="2026-01-01T11:59:50Z")
    status = compute(deleting, timeout=60)
    assert status.holding == frozenset({"n2"})  # "gone" does not hold it: its state is GC'd
    assert conditions(status)[contract.READY] == (False, contract.DELETING)
    late = compute(deleting, timeout=5)
    assert conditions(late)[contract.READY] == (False, contract.FINALIZER_TIMEOUT)
    ready = next(c for c in late.conditions if c.type == contract.READY)
    assert "n2" in ready.message and contract.FINALIZER in ready.message
    done = compute(policy({"n1": entry(detached=True)}, deletionTimestamp="2026-01-01T11:59:50Z"))
    assert not done.holding


def test_conditions_keep_transition_times_and_patches_are_minimal() -> None:
    obj = policy({"n1": entry(), "n2": entry()})
    status = compute(obj)
    earlier = NOW - datetime.timedelta(hours=1)
    first = render_conditions(status.conditions, [], 2, earlier)
    obj["status"].update(conditions=first, summary=dict(status.summary), observedGeneration=2,
                         nodesNotReady=[], moreNodesNotReady=0)
    assert status_patch(obj, status, NOW) == {}  # nothing changed: no write, no event loop
    obj[ENTRIES]["n2"]["observedGeneration"] = 1
    changed = status_patch(obj, compute(obj), NOW)
    ready = next(c for c in changed["conditions"] if c["type"] == contract.READY)
    accepted = next(c for c in changed["conditions"] if c["type"] == contract.ACCEPTED)
    assert ready["lastTransitionTime"] == "2026-01-01T12:00:00Z"
    assert accepted["lastTransitionTime"] == "2026-01-01T11:00:00Z"


def test_operator_and_standalone_agree_on_ready() -> None:
    """One Ready definition: the operator's condition and standalone mode's are the same."""
    for entries in ({"n1": entry(), "n2": entry(routes=2, attached=2)},
                    {"n1": entry(generation=1), "n2": entry(lastError={"message": "no"})}):
        operator = render_conditions(compute(policy(entries)).conditions, [], 2, NOW)
        standalone = policy_status(entries, 2, NOW)["conditions"]
        assert standalone == [c for c in operator if c["type"] in (
            contract.READY, contract.RECONCILING, contract.STALLED)]


def test_the_handshake_helpers() -> None:
    obj = policy()
    assert not contract.is_accepted(obj) and not contract.is_rejected(obj)
    obj["status"]["conditions"] = [{"type": "Accepted", "status": "True",
                                    "observedGeneration": 2}]
    assert contract.is_accepted(obj)
    obj["metadata"]["generation"] = 3  # a new spec, not judged yet: agents wait
    assert not contract.is_accepted(obj) and not contract.is_rejected(obj)
