"""The operator's Normal Events on the real API server (issue 15): what `kubectl describe lrp`
shows besides warnings: Accepted (once per generation), Attached on N nodes (once per
generation that every node attached), Detached (once every node detached a deleted policy).
Agents are played by the test, as in test_operator_real.py (whose fixtures this reuses)."""
from __future__ import annotations

import time

from lwt_policy import contract

from tests.k8s import test_operator_real as real
from tests.k8s.harness import wait_for
from tests.k8s.test_operator_real import Case, attached

crds, case = real.crds, real.case  # the fixtures, under their names


def _normal(on: Case, reason: str) -> list[dict]:
    return [e for e in on.events(reason) if e.get("type") == "Normal"]


def test_normal_events_for_accepted_attached_and_detached(case: Case) -> None:
    case.start_operator()
    a, b = case.add_node("a"), case.add_node("b")
    policy = case.apply_example()
    name = policy["metadata"]["name"]
    accepted = wait_for(lambda: _normal(case, contract.ACCEPTED), 20, "the Accepted event")
    assert "generation 1 is valid" in accepted[0]["message"]
    assert accepted[0]["involvedObject"]["name"] == name
    case.report(policy, a, **attached(1, 3))
    time.sleep(1.5)  # one node of two: not attached yet, no event
    assert not _normal(case, contract.EVENT_ATTACHED)
    case.report(policy, b, **attached(1, 2))
    events = wait_for(lambda: _normal(case, contract.EVENT_ATTACHED), 20, "the Attached event")
    assert events[0]["message"] == "attached on 2 node(s), 5 route(s), generation 1"

    # A new generation: accepted and attached once more; resyncs add nothing.
    case.kube.merge_patch(case.path(policy), {"spec": {"priority": 5}})
    wait_for(lambda: len(_normal(case, contract.ACCEPTED)) == 2, 20, "the second Accepted")
    case.report(policy, a, **attached(2, 3))
    case.report(policy, b, **attached(2, 2))
    wait_for(lambda: len(_normal(case, contract.EVENT_ATTACHED)) == 2, 20,
             "the second Attached")
    time.sleep(2)  # several resync and aggregate periods
    assert len(_normal(case, contract.ACCEPTED)) == 2
    assert len(_normal(case, contract.EVENT_ATTACHED)) == 2

    case.kube.delete(case.path(policy))
    case.wait_condition(policy, contract.READY, "False", contract.DELETING)
    case.report(policy, a, detached=True, routes=0, attachedRoutes=0)
    case.report(policy, b, detached=True, routes=0, attachedRoutes=0)
    wait_for(lambda: case.gone(policy), 30, "the policy deleted")
    detached = wait_for(lambda: _normal(case, contract.EVENT_DETACHED), 20,
                        "the Detached event")
    assert len(detached) == 1 and "detached from every node" in detached[0]["message"]
