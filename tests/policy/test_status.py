"""status.nodes.<node> and the aggregate, validated against the CRD's status schema."""
from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from lwt_policy import contract, schema
from lwt_policy.model import PolicyRef
from lwt_policy.status import (
    MAX_VERIFIER_LOG,
    Conflict,
    NodeError,
    NodeResult,
    ProgramStatus,
    bounded_tail,
    conflicts_from_desired,
    node_status,
    node_status_patch,
    policy_status,
    summarize,
)
from lwt_policy.validation import cel_problems, schema_problems

from tests.policy.test_targets import desired, pod, policy

STATUS_SCHEMA = schema.status_schema()
NOW = dt.datetime(2026, 11, 26, 1, 2, 3, 456, tzinfo=dt.UTC)


def assert_valid_status(status: dict[str, Any]) -> None:
    problems = schema_problems(status, STATUS_SCHEMA, "status") + cel_problems(
        status, STATUS_SCHEMA, "status")
    assert problems == []


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
        "conflicts": [], "lastError": None, "detached": False,
        "lastUpdateTime": "2026-11-26T01:02:03Z",
    }
    assert_valid_status({"nodes": {"node-a": entry}})


def test_error_with_bounded_verifier_log() -> None:
    log = "".join(f"{i}: r0 = *(u32 *)(r1 +{i})\n" for i in range(2000)) + "invalid access"
    entry = node_status(result(attached_routes=0, last_error=NodeError(
        "the kernel refused program lwt/shop/web/out: permission denied", log)))
    assert entry["lastError"]["message"].startswith("the kernel refused")
    kept = entry["lastError"]["verifierLog"]
    assert len(kept) == MAX_VERIFIER_LOG
    assert kept.endswith("invalid access") and kept.startswith("[... ")
    assert_valid_status({"nodes": {"node-a": entry}})


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
    assert_valid_status({"nodes": {"node-a": entry}})


def test_merge_patch_bodies() -> None:
    patch = node_status_patch("node-a", node_status(result(detached=True)))
    assert list(patch) == ["status"] and list(patch["status"]["nodes"]) == ["node-a"]
    assert patch["status"]["nodes"]["node-a"]["detached"] is True
    assert node_status_patch("node-a", None) == {"status": {"nodes": {"node-a": None}}}
    assert_valid_status(patch["status"])


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
    (ready,) = status["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False",
                                                                 "NodesNotReady")
    assert "node-b: at generation 2" in ready["message"]
    assert "node-c: error: boom" in ready["message"]
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
    (ready,) = policy_status(flooded, 3, NOW)["conditions"]
    assert len(ready["message"]) == contract.MAX_MESSAGE
    behind = {f"node-{i:03}": node_status(result(observed_generation=2)) for i in range(50)}
    (ready,) = policy_status(behind, 3, NOW)["conditions"]
    assert "node-009" in ready["message"] and "node-010" not in ready["message"]
    text = contract.rfc3339(NOW)
    assert text == "2026-11-26T01:02:03Z" == entry["lastUpdateTime"]
    assert contract.parse_time(text) == NOW.replace(microsecond=0)
    assert contract.parse_time(None) is None


@pytest.mark.parametrize("bad", [
    {"nodes": {"n": {"routes": -1}}},
    {"nodes": {"n": {"programs": {"egress": {"id": 1}}}}},
    {"nodes": {"n": {"lastError": {"verifierLog": "no message"}}}},
    {"conditions": [{"type": "Ready", "status": "Maybe", "reason": "r", "message": "m",
                     "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
])
def test_status_schema_rejects_bad_entries(bad: dict[str, Any]) -> None:
    assert schema_problems(bad, STATUS_SCHEMA, "status")
