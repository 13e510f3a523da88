"""Shape a node's result for one policy into `status.nodes.<node>`, and aggregate nodes.

The agent writes only its own key, with a JSON merge patch (`node_status_patch`): keys it
omits are left alone and keys set to null are deleted, so an entry always carries every field
(`lastError: null` clears an earlier error). The shapes here are validated against the CRD's
status schema in tests/policy.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lwt_policy import contract
from lwt_policy.errors import Problem, problems_text
from lwt_policy.model import PolicyRef
from lwt_policy.targets import DesiredState

MAX_MESSAGE = 1024
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


def _bounded_head(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def node_status(result: NodeResult) -> dict[str, Any]:
    """The `status.nodes.<node>` entry (every field present; lastError may be null)."""
    error: dict[str, Any] | None = None
    if result.last_error is not None:
        error = {"message": _bounded_head(result.last_error.message, MAX_MESSAGE)}
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
        "lastUpdateTime": rfc3339(result.updated_at or dt.datetime.now(dt.UTC)),
    }


def node_status_patch(node_name: str, result: NodeResult | None) -> dict[str, Any]:
    """JSON merge patch body for the status subresource: this node's entry, or (None) the
    deletion of this node's entry."""
    entry = None if result is None else node_status(result)
    return {"status": {"nodes": {node_name: entry}}}


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


def ready_condition(nodes: Mapping[str, Mapping[str, Any]], generation: int,
                    now: dt.datetime | None = None) -> dict[str, Any]:
    """The Ready condition standalone mode prints, with the operator's reasons."""
    problems = {name: entry_problem(e, generation) for name, e in nodes.items()}
    not_ready = {name: why for name, why in sorted(problems.items()) if why}
    if not nodes:
        status, reason, message = "Unknown", contract.NO_NODES, "no node has reported yet"
    elif not_ready:
        errors = any(why.startswith("error:") for why in not_ready.values())
        status = "False"
        reason = contract.NODE_ERRORS if errors else contract.NODES_NOT_READY
        message = _bounded_head(
            f"{len(nodes) - len(not_ready)}/{len(nodes)} nodes ready; "
            + "; ".join(f"{n}: {why}" for n, why in not_ready.items()), MAX_MESSAGE)
    else:
        status, reason = "True", contract.ALL_NODES_READY
        message = f"{len(nodes)}/{len(nodes)} nodes attached"
    return {"type": contract.READY, "status": status, "observedGeneration": generation,
            "lastTransitionTime": rfc3339(now or dt.datetime.now(dt.UTC)),
            "reason": reason, "message": message}


def invalid_condition(problems: Sequence[Problem], generation: int,
                      now: dt.datetime | None = None) -> dict[str, Any]:
    """The Ready=False condition of a policy refused by validation (no node acts on it)."""
    return {"type": "Ready", "status": "False", "observedGeneration": generation,
            "lastTransitionTime": rfc3339(now or dt.datetime.now(dt.UTC)),
            "reason": contract.INVALID_SPEC,
            "message": _bounded_head(problems_text(problems), MAX_MESSAGE)}


def policy_status(nodes: Mapping[str, Mapping[str, Any]], generation: int,
                  now: dt.datetime | None = None) -> dict[str, Any]:
    """A whole `status` (as standalone mode prints it): conditions, summary and nodes."""
    return {
        "observedGeneration": generation,
        "conditions": [ready_condition(nodes, generation, now)],
        "summary": summarize(nodes, generation),
        "nodes": {name: dict(entry) for name, entry in sorted(nodes.items())},
    }
