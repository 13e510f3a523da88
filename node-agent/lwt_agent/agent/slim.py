"""What cluster mode keeps of each LwtRoutePolicy: only the fields the agent reads.

An agent holds every policy of the cluster; a tenant controls how large its own are. So the
cache keeps identity, the spec (bounded by `lwt_policy.limits.MAX_SPEC_BYTES`; the CRD keeps
valid specs far below it), the operator's conditions and this node's own status entry, and
drops the rest: annotations (kopf's last-handled-configuration repeats the whole spec),
labels, managedFields, other nodes' entries. A spec over the cap is refused here (ValueError:
the informer leaves the object out, logs and counts it, and the policy's status on this node
says why), so its bulk is never held beyond the page being decoded.
"""
from __future__ import annotations

from typing import Any

from lwt_policy import limits

_METADATA = ("name", "namespace", "uid", "generation", "resourceVersion",
             "deletionTimestamp", "finalizers")
MAX_CONDITION_MESSAGE = 1024  # the agent only shows it back; the operator keeps the full text


def slim_policy(obj: dict[str, Any], node: str) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec")
    problem = limits.spec_size_problem(spec) if spec is not None else None
    if problem is not None:
        raise ValueError(problem)
    status = obj.get("status") if isinstance(obj.get("status"), dict) else {}
    slim: dict[str, Any] = {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": {k: meta[k] for k in _METADATA if k in meta},
        "spec": spec,
    }
    conditions = [_slim_condition(c) for c in status.get("conditions") or []
                  if isinstance(c, dict)]
    if conditions:
        slim["status"] = {"conditions": conditions}
    return slim


def _slim_condition(condition: dict[str, Any]) -> dict[str, Any]:
    message = condition.get("message")
    if isinstance(message, str) and len(message) > MAX_CONDITION_MESSAGE:
        condition = {**condition, "message": message[:MAX_CONDITION_MESSAGE] + "..."}
    return condition
