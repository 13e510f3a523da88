"""The pure steps of a reconcile pass (no kernel, no netlink, no API; tests/agent/test_steps.py).

    intents = route_intents(desired, programs)       # what the route engine should converge to
    result = node_result(view, desired, programs, errors, failures, still_attached, now)
    attached = attached_programs(desired, programs)  # for metrics and the sampler

`desired` is `lwt_policy.targets.desired_attachments`' answer; `programs` maps each
(policy, hook) to the program made ready for it, or None when the hook stays plain.
`reconciler.py` does the I/O around them: the program store, the engine, the guard.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from lwt_policy.model import PolicyRef
from lwt_policy.status import (
    NodeError,
    NodeResult,
    ProgramStatus,
    conflicts_from_desired,
    overrides_from_desired,
)
from lwt_policy.targets import DesiredState, Prefix

from lwt_agent.route import ProgramRef, RouteError, RouteIntent
from lwt_agent.route.model import Destination

from .admission import PolicyView

# One program per (policy, hook name): the key of the programs of a pass.
PolicyHook = tuple[PolicyRef, str]


class ReadyProgram(Protocol):
    """What these steps read of a program the store made ready (store.StoredProgram)."""

    @property
    def id(self) -> int: ...
    @property
    def tag(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def fallback(self) -> bool: ...  # the policy's drop-all, put there by FailClosed
    @property
    def ref(self) -> ProgramRef: ...


@dataclass(frozen=True)
class Attached:
    """A program of a policy on this node, for metrics and the sampler."""

    policy: PolicyRef
    hook: str
    program: Any  # the store's StoredProgram (maps for metrics, the sampler's ring buffer)
    destinations: Mapping[str, str]  # address text -> "ns/pod" (or "" for subnets)


def route_intents(desired: DesiredState,
                  programs: Mapping[PolicyHook, ReadyProgram | None]) -> list[RouteIntent]:
    """One intent per targeted route: the program of each hook (None: plain) and the xmit
    headroom the winning policy asks for (none for its drop-all fallback)."""
    shared: dict[tuple[Any, ...], dict[str, ProgramRef | None]] = {}
    intents: list[RouteIntent] = []
    for prefix, hooks in desired.attachments.items():
        wanted: dict[str, ProgramRef | None] = {}
        headroom = 0
        for hook, attachment in hooks.items():
            program = programs.get((attachment.policy, hook))
            wanted[hook] = program.ref if program is not None else None
            if hook == "xmit" and program is not None and not program.fallback:
                headroom = attachment.headroom or 0
        key = (tuple(sorted((h, r.label if r else None) for h, r in wanted.items())),
               headroom)
        # One mapping per distinct set of programs: the planner memoizes by it.
        mapping = shared.setdefault(key, wanted)
        intents.append(RouteIntent(Destination.of(prefix), mapping, headroom))
    return intents


def node_result(
    view: PolicyView, desired: DesiredState,
    programs: Mapping[PolicyHook, ReadyProgram | None],
    errors: Mapping[PolicyRef, NodeError], failures: Mapping[Destination, RouteError],
    still_attached: bool, now: dt.datetime,
) -> NodeResult:
    """This node's entry for one policy (in its LwtNodeState). A route counts as attached
    when every hook the policy won on it carries the policy's own program (not the drop-all
    fallback) and the engine did not fail it. The first error says why not: the view's
    (refused version), the program's, else the first failed route's."""
    ref = view.ref
    if view.deleting:
        return NodeResult(observed_generation=view.generation, detached=not still_attached,
                          updated_at=now)
    hooks = sorted(view.policy.spec.hooks) if view.policy is not None else []
    status_programs = {
        hook: ProgramStatus(p.id, p.tag, p.label)
        for hook in hooks
        if (p := programs.get((ref, hook))) is not None and not p.fallback
    }
    attached = 0
    route_error: str | None = None
    for prefix in desired.routes_of(ref) if view.policy is not None else ():
        failure = failures.get(Destination.of(prefix))
        if failure is not None:
            route_error = route_error or f"route {prefix}: {failure}"
            continue
        won = [h for h, a in desired.attachments[prefix].items() if a.policy == ref]
        carried = [programs.get((ref, h)) for h in won]
        if all(p is not None and not p.fallback for p in carried):
            attached += 1
    error = view.error or errors.get(ref)
    if error is None and route_error is not None:
        error = NodeError(route_error)
    return NodeResult(
        observed_generation=view.generation,
        routes=len(desired.targeted.get(ref, set())),
        attached_routes=attached,
        programs=status_programs,
        conflicts=conflicts_from_desired(desired, ref),
        overrides=overrides_from_desired(desired, ref),
        last_error=error,
        updated_at=now,
    )


def attached_programs(desired: DesiredState,
                      programs: Mapping[PolicyHook, Any]) -> list[Attached]:
    """Each program in use with the destinations it runs for (address -> "ns/pod")."""
    destinations: dict[PolicyHook, dict[str, str]] = {}
    for prefix, hooks in desired.attachments.items():
        where = desired.destinations.get(prefix)
        pod = str(where.pod) if where is not None and where.pod is not None else ""
        for hook, attachment in hooks.items():
            per = destinations.setdefault((attachment.policy, hook), {})
            per[_address(prefix)] = pod
    return [Attached(ref, hook, program, destinations.get((ref, hook), {}))
            for (ref, hook), program in sorted(programs.items()) if program is not None]


def _address(prefix: Prefix) -> str:
    return str(prefix.network_address) if prefix.prefixlen == prefix.max_prefixlen else str(prefix)
