"""Node-state entries (LwtNodeState) and the policy aggregate, validated against the CRDs'
status schemas."""
from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from lwt_policy import contract, schema
from lwt_policy.model import PolicyRef
from lwt_policy.status import (
    MAX_NODE_STATE_LOGS,
    MAX_VERIFIER_LOG,
    VERIFIER_LOG_DROPPED,
    Conflict,
    NodeError,
    NodeProblem,
    NodeResult,
    Override,
    ProgramStatus,
    bounded_tail,
    conflicts_from_desired,
    entries_by_policy,
    node_problem,
    node_state_entry,
    node_state_object,
    node_state_status,
    node_status,
    not_ready_nodes,
    overrides_from_desired,
    policy_status,
    summarize,
)
from lwt_policy.validation import cel_problems, schema_problems

from tests.policy.test_targets import desired, pod, policy

STATUS_SCHEMA = schema.status_schema()
NODE_STATE_SCHEMA = schema.node_state_status_schema()
NOW = dt.datetime(2026, 11, 26, 1, 2, 3, 456, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(minutes=5)
WEB = PolicyRef("shop", "web")


def assert_valid_status(status: dict[str, Any]) -> None:
    problems = schema_problems(status, STATUS_SCHEMA, "status") + cel_problems(
        status, STATUS_SCHEMA, "status")
    assert problems == []


def assert_valid_entry(entry: dict[str, Any]) -> None:
    status = node_state_status([node_state_entry(WEB, entry)], now=NOW)
    assert schema_problems(status, NODE_STATE_SCHEMA, "status") == []


def result(**overrides: Any) -> NodeResult:
    values: dict[str, Any] = dict(
        observed_generation=3, routes=14, attached_routes=14,
        programs={"out": ProgramStatus(42, "0123456789abcdef",
                                       "lwt/shop/web/out/01234567")},
        updated_at=NOW)
    values.update(overrides)
    return NodeResult(**values)


def test_entry_shape_and_schema() -> None:
    entry = node_status(result())
    assert entry == {
        "observedGeneration": 3, "routes": 14, "attachedRoutes": 14,
        "programs": {"out": {"id": 42, "tag": "0123456789abcdef",
                             "label": "lwt/shop/web/out/01234567"}},
        "conflicts": [], "overrides": [], "lastError": None, "detached": False,
        "lastUpdateTime": "2026-11-26T01:02:03Z",
    }
    assert_valid_entry(entry)


def test_error_with_bounded_verifier_log() -> None:
    log = "".join(f"{i}: r0 = *(u32 *)(r1 +{i})\n" for i in range(2000)) + "invalid access"
    entry = node_status(result(attached_routes=0, last_error=NodeError(
        "the kernel refused program lwt/shop/web/out: permission denied", log)))
    assert entry["lastError"]["message"].startswith("the kernel refused")
    kept = entry["lastError"]["verifierLog"]
    assert len(kept) == MAX_VERIFIER_LOG
    assert kept.endswith("invalid access") and kept.startswith("[... ")
    assert_valid_entry(entry)


def test_bounded_tail_keeps_short_text() -> None:
    assert bounded_tail("short", 10) == "short"
    cut = bounded_tail("x" * 100 + "END", 60)
    assert len(cut) == 60 and cut.endswith("END")


def test_conflicts_from_targeting() -> None:
    state = desired([policy("beta"), policy("alpha")],
                    [pod("w1", ["10.244.1.7"]), pod("w2", ["10.244.1.8"])])
    conflicts = conflicts_from_desired(state, PolicyRef("shop", "beta"))
    assert conflicts == [Conflict("out", "shop/alpha", 2, state.losers[0].reason)]
    entry = node_status(result(routes=2, attached_routes=0, programs={},
                               conflicts=conflicts))
    assert entry["conflicts"][0]["winner"] == "shop/alpha"
    assert_valid_entry(entry)
    # The winner's side: the same routes, as overrides.
    overrides = overrides_from_desired(state, PolicyRef("shop", "alpha"))
    assert overrides == [Override("out", "shop/beta", 2)]
    entry = node_status(result(overrides=overrides))
    assert entry["overrides"] == [{"hook": "out", "loser": "shop/beta", "routes": 2}]
    assert_valid_entry(entry)


def test_node_state_status_sorted_summarized_and_stable() -> None:
    ok = node_state_entry(PolicyRef("shop", "web"), node_status(result()))
    bad = node_state_entry(PolicyRef("admin", "deny"), node_status(result(
        attached_routes=0, last_error=NodeError("boom"))))
    status = node_state_status([ok, bad], now=NOW)
    assert [(e["namespace"], e["name"]) for e in status["policies"]] == [
        ("admin", "deny"), ("shop", "web")]
    assert status["summary"] == {"policies": 2, "errors": 1, "attachedRoutes": 14}
    assert status["lastUpdateTime"] == "2026-11-26T01:02:03Z"
    assert schema_problems(status, NODE_STATE_SCHEMA, "status") == []
    # The same entries written again later (new lastUpdateTime): nothing changes, so the
    # agent's next write is skipped.
    again = node_state_status([{**ok, "lastUpdateTime": "2026-11-26T09:00:00Z"}, bad],
                              status["policies"], now=LATER)
    assert again == status
    # One entry changes: only it gets the new time.
    fixed = {**bad, "lastError": None, "attachedRoutes": 14,
             "lastUpdateTime": contract.rfc3339(LATER)}
    after = node_state_status([ok, fixed], status["policies"], now=LATER)
    times = {e["name"]: e["lastUpdateTime"] for e in after["policies"]}
    assert times == {"deny": contract.rfc3339(LATER), "web": "2026-11-26T01:02:03Z"}
    assert after["lastUpdateTime"] == contract.rfc3339(LATER)


def test_node_state_verifier_logs_share_one_budget() -> None:
    log = "v" * MAX_VERIFIER_LOG
    entries = [node_state_entry(PolicyRef("shop", f"p{i:03}"), node_status(result(
        attached_routes=0, last_error=NodeError("refused", log)))) for i in range(200)]
    status = node_state_status(entries, now=NOW)
    logs = [e["lastError"]["verifierLog"] for e in status["policies"]]
    kept = [x for x in logs if x != VERIFIER_LOG_DROPPED]
    assert len(kept) == MAX_NODE_STATE_LOGS // MAX_VERIFIER_LOG
    assert logs[:len(kept)] == kept  # the first policies (by name) keep theirs
    assert all(e["lastError"]["message"] == "refused" for e in status["policies"])
    assert len(json.dumps(status)) < 1024 * 1024  # etcd's limit is 1.5 MiB


def test_node_state_object_is_owned_by_its_node() -> None:
    obj = node_state_object("node-a", "uid-1")
    assert obj["kind"] == "LwtNodeState" and obj["metadata"]["name"] == "node-a"
    assert obj["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Node", "name": "node-a", "uid": "uid-1"}]
    assert "ownerReferences" not in node_state_object("node-a", None)["metadata"]


def test_entries_by_policy_from_node_states() -> None:
    entry = node_state_entry(WEB, node_status(result()))
    states = [{"metadata": {"name": n}, "status": {"policies": [entry]}} for n in ("a", "b")]
    states.append({"metadata": {"name": "c"}})  # created, nothing written yet
    assert entries_by_policy(states) == {("shop", "web"): {"a": entry, "b": entry}}


def test_node_problems_classified_and_listed_bounded() -> None:
    assert node_problem(None, 3) == NodeProblem("NoReport", "no report yet")
    assert node_problem(node_status(result(observed_generation=2)), 3).reason == "Behind"
    assert node_problem(node_status(result(attached_routes=2)), 3) == NodeProblem(
        "Attaching", "2/14 routes attached")
    assert node_problem(node_status(result(last_error=NodeError("x" * 5000))), 3
                        ).reason == "Error"
    problems = {f"n{i:04}": NodeProblem("Behind", "at generation 2, not 3")
                for i in range(5000)}
    problems["z-bad"] = NodeProblem("Error", "error: " + "x" * 5000)
    listed, more = not_ready_nodes(problems)
    assert [n["node"] for n in listed][:2] == ["z-bad", "n0000"]  # errors first
    assert len(listed) == schema.MAX_LISTED_NODES and more == 5001 - schema.MAX_LISTED_NODES
    assert len(listed[0]["message"]) == schema.MAX_NODE_PROBLEM_MESSAGE


def test_policy_status_size_does_not_grow_with_nodes() -> None:
    """Issue 14's goal: <= 16 KiB at 5,000 nodes, every node failing with a verifier log."""
    failing = node_status(result(attached_routes=0, last_error=NodeError(
        "the kernel refused program lwt/shop/web/out: " + "e" * 2000, "v" * 50_000)))
    sizes = {}
    for n in (10, 5000):
        status = policy_status({f"node-{i:05}": failing for i in range(n)}, 3, NOW)
        assert_valid_status(status)
        sizes[n] = len(json.dumps(status))
    # Only digits of the counts grow (10 -> 5000 nodes).
    assert sizes[5000] - sizes[10] < 32 and sizes[5000] <= 16 * 1024


def test_summary_and_whole_status() -> None:
    nodes = {
        "node-a": node_status(result()),
        "node-b": node_status(result(observed_generation=2)),  # behind
        "node-c": node_status(result(attached_routes=3, last_error=NodeError("boom"))),
    }
    summary = summarize(nodes, generation=3)
    assert summary == {"nodes": 3, "readyNodes": 1, "nodesReady": "1/3",
                       "routes": 42, "attachedRoutes": 31}
    status = policy_status(nodes, 3, NOW)
    ready, reconciling, stalled = status["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False",
                                                                 "NodesNotReady")
    # node-c's error will not go away by itself: kstatus Failed (docs/install.md).
    assert (reconciling["type"], reconciling["status"]) == ("Reconciling", "False")
    assert (stalled["type"], stalled["status"], stalled["reason"]) == ("Stalled", "True",
                                                                       "NodeErrors")
    assert "node-b: at generation 2" in ready["message"]
    assert "node-c: error: boom" in ready["message"]
    assert [(n["node"], n["reason"]) for n in status["nodesNotReady"]] == [
        ("node-c", "Error"), ("node-b", "Behind")]
    assert status["moreNodesNotReady"] == 0 and "nodes" not in status
    assert_valid_status(status)
    all_ready = policy_status({"node-a": nodes["node-a"]}, 3, NOW)
    assert all_ready["conditions"][0]["status"] == "True"
    assert all_ready["conditions"][0]["message"] == "1/1 nodes attached 14 route(s) at generation 3"
    nobody = policy_status({}, 3, NOW)["conditions"][0]
    assert (nobody["status"], nobody["reason"]) == ("False", contract.NO_NODES)


def test_every_message_written_is_bounded_and_times_round_trip() -> None:
    long = "x" * (contract.MAX_MESSAGE * 3)
    entry = node_status(result(last_error=NodeError(long)))
    assert len(entry["lastError"]["message"]) == contract.MAX_MESSAGE
    flooded = {f"node-{i:03}": entry for i in range(50)}
    ready, _, stalled = policy_status(flooded, 3, NOW)["conditions"]
    assert len(ready["message"]) == contract.MAX_MESSAGE
    assert len(stalled["message"]) <= contract.MAX_MESSAGE
    behind = {f"node-{i:03}": node_status(result(observed_generation=2)) for i in range(50)}
    ready, _, _ = policy_status(behind, 3, NOW)["conditions"]
    assert "node-009" in ready["message"] and "node-010" not in ready["message"]
    text = contract.rfc3339(NOW)
    assert text == "2026-11-26T01:02:03Z" == entry["lastUpdateTime"]
    assert contract.parse_time(text) == NOW.replace(microsecond=0)
    assert contract.parse_time(None) is None


@pytest.mark.parametrize("bad", [
    {"nodesNotReady": [{"node": f"n{i}", "reason": "Behind"} for i in range(11)]},
    {"nodesNotReady": [{"node": "n", "reason": "Sleeping"}]},
    {"moreNodesNotReady": -1},
    {"conditions": [{"type": "Ready", "status": "Maybe", "reason": "r", "message": "m",
                     "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
])
def test_status_schema_rejects_bad_entries(bad: dict[str, Any]) -> None:
    assert schema_problems(bad, STATUS_SCHEMA, "status")


@pytest.mark.parametrize("bad", [
    {"policies": [{"namespace": "shop", "name": "web", "routes": -1}]},
    {"policies": [{"namespace": "shop", "name": "web", "programs": {"egress": {"id": 1}}}]},
    {"policies": [{"namespace": "shop", "name": "web",
                   "lastError": {"verifierLog": "no message"}}]},
    {"policies": [{"name": "web"}]},  # which policy: namespace and name are the list's key
])
def test_node_state_schema_rejects_bad_entries(bad: dict[str, Any]) -> None:
    assert schema_problems(bad, NODE_STATE_SCHEMA, "status")
