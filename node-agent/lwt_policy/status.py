"""Shape a node's result for one policy into its entry in the node's LwtNodeState, and
aggregate entries into a policy's status.

Each node's agent owns one LwtNodeState (named after the node) whose `status.policies` holds
its entry for every policy (`node_state_status`); it writes nothing into policies. An entry
always carries every field (`lastError: null` after an error is gone). Readiness
(`node_problem`, `entry_problem`, `ready_condition`), the bounded list of nodes that are not
ready (`not_ready_nodes`) and the rendering of conditions (`render_conditions`) are defined
once here for the operator and for standalone mode. A policy's status is O(1) in nodes:
conditions, summary counts and at most `MAX_LISTED_NODES` named nodes. The shapes are
validated against the CRDs' status schemas in tests/policy.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lwt_policy import contract, schema
from lwt_policy.model import PolicyRef
from lwt_policy.targets import DesiredState

# Nodes named in a condition's message or in status.nodesNotReady, at most (the rest are
# counted).
MAX_LISTED_NODES = schema.MAX_LISTED_NODES
# The verifier explains a rejection in its last lines: keep the tail.
MAX_VERIFIER_LOG = 4096
# Verifier logs one node state carries in all: past it, entries keep their message and say
# where the full log is (the agent's log). Keeps a node with hundreds of failing policies far
# under etcd's 1.5 MiB object limit.
MAX_NODE_STATE_LOGS = 256 * 1024
VERIFIER_LOG_DROPPED = ("[verifier log not kept: this node's logs exceed their budget; see the "
                        "agent's log]")


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


@dataclass(frozen=True)
class Override:
    """Routes of `hook` this policy won over `loser` (who reports them as a Conflict)."""

    hook: str
    loser: str
    routes: int


@dataclass
class NodeResult:
    """What the agent of one node did for one policy."""

    observed_generation: int
    routes: int = 0
    attached_routes: int = 0
    programs: Mapping[str, ProgramStatus] = field(default_factory=dict)
    conflicts: list[Conflict] = field(default_factory=list)
    overrides: list[Override] = field(default_factory=list)
    last_error: NodeError | None = None
    detached: bool = False
    updated_at: dt.datetime | None = None


def conflicts_from_desired(desired: DesiredState, policy: PolicyRef) -> list[Conflict]:
    return [Conflict(hook, str(winner), n, reason)
            for hook, winner, n, reason in desired.conflicts_of(policy)]


def overrides_from_desired(desired: DesiredState, policy: PolicyRef) -> list[Override]:
    return [Override(hook, str(loser), n) for hook, loser, n in desired.overrides_of(policy)]


def bounded_tail(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    marker = f"[... {len(text) - limit} characters cut ...]\n"
    return marker + text[len(text) - limit + len(marker):]


def node_status(result: NodeResult) -> dict[str, Any]:
    """This node's entry for one policy, without which policy (`node_state_entry` adds it);
    every field present, lastError may be null."""
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
        "overrides": [{"hook": o.hook, "loser": o.loser, "routes": o.routes}
                      for o in result.overrides],
        "lastError": error,
        "detached": result.detached,
        "lastUpdateTime": contract.rfc3339(result.updated_at or dt.datetime.now(dt.UTC)),
    }


def policy_key(entry: Mapping[str, Any]) -> tuple[str, str]:
    return (str(entry.get("namespace") or ""), str(entry.get("name") or ""))


def node_state_entry(ref: PolicyRef, entry: Mapping[str, Any]) -> dict[str, Any]:
    """`node_status` with the policy it is about, as `status.policies[]` holds it."""
    return {"namespace": ref.namespace, "name": ref.name, **entry}


def _comparable(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k != "lastUpdateTime"}


def node_state_status(entries: Iterable[Mapping[str, Any]],
                      previous: Iterable[Mapping[str, Any]] = (),
                      now: dt.datetime | None = None) -> dict[str, Any]:
    """A node state's whole `status` from this pass's entries (`node_state_entry`). An entry
    equal to its `previous` one (times aside) keeps its previous lastUpdateTime, so a pass that
    changes nothing produces the same object. In policy order, verifier logs are kept while
    their total stays within MAX_NODE_STATE_LOGS; later ones are replaced by a note."""
    before = {policy_key(e): e for e in previous}
    out: list[dict[str, Any]] = []
    budget = MAX_NODE_STATE_LOGS
    for entry in sorted(entries, key=policy_key)[:schema.MAX_NODE_POLICIES]:
        entry = dict(entry)
        error = entry.get("lastError")
        if isinstance(error, Mapping) and error.get("verifierLog"):
            log = str(error["verifierLog"])
            if len(log) > budget:
                entry["lastError"] = {**error, "verifierLog": VERIFIER_LOG_DROPPED}
            else:
                budget -= len(log)
        old = before.get(policy_key(entry))
        if old is not None and _comparable(old) == _comparable(entry):
            entry["lastUpdateTime"] = old.get("lastUpdateTime", entry.get("lastUpdateTime"))
        out.append(entry)
    changed = [_comparable(e) for e in out] != [_comparable(e) for e in sorted(
        before.values(), key=policy_key)]
    latest = [e.get("lastUpdateTime") for e in out if e.get("lastUpdateTime")]
    stamp = (contract.rfc3339(now or dt.datetime.now(dt.UTC)) if changed or not latest
             else max(latest))
    return {
        "policies": out,
        "summary": {
            "policies": len(out),
            "errors": sum(1 for e in out if e.get("lastError")),
            "attachedRoutes": sum(int(e.get("attachedRoutes") or 0) for e in out),
        },
        "lastUpdateTime": stamp,
    }


def node_state_object(node_name: str, node_uid: str | None) -> dict[str, Any]:
    """A new LwtNodeState for `node_name`, owned by its Node (the garbage collector deletes
    it with the Node). Its status is written separately (the status subresource)."""
    meta: dict[str, Any] = {"name": node_name,
                            "labels": {"app.kubernetes.io/part-of": "lwt-operator"}}
    if node_uid:
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": node_name,
                                    "uid": node_uid}]
    return {"apiVersion": schema.API_VERSION, "kind": schema.NODE_STATE_KIND, "metadata": meta}


def entries_by_policy(states: Iterable[Mapping[str, Any]]
                      ) -> dict[tuple[str, str], dict[str, Mapping[str, Any]]]:
    """{(namespace, name): {node: entry}} from LwtNodeState objects (the operator's view)."""
    out: dict[tuple[str, str], dict[str, Mapping[str, Any]]] = {}
    for state in states:
        node = str((state.get("metadata") or {}).get("name") or "")
        for entry in ((state.get("status") or {}).get("policies") or ()):
            if isinstance(entry, Mapping):
                out.setdefault(policy_key(entry), {})[node] = entry
    return out


@dataclass(frozen=True)
class NodeProblem:
    """Why a node is not ready for a generation: a reason of schema.NODE_PROBLEM_REASONS."""

    reason: str
    message: str


ERROR, BEHIND, ATTACHING, NO_REPORT = schema.NODE_PROBLEM_REASONS


def node_problem(entry: Mapping[str, Any] | None, generation: int) -> NodeProblem | None:
    """Why a node entry is not ready for `generation` (None when it is; no entry: NoReport):
    the one definition of a ready node, used by standalone mode and by the operator."""
    if entry is None or entry.get("detached"):
        return NodeProblem(NO_REPORT, "no report yet" if entry is None else "detached")
    observed = entry.get("observedGeneration")
    if observed != generation:
        return NodeProblem(BEHIND, f"at generation {observed}, not {generation}")
    error = entry.get("lastError")
    if error:
        message = error.get("message") if isinstance(error, Mapping) else str(error)
        return NodeProblem(ERROR, f"error: {message}")
    # Routes lost to a higher-priority policy (listed under `conflicts`) do not count.
    lost = sum(int(c.get("routes") or 0) for c in entry.get("conflicts") or ())
    targeted = int(entry.get("routes") or 0)
    attached = int(entry.get("attachedRoutes") or 0)
    if attached + lost < targeted:
        return NodeProblem(ATTACHING, f"{attached}/{targeted} routes attached")
    return None


def entry_problem(entry: Mapping[str, Any], generation: int) -> str | None:
    """`node_problem`'s message (None when the entry is ready)."""
    problem = node_problem(entry, generation)
    return None if problem is None else problem.message


def not_ready_nodes(problems: Mapping[str, NodeProblem]) -> tuple[list[dict[str, str]], int]:
    """`status.nodesNotReady` and `status.moreNodesNotReady`: errors first, then the others,
    by name within each; at most MAX_LISTED_NODES listed, messages bounded."""
    order = sorted(problems, key=lambda n: (problems[n].reason != ERROR, n))
    listed = [{"node": name, "reason": problems[name].reason,
               "message": contract.bounded(problems[name].message,
                                           schema.MAX_NODE_PROBLEM_MESSAGE)}
              for name in order[:MAX_LISTED_NODES]]
    return listed, max(0, len(order) - MAX_LISTED_NODES)


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
    summary: dict[str, Any] = {
        "nodes": len(counted),
        "readyNodes": ready,
        "nodesReady": f"{ready}/{len(counted)}",
        "routes": sum(int(e.get("routes") or 0) for e in reporting.values()),
        "attachedRoutes": sum(int(e.get("attachedRoutes") or 0) for e in reporting.values()),
    }
    # Contests with other policies, so that both sides' own objects say so (the details,
    # per node, are in the node states); present only when there are any.
    for key, field_name in (("routesLost", "conflicts"), ("routesWon", "overrides")):
        count = sum(int(c.get("routes") or 0) for e in reporting.values()
                    for c in e.get(field_name) or () if isinstance(c, Mapping))
        if count:
            summary[key] = count
    return summary


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


# Ready=False for these reasons will not change without someone acting (a spec fix, a node
# selector that matches an agent's node, an agent brought back): kstatus Failed, not
# InProgress.
STALLED_READY_REASONS = frozenset({contract.INVALID_SPEC, contract.NO_NODES,
                                   contract.FINALIZER_TIMEOUT})


def kstatus_conditions(ready: Condition, node_errors: str | None = None
                       ) -> tuple[Condition, Condition]:
    """Reconciling and Stalled, from Ready and the nodes' errors (`node_problems` of the
    nodes reporting one, None when none does: such a node is stuck until the policy or the
    node changes). Exactly one is True while Ready is False; neither when Ready is True.
    Together with status.observedGeneration this is what kstatus reads."""
    if ready.status:
        return (Condition(contract.RECONCILING, False, ready.reason, "nothing left to do"),
                Condition(contract.STALLED, False, ready.reason, "not stalled"))
    if ready.reason in STALLED_READY_REASONS or node_errors:
        reason, message = ((ready.reason, ready.message) if ready.reason in
                           STALLED_READY_REASONS else (contract.NODE_ERRORS, node_errors or ""))
        return (Condition(contract.RECONCILING, False, reason,
                          "no progress without a change; see Stalled"),
                Condition(contract.STALLED, True, reason, message))
    return (Condition(contract.RECONCILING, True, ready.reason, ready.message),
            Condition(contract.STALLED, False, ready.reason, "not stalled"))


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
    """A whole policy `status` (as standalone mode prints it): conditions, summary and the
    bounded list of nodes not ready; the entries themselves stay in the node states."""
    summary = summarize(nodes, generation)
    problems = {name: node_problem(e, generation) for name, e in nodes.items()}
    ready = ready_condition({name: None if p is None else p.message
                             for name, p in problems.items()},
                            generation, summary["attachedRoutes"], summary["routes"])
    listed, more = not_ready_nodes({n: p for n, p in problems.items() if p is not None})
    errors = node_problems({n: p.message for n, p in problems.items()
                            if p is not None and p.reason == ERROR}) or None
    return {
        "observedGeneration": generation,
        "conditions": render_conditions([ready, *kstatus_conditions(ready, errors)], [],
                                        generation, now or dt.datetime.now(dt.UTC)),
        "summary": summary,
        "nodesNotReady": listed,
        "moreNodesNotReady": more,
    }
