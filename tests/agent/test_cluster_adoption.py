"""Cluster mode: a restarted agent that meets only a rejected (or not yet judged) new
version of a policy keeps what is attached as it is (real kernel, in-process agent).

The API holds only the newest spec, so the agent cannot know the last accepted version
after a restart: the policy's routes and pins must stay exactly as the earlier agent left
them until the operator accepts a version. The objects are what the API would return
(`PolicyBook.cluster`); the agent, route engine and program store are the real ones.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from lwt_agent.agent.admission import PolicyBook
from lwt_agent.agent.reconciler import Inputs
from lwt_agent.agent.runtime import Agent, AgentConfig

from tests.agent.harness import builtin_hook, encap_labels, pod_objects, policy
from tests.topology import Node

WEB = {"app": "web"}


def _version(generation: int, ports: list[Any], accepted: str | None) -> dict[str, Any]:
    obj = policy("deny", {"out": builtin_hook("port-filter", {"denyTCPPorts": ports})},
                 selector={"matchLabels": WEB})
    obj["metadata"].update(generation=generation, uid="u-1")
    if accepted is not None:
        obj["status"] = {"conditions": [{
            "type": "Accepted", "status": accepted, "observedGeneration": generation,
            "reason": "Valid" if accepted == "True" else "InvalidSpec",
            "message": "ok" if accepted == "True" else "spec.hooks.out.config: bad"}]}
    return obj


def _pins(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _pass(agent: Agent, book: PolicyBook, obj: dict[str, Any], pods: list[Any]) -> Any:
    pods = [copy.deepcopy(p) for p in pods]
    for pod in pods:
        pod["spec"]["nodeName"] = "node-a"
    return agent.run_pass(Inputs(book.cluster([obj]), pods))


def test_restart_meeting_a_rejected_version_keeps_routes_and_pins(node: Node,
                                                                   pin_dir: Path) -> None:
    pods = pod_objects(node, [WEB] * len(node.pods))
    config = AgentConfig(node_name="node-a", admin_namespace="lwt-system", pin_root=pin_dir,
                         netns=node.host)
    first = Agent(config).start()
    try:
        report = _pass(first, PolicyBook("lwt-system"), _version(1, [8080], "True"), pods)
        entry = next(iter(report.results.values()))
        assert entry.attached_routes == entry.routes == len(node.pods) * 2
    finally:
        first.shutdown(detach=False)  # a cluster agent's restart: everything stays
    routes, pins = encap_labels(node), _pins(pin_dir)
    assert all(routes.values()) and pins

    for newest in (_version(2, [8080, 9090], "False"),  # rejected by the operator
                   _version(2, [8080, 9090], None)):    # not judged yet
        agent = Agent(config).start()
        try:
            book = PolicyBook("lwt-system")  # a new process: no last accepted version
            for _ in range(2):
                report = _pass(agent, book, newest, pods)
            assert encap_labels(node) == routes and _pins(pin_dir) == pins
            assert report.views[next(iter(report.views))].policy is None
        finally:
            agent.shutdown(detach=False)

    # Generation 3 accepted: acted on, the pinned program adopted (same labels).
    agent = Agent(config).start()
    try:
        report = _pass(agent, PolicyBook("lwt-system"), _version(3, [8080, 9090], "True"), pods)
        entry = next(iter(report.results.values()))
        assert entry.last_error is None and entry.attached_routes == len(node.pods) * 2
        assert encap_labels(node) == routes
    finally:
        agent.shutdown(detach=True)
    assert all(text == "" for text in encap_labels(node).values())
