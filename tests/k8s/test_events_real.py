"""The operator's Normal Events and metrics on the real API server (issue 15).

Events, what `kubectl describe lrp` shows besides warnings: Accepted (once per generation),
Attached on N nodes (once per generation that every node attached), Detached (once every
node detached a deleted policy). Metrics: reconciles, errors, status writes, Events, policies
by Ready, on 127.0.0.1 only. Agents are played by the test, as in test_operator_real.py
(whose fixtures this reuses)."""
from __future__ import annotations

import socket
import time
import urllib.request

import pytest
from lwt_policy import contract
from prometheus_client.parser import text_string_to_metric_families

from tests.k8s import test_operator_real as real
from tests.k8s.cluster import free_port
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


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_operator_metrics_on_localhost(case: Case) -> None:
    port = free_port()
    case.start_operator(metrics_port=port)
    policy = case.apply_example()
    case.wait_condition(policy, contract.READY, "False", contract.NO_NODES)
    url = f"http://127.0.0.1:{port}/metrics"
    samples = wait_for(lambda: (s := _scrape(url)) and s.get(
        ("lwt_operator_policies", (("ready", "False"), ("reason", contract.NO_NODES))))
        and s, 20, "the policy counted")
    assert samples[("lwt_operator_reconciles_total", ())] >= 1
    assert samples[("lwt_operator_reconcile_errors_total", ())] == 0
    assert samples[("lwt_operator_status_writes_total", ())] >= 1
    assert samples[("lwt_operator_events_total",
                    (("reason", contract.ACCEPTED), ("type", "Normal")))] == 1
    with pytest.raises(OSError):  # bound to 127.0.0.1 only
        socket.create_connection(("127.0.0.2", port), timeout=2).close()
    case.kube.delete(case.path(policy))
    wait_for(lambda: case.gone(policy), 30, "the policy deleted")
    wait_for(lambda: not any(n == "lwt_operator_policies" for n, _ in _scrape(url)), 20,
             "the deleted policy no longer counted")
