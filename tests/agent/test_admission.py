"""Which version of a policy the agent acts on (pure: no kernel)."""
from __future__ import annotations

import copy
from typing import Any

from lwt_agent.agent.admission import PolicyBook


def _policy(ports: list[Any], **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "lwt.dev/v1alpha1", "kind": "LwtRoutePolicy",
            "metadata": {"name": "p", "namespace": "shop", **meta},
            "spec": {"podSelector": {}, "hooks": {"out": {
                "program": {"builtin": "port-filter"}, "config": {"denyTCPPorts": ports}}}}}


def _accepted(obj: dict[str, Any], status: str = "True") -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    obj["status"] = {"conditions": [{"type": "Accepted", "status": status, "reason": "x",
                                     "message": "why",
                                     "observedGeneration": obj["metadata"]["generation"]}]}
    return obj


def test_standalone_generations_follow_spec_changes() -> None:
    book = PolicyBook("lwt-system")
    assert book.standalone([_policy([80])])[0].generation == 1
    assert book.standalone([_policy([80])])[0].generation == 1  # unchanged file
    view = book.standalone([_policy([81])])[0]
    assert view.generation == 2 and view.policy is not None and view.policy.generation == 2
    assert book.standalone([_policy([81], generation=7)])[0].generation == 7  # given wins
    dumped = _accepted(_policy([81], generation=8))  # from `kubectl get -o yaml`: has status
    assert book.standalone([dumped])[0].policy is not None


def test_standalone_invalid_version_keeps_the_last_valid_one() -> None:
    book = PolicyBook("lwt-system")
    good = book.standalone([_policy([80])])[0]
    bad = book.standalone([_policy(["http"])])[0]
    assert bad.policy == good.policy and bad.generation == 2
    assert bad.error is not None
    assert "spec.hooks.out.config.denyTCPPorts[0]" in bad.error.message
    assert "still acting on generation 1" in bad.error.message
    # never valid: nothing to act on
    fresh = PolicyBook("lwt-system").standalone([_policy(["http"])])[0]
    assert fresh.policy is None and fresh.error is not None
    # removed from the files: forgotten (a re-added bad version has nothing to keep)
    assert book.standalone([]) == []
    assert book.standalone([_policy(["http"])])[0].policy is None


def test_cluster_follows_the_accepted_generation_handshake() -> None:
    book = PolicyBook("lwt-system")
    gen1 = _policy([80], generation=1, uid="u")
    assert book.cluster([gen1])[0].policy is None  # not judged yet: nothing
    acted = book.cluster([_accepted(gen1)])[0]
    assert acted.policy is not None and acted.policy.generation == 1
    gen2 = _policy([81], generation=2, uid="u")
    pending = book.cluster([{**gen2, "status": _accepted(gen1)["status"]}])[0]
    assert pending.policy == acted.policy and pending.generation == 1  # keep gen 1
    rejected = book.cluster([_accepted(gen2, "False")])[0]
    # A bad new version never detaches a good one: generation 1 stays in force.
    assert rejected.policy == acted.policy and rejected.error is not None
    assert "rejected by the operator" in rejected.error.message
    assert "still acting on generation 1" in rejected.error.message
    # A restarted agent meets only the rejected version: nothing to act on, and the
    # reconciler holds what is attached (a view with policy None that is not deleting).
    restarted = PolicyBook("lwt-system").cluster([_accepted(gen2, "False")])[0]
    assert restarted.policy is None and not restarted.deleting
    assert restarted.error is not None and "stays as it is" in restarted.error.message
    deleting = _accepted(gen2)
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    view = book.cluster([deleting])[0]
    assert view.deleting and view.policy is None
