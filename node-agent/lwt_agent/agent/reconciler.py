"""The reconciler: (policies, pods, nodes, this node) -> programs on routes -> node status.

One pass:
1. `lwt_policy.targets.desired_attachments` says which policy's program each hook of each
   route of this node should run (conflicts resolved by priority);
2. the program store makes one program ready per (policy, hook) — never one per route —
   and writes the policy's config into its maps;
3. a program that cannot be made ready keeps the last program of that (policy, hook) when
   there is one (nothing already attached changes); otherwise the failure policy decides:
   FailOpen leaves the hook plain, FailClosed puts the policy's drop-all on it;
4. the route engine applies it in batches and garbage-collects hooks of our owners that
   nothing wants any more; the guard is paused meanwhile (route events caused by this
   pass are not CNI churn) and then guards the new state;
5. programs nothing uses are dropped (after the routes stopped using them);
6. each policy gets this node's entry (lwt_policy.status shape, in its LwtNodeState).

The decisions of steps 4 and 6 (route intents, node entries, what is attached where) are the
pure functions of `steps.py`; this module does the I/O around them.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lwt_policy.configmap import index_configmaps
from lwt_policy.model import PolicyRef
from lwt_policy.schema import FailurePolicy
from lwt_policy.status import NodeResult
from lwt_policy.targets import DesiredState, desired_attachments

from lwt_agent.route import (
    ApplyResult,
    LabelError,
    RouteEngine,
    labels,
)
from lwt_agent.route.guard import RouteGuard

from .admission import PolicyView
from .errors import ProgramError
from .sources import ProgramSources
from .steps import Attached, PolicyHook, attached_programs, node_result, route_intents
from .store import ProgramKey, ProgramStore, StoredProgram

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Inputs:
    """Everything one pass looks at (Kubernetes object dicts)."""

    views: Sequence[PolicyView]
    pods: Sequence[Mapping[str, Any]] = ()
    nodes: Sequence[Mapping[str, Any]] = ()
    configmaps: Sequence[Mapping[str, Any]] = ()
    # Namespace name -> labels, for cluster policies' namespaceSelector (None: not known).
    namespaces: Mapping[str, Mapping[str, str]] | None = None


@dataclass
class Report:
    """The outcome of one pass."""

    results: dict[PolicyRef, NodeResult] = field(default_factory=dict)
    views: dict[PolicyRef, PolicyView] = field(default_factory=dict)
    apply: ApplyResult | None = None
    attached: list[Attached] = field(default_factory=list)
    errors: int = 0  # policies with a lastError
    duration: float = 0.0


class Reconciler:
    def __init__(self, node_name: str, admin_namespace: str, engine: RouteEngine,
                 store: ProgramStore, sources: ProgramSources,
                 guard: RouteGuard | None = None) -> None:
        self.node_name = node_name
        self.admin_namespace = admin_namespace
        self.engine = engine
        self.store = store
        self.sources = sources
        self.guard = guard
        # The last program of the policy's own that was ready, per (policy, hook): kept
        # when a newer version of the program cannot be made ready.
        self._last_good: dict[PolicyHook, ProgramKey] = {}
        self._logged: dict[PolicyHook, str] = {}

    # --- one pass ------------------------------------------------------------------------

    def reconcile(self, inputs: Inputs) -> Report:
        started = time.monotonic()
        views = {v.ref: v for v in inputs.views}
        acting = [v.policy for v in views.values() if v.policy is not None and not v.deleting]
        by_ref = {p.ref: p for p in acting}
        desired = desired_attachments(acting, inputs.pods, inputs.nodes, self.node_name,
                                      self.admin_namespace, namespaces=inputs.namespaces)
        programs, errors = self._programs(desired, by_ref, inputs.configmaps)
        intents = route_intents(desired, programs)
        # A policy known but with no valid version to act on (refused after a restart,
        # rejected, not judged yet) keeps what an earlier version attached, as it is.
        held = {ref for ref, v in views.items() if v.policy is None and not v.deleting}
        owners = self._owners(views) - _owner_tokens(held)
        if self.guard is not None:
            # Pause the guard while this pass changes routes: the events of our own changes
            # must not look like CNI churn (the guard would put the old programs back).
            self.guard.set_desired([])
        result = self.engine.converge(intents, owners)
        if self.guard is not None:
            self.guard.set_desired(intents)  # resyncs at once: churn meanwhile is repaired
        used = {p.key for p in programs.values() if p is not None}
        self.store.drop_except(used, keep_policies=held)
        self._last_good = {k: v for k, v in self._last_good.items() if v in used}
        report = Report(views=views, apply=result)
        deleting_left = self._owners_still_attached(views)
        now = dt.datetime.now(dt.UTC)
        program_errors = {ref: exc.node_error() for ref, exc in errors.items()}
        for ref, view in views.items():
            entry = node_result(view, desired, programs, program_errors, result.failures,
                                ref in deleting_left, now)
            report.results[ref] = entry
            report.errors += entry.last_error is not None
        report.attached = attached_programs(desired, programs)
        report.duration = time.monotonic() - started
        if result.changed:
            log.info("reconciled: %s", {k: n for k, n in result.counts.items() if n})
        return report

    # --- programs ------------------------------------------------------------------------

    def _programs(
        self, desired: DesiredState, by_ref: Mapping[PolicyRef, Any],
        configmaps: Sequence[Mapping[str, Any]],
    ) -> tuple[dict[PolicyHook, StoredProgram | None],
               dict[PolicyRef, ProgramError]]:
        """(policy, hook) -> program to attach (None: leave the hook plain), and the first
        error of each policy."""
        wanted = sorted({(a.policy, a.hook) for hooks in desired.attachments.values()
                         for a in hooks.values()})
        index = index_configmaps(configmaps)
        programs: dict[PolicyHook, StoredProgram | None] = {}
        errors: dict[PolicyRef, ProgramError] = {}
        for ref, hook in wanted:
            policy = by_ref[ref]
            try:
                request = self.sources.request(ref, policy.spec.hooks[hook], index)
                program = self.store.ensure(request)
            except ProgramError as exc:
                if self._logged.get((ref, hook)) != str(exc):  # once per distinct error
                    log.warning("%s hook %s: %s", ref, hook, exc)
                    self._logged[(ref, hook)] = str(exc)
                errors.setdefault(ref, exc)
                programs[(ref, hook)] = self._instead(ref, hook, policy.spec.failure_policy,
                                                      errors)
                continue
            programs[(ref, hook)] = program
            self._last_good[(ref, hook)] = program.key
            self._logged.pop((ref, hook), None)
        return programs, errors

    def _instead(self, ref: PolicyRef, hook: str, failure_policy: FailurePolicy,
                 errors: dict[PolicyRef, ProgramError]) -> StoredProgram | None:
        kept_key = self._last_good.get((ref, hook))
        kept = self.store.get(kept_key) if kept_key is not None else None
        if kept is not None:
            return kept  # a bad new version never disturbs what is attached
        if failure_policy != FailurePolicy.FAIL_CLOSED:
            return None
        try:
            return self.store.ensure(self.sources.fallback(ref, hook))
        except ProgramError as exc:
            log.error("%s hook %s: FailClosed fallback unavailable: %s", ref, hook, exc)
            errors.setdefault(ref, exc)
            return None

    # --- routes --------------------------------------------------------------------------

    def _owners(self, views: Mapping[PolicyRef, PolicyView]) -> set[str]:
        """Owners whose hooks the engine garbage-collects: every policy we know of, and
        every policy owner found on the routes (policies removed while we were down)."""
        owners = _owner_tokens(views)
        owners |= {label.owner for text in self.engine.labels_in_use()
                   if (label := labels.parse(text)) is not None
                   and labels.is_policy_owner(label.owner)}
        return owners

    def _owners_still_attached(self, views: Mapping[PolicyRef, PolicyView]) -> set[PolicyRef]:
        """Deleting policies some route still carries a program of (not detached yet)."""
        deleting = {labels.policy_owner(ref): ref for ref, v in views.items() if v.deleting}
        if not deleting:
            return set()
        found = set()
        for text in self.engine.labels_in_use():
            label = labels.parse(text)
            if label is not None and label.owner in deleting:
                found.add(deleting[label.owner])
        return found

    # --- status --------------------------------------------------------------------------

    # --- shutdown ------------------------------------------------------------------------

    def detach_all(self, refs: Iterable[PolicyRef] = ()) -> ApplyResult:
        """Remove every hook of every policy owner from the routes (and the guard)."""
        if self.guard is not None:
            self.guard.set_desired([])
        owners = _owner_tokens(refs) | {
            label.owner for text in self.engine.labels_in_use()
            if (label := labels.parse(text)) is not None and labels.is_policy_owner(label.owner)}
        return self.engine.converge([], owners)


def _owner_tokens(refs: Iterable[PolicyRef]) -> set[str]:
    """Route-label owners of these policies; a ref no label can carry (a name validation
    refused, e.g. non-ASCII) has nothing attached and is skipped."""
    tokens = set()
    for ref in refs:
        try:
            tokens.add(labels.policy_owner(ref))
        except LabelError:
            continue
    return tokens

