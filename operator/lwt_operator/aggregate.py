"""Aggregating the agents' per-node entries into conditions and a summary (pure).

Inputs: the policy object (metadata.generation, deletionTimestamp, the current conditions), its
entries in the nodes' LwtNodeStates (by node name), the operator's verdict on the spec, the
cluster's nodes, and the agent settings (which nodes run an agent). Output: the status the
operator should write, O(1) in nodes (conditions, summary, at most MAX_LISTED_NODES nodes
named). Nothing here talks to the API. Node states of deleted nodes are removed by the garbage
collector (their ownerReference); entries of nodes that no longer exist are ignored meanwhile.

Which nodes count. A node *should* carry the policy when it matches spec.nodeSelector and an
agent runs there (the agent DaemonSet's nodeSelector, and its tolerations against the node's
NoSchedule/NoExecute taints; affinity is not evaluated). A node *reports* when it has an entry
that is not `detached`. `summary.nodes` counts both (expected or reporting, existing nodes only),
so `nodesReady` reads 1/2 while the second node has not reported yet.

An entry is ready when it describes the current generation, has no lastError, is not detached,
and has every targeted route attached (routes lost to a higher-priority policy, listed under
`conflicts`, do not count against it).
"""
from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lwt_policy import contract
from lwt_policy.selectors import LabelSelector
from lwt_policy.status import (
    ERROR,
    Condition,
    NodeProblem,
    kstatus_conditions,
    node_names,
    node_problem,
    node_problems,
    not_ready_nodes,
    ready_condition,
    render_conditions,
    summarize,
)

from lwt_operator.settings import AgentSettings
from lwt_operator.validation import Verdict


@dataclass(frozen=True)
class NodeInfo:
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def from_node(cls, node: Mapping[str, Any]) -> NodeInfo:
        return cls(
            labels=dict((node.get("metadata") or {}).get("labels") or {}),
            taints=tuple((node.get("spec") or {}).get("taints") or ()),
        )


def tolerates(tolerations: Iterable[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    """Kubernetes' toleration matching (k8s.io/api/core/v1 Toleration.ToleratesTaint)."""
    for toleration in tolerations:
        effect = toleration.get("effect") or ""
        if effect and effect != taint.get("effect"):
            continue
        key = toleration.get("key") or ""
        operator = toleration.get("operator") or "Equal"
        if operator == "Exists":
            if not key or key == taint.get("key"):
                return True
        elif key == taint.get("key") and (toleration.get("value") or "") == (
            taint.get("value") or ""
        ):
            return True
    return False


def runs_agent(node: NodeInfo, agent: AgentSettings) -> bool:
    if any(node.labels.get(k) != v for k, v in agent.nodeSelector.items()):
        return False
    return all(
        tolerates(agent.tolerations, taint)
        for taint in node.taints
        if taint.get("effect") in ("NoSchedule", "NoExecute")
    )


def expected_nodes(
    obj: Mapping[str, Any], nodes: Mapping[str, NodeInfo], agent: AgentSettings
) -> set[str]:
    selector = LabelSelector.from_dict((obj.get("spec") or {}).get("nodeSelector"))
    return {
        name for name, info in nodes.items()
        if runs_agent(info, agent) and selector.matches(info.labels)
    }


@dataclass(frozen=True)
class DesiredStatus:
    conditions: tuple[Condition, ...]
    summary: Mapping[str, Any]
    observed_generation: int
    holding: frozenset[str]  # while deleting: existing nodes that have not detached yet
    not_ready: tuple[Mapping[str, str], ...] = ()  # status.nodesNotReady
    more_not_ready: int = 0


def finalizer_holders(entries: Mapping[str, Mapping[str, Any]],
                      nodes: Mapping[str, NodeInfo]) -> set[str]:
    """Existing nodes whose entry does not report `detached` (the finalizer waits for them)."""
    return {
        name for name, entry in entries.items()
        if name in nodes and not (entry or {}).get("detached")
    }


def desired_status(
    obj: Mapping[str, Any],
    verdict: Verdict,
    nodes: Mapping[str, NodeInfo],
    agent: AgentSettings,
    *,
    entries: Mapping[str, Mapping[str, Any]],
    now: datetime.datetime,
    finalizer_timeout: float,
) -> DesiredStatus:
    """`entries`: this policy's entry in each node's LwtNodeState, by node name."""
    meta = obj.get("metadata") or {}
    generation = int(meta.get("generation") or 0)
    live = {name: entry or {} for name, entry in entries.items() if name in nodes}
    reporting = {name for name, entry in live.items() if not entry.get("detached")}
    expected = expected_nodes(obj, nodes, agent)
    counted = expected | reporting
    problems: dict[str, NodeProblem] = {}
    for name in counted:
        problem = node_problem(live.get(name), generation)
        if problem is not None:
            problems[name] = problem
    not_ready = {name: p.message for name, p in problems.items()}
    errors = {name: p.message for name, p in problems.items() if p.reason == ERROR}
    behind = {name for name, p in problems.items() if p.reason != ERROR}
    summary = summarize(live, generation, expected)
    accepted = Condition(contract.ACCEPTED, verdict.accepted, verdict.reason, verdict.message)
    holding = frozenset(finalizer_holders(entries, nodes))
    listed, more = not_ready_nodes(problems) if verdict.accepted else ([], 0)

    deletion = contract.parse_time(meta.get("deletionTimestamp"))
    if deletion is not None:
        waited = (now - deletion).total_seconds()
        if not holding:
            ready_c = Condition(contract.READY, False, contract.DELETING,
                                "every node has detached; the finalizer is being released")
        elif waited >= finalizer_timeout:
            ready_c = Condition(
                contract.READY, False, contract.FINALIZER_TIMEOUT,
                f"nodes {node_names(holding)} have not reported detached within "
                f"{finalizer_timeout:g}s and hold finalizer {contract.FINALIZER}; check the "
                f"lwt-agent pods on those nodes (or, if they will never come back, delete the "
                f"Node objects)")
        else:
            ready_c = Condition(contract.READY, False, contract.DELETING,
                                f"waiting for nodes {node_names(holding)} to detach")
        progressing = Condition(contract.PROGRESSING, True, contract.DELETING,
                                f"detaching from {len(holding)} node(s)")
        degraded = Condition(contract.DEGRADED, bool(errors),
                             contract.NODE_ERRORS if errors else contract.NO_ERRORS,
                             node_problems(errors) if errors else "no node reports an error")
    elif not verdict.accepted:
        ready_c = Condition(contract.READY, False, contract.INVALID_SPEC, verdict.message)
        progressing = Condition(contract.PROGRESSING, False, contract.INVALID_SPEC,
                                "no node acts on a rejected generation")
        degraded = Condition(contract.DEGRADED, False, contract.INVALID_SPEC,
                             "the spec is invalid; see the Accepted condition")
    else:
        ready_c = ready_condition({name: not_ready.get(name) for name in counted},
                                  generation, summary["attachedRoutes"], summary["routes"])
        degraded = Condition(contract.DEGRADED, bool(errors),
                             contract.NODE_ERRORS if errors else contract.NO_ERRORS,
                             node_problems(errors) if errors else "no node reports an error")
        progressing = Condition(
            contract.PROGRESSING, bool(behind),
            contract.ROLLING_OUT if behind else contract.ROLLED_OUT,
            f"waiting for {node_names(behind)} to apply generation {generation}" if behind
            else f"every node applied generation {generation}")
    return DesiredStatus(
        conditions=(accepted, ready_c, degraded, progressing,
                    *kstatus_conditions(ready_c, node_problems(errors) if errors else None)),
        summary=summary,
        observed_generation=generation,
        holding=holding,
        not_ready=tuple(listed),
        more_not_ready=more,
    )


def status_patch(
    obj: Mapping[str, Any], desired: DesiredStatus, now: datetime.datetime
) -> dict[str, Any]:
    """The merge patch for .status that brings it to `desired` ({} when it is there already)."""
    status = obj.get("status") or {}
    conditions = render_conditions(desired.conditions, status.get("conditions") or [],
                                   desired.observed_generation, now)
    patch: dict[str, Any] = {}
    if conditions != list(status.get("conditions") or []):
        patch["conditions"] = conditions
    if dict(desired.summary) != status.get("summary"):
        # A merge patch keeps keys it does not name: a count that went away is nulled.
        gone = {key: None for key in status.get("summary") or {} if key not in desired.summary}
        patch["summary"] = {**gone, **dict(desired.summary)}
    if desired.observed_generation != status.get("observedGeneration"):
        patch["observedGeneration"] = desired.observed_generation
    if list(desired.not_ready) != list(status.get("nodesNotReady") or []):
        patch["nodesNotReady"] = [dict(n) for n in desired.not_ready]
    if desired.more_not_ready != status.get("moreNodesNotReady"):
        patch["moreNodesNotReady"] = desired.more_not_ready
    if "nodes" in status:
        patch["nodes"] = None  # per-node entries of an older version: now in LwtNodeStates
    return patch
