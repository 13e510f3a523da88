"""Which version of each policy the agent acts on.

A bad new version never disturbs what an earlier good version attached: the agent keeps
acting on the last version it accepted and reports the problem. Standalone mode judges
policies itself (the same `lwt_policy.model` validation the operator runs); cluster mode
follows the operator's accepted-generation handshake (`lwt_policy.contract`): act on the
current generation once it is Accepted, keep the previous one while it is being judged or
when the operator rejected the new one.

A policy with no valid version in memory (the agent restarted and the file or the API holds
only a bad newest version) gets a view with `policy=None`: the reconciler then leaves what
is attached for that policy, routes and pins, exactly as it is (the restarted agent "adopts"
it untouched) until a valid version arrives. Only deleting the policy (or removing it from
the files) detaches.
"""
from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lwt_policy import contract
from lwt_policy.errors import PolicyValidationError, problems_text
from lwt_policy.model import (
    DEFAULT_NAMESPACE,
    LwtRoutePolicy,
    PolicyRef,
    is_cluster_kind,
    parse_policy,
)
from lwt_policy.status import NodeError


@dataclass(frozen=True)
class PolicyView:
    """What the reconciler does for one policy and what it reports."""

    ref: PolicyRef
    policy: LwtRoutePolicy | None  # the version to act on; None: attach nothing
    generation: int  # the generation the node entry reports
    error: NodeError | None = None  # a refusal of the newest version
    deleting: bool = False
    raw: Mapping[str, Any] | None = None  # the newest object as given


def ref_of(obj: Mapping[str, Any]) -> PolicyRef:
    meta = obj.get("metadata") or {}
    if is_cluster_kind(obj):
        return PolicyRef("", str(meta.get("name", "")))
    return PolicyRef(meta.get("namespace") or DEFAULT_NAMESPACE, str(meta.get("name", "")))


class PolicyBook:
    """Remembers the last good version of each policy across reconciles."""

    def __init__(self, admin_namespace: str) -> None:
        self.admin_namespace = admin_namespace
        self._good: dict[PolicyRef, LwtRoutePolicy] = {}
        self._generations: dict[PolicyRef, tuple[str, int]] = {}

    # --- standalone ----------------------------------------------------------------------

    def standalone(self, objects: Iterable[Mapping[str, Any]]) -> list[PolicyView]:
        """Views of policy objects read from files: validated here; a generation is
        assigned as the API server would (1, then +1 whenever the spec changes)."""
        views: list[PolicyView] = []
        seen: set[PolicyRef] = set()
        for raw in objects:
            obj = self._with_identity(raw)
            ref = ref_of(obj)
            seen.add(ref)
            generation = _generation(obj)
            try:
                policy = parse_policy(obj, admin_namespace=self.admin_namespace)
            except PolicyValidationError as exc:
                kept = self._good.get(ref)
                message = f"refused: {problems_text(exc.problems)}{_keeping(kept)}"
                views.append(PolicyView(ref, kept, generation, NodeError(message), raw=raw))
                continue
            self._good[ref] = policy
            views.append(PolicyView(ref, policy, generation, deleting=policy.deleting,
                                    raw=raw))
        self._forget_except(seen)
        return views

    def _with_identity(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(dict(raw))
        obj.pop("status", None)  # a `kubectl get lrp -o yaml` dump carries the cluster's
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            return obj  # validation reports it
        ref = ref_of(obj)
        meta.setdefault("uid", str(uuid.uuid5(uuid.NAMESPACE_URL, f"lwt.dev/{ref}")))
        if not meta.get("generation"):
            spec = json.dumps(obj.get("spec"), sort_keys=True, default=str)
            last = self._generations.get(ref)
            generation = 1 if last is None else last[1] + (last[0] != spec)
            self._generations[ref] = (spec, generation)
            meta["generation"] = generation
        return obj

    # --- cluster -------------------------------------------------------------------------

    def cluster(self, objects: Iterable[Mapping[str, Any]]) -> list[PolicyView]:
        """Views of policy objects from the API, following the accepted-generation
        handshake."""
        views: list[PolicyView] = []
        seen: set[PolicyRef] = set()
        for obj in objects:
            ref = ref_of(obj)
            seen.add(ref)
            meta = obj.get("metadata") or {}
            generation = _generation(obj)
            kept = self._good.get(ref)
            if meta.get("deletionTimestamp"):
                views.append(PolicyView(ref, None, generation, deleting=True, raw=obj))
                continue
            if contract.is_rejected(obj):
                condition = contract.find_condition(obj, contract.ACCEPTED) or {}
                message = (f"rejected by the operator ({condition.get('reason', '')}): "
                           f"{condition.get('message', '')}{_keeping(kept)}")
                views.append(PolicyView(ref, kept, generation, NodeError(message), raw=obj))
                continue
            if not contract.is_accepted(obj):
                # Not judged yet: keep the last accepted version (or attach nothing).
                reported = kept.generation if kept is not None else generation
                views.append(PolicyView(ref, kept, reported, raw=obj))
                continue
            try:
                # Only metadata and spec are the agent's business (status is written by
                # the operator and the agents, and validated by the API server).
                spec_only = {k: v for k, v in obj.items() if k != "status"}
                policy = parse_policy(spec_only, admin_namespace=self.admin_namespace)
            except PolicyValidationError as exc:
                # Accepted by the operator but refused here: the agent's catalogue differs.
                message = f"refused by this agent: {problems_text(exc.problems)}{_keeping(kept)}"
                views.append(PolicyView(ref, kept, generation, NodeError(message), raw=obj))
                continue
            self._good[ref] = policy
            views.append(PolicyView(ref, policy, generation, raw=obj))
        self._forget_except(seen)
        return views

    def _forget_except(self, seen: set[PolicyRef]) -> None:
        for ref in [r for r in self._good if r not in seen]:
            del self._good[ref]
        for ref in [r for r in self._generations if r not in seen]:
            del self._generations[ref]


def _keeping(kept: LwtRoutePolicy | None) -> str:
    """What the agent does instead of acting on a refused version (said in the status)."""
    if kept is not None:
        return f" (still acting on generation {kept.generation}, the last valid one)"
    # After a restart the last valid version is gone from memory (the API or the file
    # holds only the newest): what it attached stays as it is, untouched.
    return (" (whatever an earlier version attached stays as it is until a valid version "
            "arrives)")


def _generation(obj: Mapping[str, Any]) -> int:
    try:
        return int((obj.get("metadata") or {}).get("generation") or 0)
    except (TypeError, ValueError):
        return 0  # validation reports the malformed field
