"""What the operator and the node agents agree on through the API (no kopf, no I/O here).

The accepted-generation handshake
---------------------------------
An agent acts on a policy only when the operator has accepted the policy's *current* spec:

    status.conditions[type=Accepted].status == "True"
    and that condition's observedGeneration == metadata.generation

(`is_accepted(obj)` below). While the operator has not judged a new generation yet, an agent
changes nothing for that policy: what it attached for the previous accepted generation stays.
When the operator rejects a generation (Accepted=False, reason InvalidSpec, plus Ready=False
and a Warning Event), agents attach nothing of it and keep what the last accepted generation
attached (after an agent restart, whatever is on the routes stays as it is): a bad new version
never detaches a good one. Deleting the policy is what detaches it.
A policy being deleted (`metadata.deletionTimestamp` set) is detached by every agent whatever
its Accepted condition says (deletion bumps metadata.generation, so the condition lags).

Per-node entries (written by agents, read by the operator)
---------------------------------------------------------
Agents write nothing into policies. Each agent owns one cluster-scoped LwtNodeState named after
its node (created by the agent with an ownerReference to its Node, so the garbage collector
removes it with the Node) and writes its `status` with a JSON merge patch to the `/status`
subresource: `policies`, one entry per policy it acts on (namespace, name, observedGeneration,
routes (targeted), attachedRoutes, programs, conflicts, lastError {message, verifierLog} or
null, detached, lastUpdateTime; fields declared in lwt_policy.schema), plus a summary. The API
server lets an agent write only the LwtNodeState of the node its token is bound to (the
chart's ValidatingAdmissionPolicy). When a policy is being deleted, an agent detaches
everything of it and then reports `detached: true` in its entry; the operator's finalizer
waits for that from every node that still exists. A node that stops being targeted detaches
and drops its entry (or marks it `detached: true`); detached entries do not count as
reporting. Entries of nodes that no longer exist do not count.

The operator owns the policy's whole status, O(1) in nodes: `status.conditions` (Accepted,
Ready, Degraded, Progressing), `status.summary`, `status.nodesNotReady` (at most
MAX_LISTED_NODES nodes with a reason), `status.moreNodesNotReady` and
`status.observedGeneration`. It aggregates from the LwtNodeStates (watched, debounced).

Both sides write times with `rfc3339` and bound every human-readable message they write
(conditions, lastError, Events) with `bounded`, to `MAX_MESSAGE` characters.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

GROUP = "lwt.dev"
VERSION = "v1alpha1"
PLURAL = "lwtroutepolicies"

FINALIZER = "lwt.dev/nodes-detached"
ANNOTATION_PREFIX = "lwt.dev"  # kopf's progress and diff-base annotations

ACCEPTED = "Accepted"
READY = "Ready"
DEGRADED = "Degraded"
PROGRESSING = "Progressing"
# kstatus' abnormal-true conditions (sigs.k8s.io/cli-utils/pkg/kstatus), read by Flux and by
# the Argo CD health check of docs/install.md: Reconciling=True while the current generation
# is on its way to the nodes (InProgress), Stalled=True when it will not get there without a
# change by someone (Failed); both False when Ready. Never both True.
RECONCILING = "Reconciling"
STALLED = "Stalled"
CONDITION_TYPES = (ACCEPTED, READY, DEGRADED, PROGRESSING, RECONCILING, STALLED)

# Reasons of the operator's Normal Events (`kubectl describe lrp`), besides Accepted: once per
# generation that every node attached, and once when every node detached a deleted policy.
EVENT_ATTACHED = "Attached"
EVENT_DETACHED = "Detached"

# Reasons (CamelCase, as Kubernetes conditions use them).
VALID = "Valid"
INVALID_SPEC = "InvalidSpec"
ALL_NODES_READY = "AllNodesAttached"
NODES_NOT_READY = "NodesNotReady"
NO_NODES = "NoMatchingNodes"
NO_TARGETS = "NoTargets"  # Ready, but no node has a route the policy targets
NODE_ERRORS = "NodeErrors"
NO_ERRORS = "NoErrors"
ROLLING_OUT = "RollingOut"
ROLLED_OUT = "RolledOut"
DELETING = "Deleting"
FINALIZER_TIMEOUT = "FinalizerTimeout"

# One bound for every message written to the API: a node state holds a lastError per policy
# (hundreds of policies must stay under etcd's object size limit), and kubectl shows an
# Event's message cut at 1 KiB anyway.
MAX_MESSAGE = 1024


def bounded(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` cut to ``limit`` characters (the head: messages say the important part first)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def rfc3339(moment: dt.datetime) -> str:
    """A time as the API stores it (UTC, whole seconds)."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> dt.datetime | None:
    """The inverse of `rfc3339` (None for an absent time)."""
    if not text:
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def find_condition(obj: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == type_:
            return condition
    return None


def _verdict(obj: Mapping[str, Any]) -> str | None:
    """The Accepted condition's status when it judges the current generation, else None."""
    condition = find_condition(obj, ACCEPTED)
    generation = (obj.get("metadata") or {}).get("generation")
    if condition is None or condition.get("observedGeneration") != generation:
        return None
    return str(condition.get("status"))


def is_accepted(obj: Mapping[str, Any]) -> bool:
    """True when the operator accepted this policy's current generation (agents may act)."""
    return _verdict(obj) == "True"


def is_rejected(obj: Mapping[str, Any]) -> bool:
    """True when the operator rejected the current generation (agents keep the last accepted
    one)."""
    return _verdict(obj) == "False"
