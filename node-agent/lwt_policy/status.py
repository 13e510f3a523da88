"""Shape a node's result for one policy into `status.nodes.<node>`, and aggregate nodes.

The agent writes only its own key, with a JSON merge patch (`node_status_patch`): keys it
omits are left alone and keys set to null are deleted, so an entry always carries every field
(`lastError: null` clears an earlier error). Readiness (`entry_problem`, `ready_condition`)
and the rendering of conditions (`render_conditions`) are defined once here for the operator
and for standalone mode. The shapes are validated against the CRD's status schema in
tests/policy.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lwt_policy import contract
from lwt_policy.model import PolicyRef
from lwt_policy.targets import DesiredState

# Nodes named in a condition's message, at most (the rest are counted).
MAX_LISTED_NODES = 10
# The verifier explains a rejection in its last lines: keep the tail, bounded so the status
# object stays well under etcd's object size limit even with many nodes.
MAX_VERIFIER_LOG = 4096


@dataclass(frozen=True)
class ProgramStatus:
    id: int
    tag: str
    label: str


@dataclass(frozen=True)
class NodeError:
    message: str
    verifier_log: str | None = None


@dataclass(frozen=True)
class Conflict:
    hook: str
    winner: str
    routes: int
    reason: str = ""


@dataclass
class NodeResult:
    """What the agent of one node did for one policy."""

    observed_generation: int
    routes: int = 0
    attached_routes: int = 0
    programs: Mapping[str, ProgramStatus] = field(default_factory=dict)
    conflicts: list[Conflict] = field(default_factory=list)
    last_error: NodeError | None = None
    detached: bool = False
    updated_at: dt.datetime | None = None


def conflicts_from_desired(desired: DesiredState, policy: PolicyRef) -> list[Conflict]:
    return [Conflict(hook, str(winner), n, reason)
            for hook, winner, n, reason in desired.conflicts_of(policy)]


def bounded_tail(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    marker = f"[... {len(text) - limit} characters cut ...]\n"
    return marker + text[len(text) - limit + len(marker):]


def node_status(result: NodeResult) -> dict[str, Any]:
    """The `status.nodes.<node>` entry (every field present; lastError may be null)."""
    error: dict[str, Any] | None = None
    if result.last_error is not None:
        error = {"message": contract.bounded(result.last_error.message)}
        if result.last_error.verifier_log:
            error["verifierLog"] = bounded_tail(result.last_error.verifier_log,
                                                MAX_VERIFIER_LOG)
    return {
        "observedGeneration": result.observed_generation,
        "routes": result.routes,
        "attachedRoutes": result.attached_routes,
        "programs": {hook: {"id": p.id, "tag": p.tag, "label": p.label}
                     for hook, p in sorted(result.programs.items())},
        "conflicts": [
            {"hook": c.hook, "winner": c.winner, "routes": c.routes, "reason": c.reason}
            for c in result.conflicts
        ],
        "lastError": error,
        "detached": result.detached,
        "lastUpdateTime": contract.rfc3339(result.updated_at or dt.datetime.now(dt.UTC)),
    }


def node_status_patch(node_name: str, entry: Mapping[str, Any] | None) -> dict[str, Any]:
    """JSON merge patch body for the status subresource: this node's entry (`node_status`),
    or (None) the deletion of this node's entry."""
    return {"status": {"nodes": {node_name: None if entry is None else dict(entry)}}}


def entry_problem(entry: Mapping[str, Any], generation: int) -> str | None:
    """Why a node entry is not ready for `generation` (None when it is): the one definition
    of a ready node, used by standalone mode and by the operator's aggregation."""
    if entry.get("detached"):
        return "detached"
    observed = entry.get("observedGeneration")
    if observed != generation:
        return f"at generation {observed}, not {generation}"
    error = entry.get("lastError")
    if error:
        message = error.get("message") if isinstance(error, Mapping) else str(error)
        return f"error: {message}"
    # Routes lost to a higher-priority policy (listed under `conflicts`) do not count.
    lost = sum(int(c.get("routes") or 0) for c in entry.get("conflicts") or ())
    targeted = int(entry.get("routes") or 0)
    attached = int(entry.get("attachedRoutes") or 0)
    if attached + lost < targeted:
        return f"{attached}/{targeted} routes attached"
    return None


def node_is_ready(entry: Mapping[str, Any], generation: int) -> bool:
    return entry_problem(entry, generation) is None


def summarize(entries: Mapping[str, Mapping[str, Any]], generation: int,
              expected: Iterable[str] = ()) -> dict[str, Any]:
    """`status.summary` from the node entries. A node counts when it is expected to carry the
    policy or reports it (an entry not `detached`); routes are summed over reporting nodes."""
    reporting = {name: e for name, e in entries.items() if not e.get("detached")}
    counted = set(expected) | set(reporting)
    ready = sum(1 for name in counted
                if name in reporting and node_is_ready(reporting[name], generation))
    return {
        "nodes": len(counted),
        "readyNodes": ready,
        "nodesReady": f"{ready}/{len(counted)}",
        "routes": sum(int(e.get("routes") or 0) for e in reporting.values()),
        "attachedRoutes": sum(int(e.get("attachedRoutes") or 0) for e in reporting.values()),
    }


@dataclass(frozen=True)
class Condition:
    """A condition before rendering (`render_conditions` adds generation and times)."""

    type: str
    status: bool
    reason: str
    message: str


def node_names(names: Iterable[str]) -> str:
    """Up to MAX_LISTED_NODES names, then how many more."""
    ordered = sorted(names)
    shown = ", ".join(ordered[:MAX_LISTED_NODES])
    more = len(ordered) - MAX_LISTED_NODES
    return shown + (f" and {more} more" if more > 0 else "")


def node_problems(problems: Mapping[str, str]) -> str:
    """`node: why; ...` for up to MAX_LISTED_NODES nodes."""
    return "; ".join(f"{name}: {problems[name]}"
                     for name in sorted(problems)[:MAX_LISTED_NODES])


def ready_condition(problems: Mapping[str, str | None], generation: int,
                    attached_routes: int, targeted_routes: int | None = None) -> Condition:
    """Ready, from why each node that counts is not ready (None: it is; `entry_problem`):
    the one definition, used by the operator and by standalone mode. Zero targeted routes
    is ready with its own reason (NoTargets): a selector typo or pods on another node must
    not look like a success."""
    not_ready = {name: why for name, why in problems.items() if why}
    ready = len(problems) - len(not_ready)
    if not problems:
        return Condition(contract.READY, False, contract.NO_NODES,
                         "no node matches spec.nodeSelector and runs the agent")
    if not_ready:
        return Condition(contract.READY, False, contract.NODES_NOT_READY, contract.bounded(
            f"{ready}/{len(problems)} nodes ready; {node_problems(not_ready)}"))
    if targeted_routes == 0:
        return Condition(contract.READY, True, contract.NO_TARGETS,
                         f"{ready}/{len(problems)} nodes ready, but no route is targeted: no "
                         "running pod with an IP on these nodes matches spec.podSelector "
                         "(nor a node pod CIDR spec.podSubnets)")
    return Condition(contract.READY, True, contract.ALL_NODES_READY,
                     f"{ready}/{len(problems)} nodes attached {attached_routes} route(s) at "
                     f"generation {generation}")


def render_conditions(
    desired: Iterable[Condition],
    current: Iterable[Mapping[str, Any]],
    generation: int,
    now: dt.datetime,
) -> list[dict[str, Any]]:
    """Conditions as stored: lastTransitionTime kept unless the status flips. Conditions of
    other types (someone else's) are kept as they are."""
    previous = {c.get("type"): c for c in current}
    out = []
    for condition in desired:
        status = "True" if condition.status else "False"
        before = previous.pop(condition.type, None)
        changed = before is None or before.get("status") != status
        out.append({
            "type": condition.type,
            "status": status,
            "observedGeneration": generation,
            "lastTransitionTime": (contract.rfc3339(now) if changed
                                   else before["lastTransitionTime"]),
            "reason": condition.reason,
            "message": contract.bounded(condition.message),
        })
    out += [dict(c) for c in previous.values()]
    return out


def policy_status(nodes: Mapping[str, Mapping[str, Any]], generation: int,
                  now: dt.datetime | None = None) -> dict[str, Any]:
    """A whole `status` (as standalone mode prints it): conditions, summary and nodes."""
    summary = summarize(nodes, generation)
    ready = ready_condition({name: entry_problem(e, generation) for name, e in nodes.items()},
                            generation, summary["attachedRoutes"], summary["routes"])
    return {
        "observedGeneration": generation,
        "conditions": render_conditions([ready], [], generation,
                                        now or dt.datetime.now(dt.UTC)),
        "summary": summary,
        "nodes": {name: dict(entry) for name, entry in sorted(nodes.items())},
    }
