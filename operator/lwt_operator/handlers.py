"""The kopf handlers: short and declarative; the decisions live in the pure modules.

- every policy event and a periodic timer: judge the spec (validation.py), aggregate the node
  entries (aggregate.py) and write conditions/summary/observedGeneration/nodesNotReady when
  they differ; a Warning Event when a generation is rejected; Normal Events when one is
  accepted, when every node attached it and when every node detached a deleted policy;
- node states (LwtNodeState, one per node, written by its agent) are indexed by policy; a
  change marks the policies whose entries changed, and a short per-policy timer folds them in
  (debounced and batched: one status write per policy per `aggregate` period);
- deletion: the finalizer stays until every existing node reports `detached`
  (kopf retries the handler every `finalizer_poll` seconds and removes the finalizer when it
  returns);
- nodes are indexed (labels, taints) to know which nodes exist and which should report.
"""
from __future__ import annotations

import datetime
import logging
import threading
from typing import Any

import kopf
import kubernetes.client
from lwt_policy import cluster_schema, contract, schema
from lwt_policy.status import policy_key

from lwt_operator.aggregate import DesiredStatus, NodeInfo, desired_status, status_patch
from lwt_operator.config import OperatorConfig
from lwt_operator.metrics import OperatorMetrics
from lwt_operator.validation import Verdict, judge

log = logging.getLogger(__name__)
POLICIES = (contract.GROUP, contract.VERSION, contract.PLURAL)
CLUSTER_POLICIES = (schema.GROUP, schema.VERSION, cluster_schema.PLURAL)
NODE_STATES = (schema.GROUP, schema.VERSION, schema.NODE_STATE_PLURAL)


def operator_settings(config: OperatorConfig) -> kopf.OperatorSettings:
    timings = config.timings
    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = contract.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=contract.ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=contract.ANNOTATION_PREFIX, key="last-handled-configuration")
    # Log records become Events from WARNING up; the Normal Events (normal_events) are
    # posted explicitly, once per occasion.
    settings.posting.level = logging.WARNING
    # kopf sends it as the watch's timeoutSeconds as is: a real API server refuses "300.0"
    # (400, strconv.ParseInt) and the operator never sees an event; whole seconds only.
    settings.watching.server_timeout = int(timings.watch_server_timeout)
    settings.watching.client_timeout = timings.watch_client_timeout
    settings.watching.connect_timeout = timings.connect_timeout
    settings.networking.connect_timeout = timings.connect_timeout
    settings.networking.request_timeout = timings.request_timeout
    settings.networking.error_backoffs = list(timings.error_backoffs)
    settings.queueing.idle_timeout = timings.worker_idle
    settings.queueing.exit_timeout = 2.0
    settings.queueing.error_delays = list(timings.error_backoffs)
    settings.peering.clusterwide = True
    settings.peering.standalone = config.standalone
    settings.peering.mandatory = not config.standalone
    if config.peering:
        settings.peering.name = config.peering
    settings.peering.priority = config.priority
    return settings


def connection_info(configuration: kubernetes.client.Configuration) -> kopf.ConnectionInfo:
    if configuration.refresh_api_key_hook is not None:
        configuration.refresh_api_key_hook(configuration)  # in-cluster tokens rotate
    auth = configuration.api_key.get("authorization") or configuration.api_key.get("BearerToken")
    scheme, token = None, None
    if auth:
        scheme, _, token = auth.partition(" ") if " " in auth else ("Bearer", "", auth)
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme,
        token=token,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


class WaitingForNodesFilter(logging.Filter):
    """The deletion handler "fails temporarily" every `finalizer_poll` seconds while nodes have
    not detached: that is waiting, not an error. Log it at INFO and do not post it as an Event
    (kopf would post one Event per retry); the FinalizerTimeout Warning Event says it once."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("Handler 'detach' failed temporarily"):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.k8s_skip = True  # kopf's K8sPoster skips such records
        return True


def install_log_filter() -> None:
    objects = logging.getLogger("kopf.objects")
    if not any(isinstance(f, WaitingForNodesFilter) for f in objects.filters):
        objects.addFilter(WaitingForNodesFilter())


def _nodes(index: kopf.Index[str, NodeInfo]) -> dict[str, NodeInfo]:
    return {name: next(iter(store)) for name, store in index.items()}


Entry = tuple[str, dict[str, Any]]  # (node name, that node's entry for one policy)


def _entries(index: kopf.Index[tuple[str, str], Entry] | None,
             body: kopf.Body) -> dict[str, dict[str, Any]]:
    if index is None:
        return {}
    key = (body.metadata.namespace or "", body.metadata.name or "")
    return dict(index.get(key, ()))


def normal_events(body: Any, verdict: Verdict, desired: DesiredStatus
                  ) -> list[tuple[str, str]]:
    """(reason, message) of the Normal Events this reconcile is the occasion of, judged against
    the stored status, so an operator restart does not repeat them: the generation accepted,
    then attached on every node that should carry it, then (deleting) detached everywhere."""
    generation = verdict.generation
    ready = next(c for c in desired.conditions if c.type == contract.READY)
    stored = contract.find_condition(body, contract.READY) or {}
    events: list[tuple[str, str]] = []
    if body.get("metadata", {}).get("deletionTimestamp"):
        if not desired.holding:
            events.append((contract.EVENT_DETACHED, "detached from every node; releasing "
                           f"finalizer {contract.FINALIZER}"))
        return events
    if verdict.accepted and not contract.is_accepted(body):
        events.append((contract.ACCEPTED, f"generation {generation} is valid; the agents of "
                       "matching nodes attach it"))
    if (ready.status and ready.reason == contract.ALL_NODES_READY
            and not (stored.get("status") == "True" and stored.get("reason") == ready.reason
                     and stored.get("observedGeneration") == generation)):
        summary = desired.summary
        events.append((contract.EVENT_ATTACHED,
                       f"attached on {summary.get('readyNodes', 0)} node(s), "
                       f"{summary.get('attachedRoutes', 0)} route(s), generation {generation}"))
    return events


class Touched:
    """Which policies' entries changed since their status was last aggregated: the node-state
    index marks them, the aggregate timer takes them (kopf runs both in different threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: set[tuple[str, str]] = set()
        self._seen: dict[str, dict[tuple[str, str], Any]] = {}

    def node_state(self, node: str, entries: dict[tuple[str, str], dict[str, Any]]) -> None:
        comparable = {k: {f: v for f, v in e.items() if f != "lastUpdateTime"}
                      for k, e in entries.items()}
        with self._lock:
            before = self._seen.get(node, {})
            self._keys |= {k for k in before.keys() | comparable.keys()
                           if before.get(k) != comparable.get(k)}
            self._seen[node] = comparable

    def take(self, key: tuple[str, str]) -> bool:
        with self._lock:
            if key not in self._keys:
                return False
            self._keys.discard(key)
            return True


def build_registry(
    config: OperatorConfig, configuration: kubernetes.client.Configuration,
    metrics: OperatorMetrics | None = None,
) -> kopf.OperatorRegistry:
    install_log_filter()
    metrics = metrics or OperatorMetrics()
    registry = kopf.OperatorRegistry()
    # By (uid, generation, labels of its namespace when they matter): a spec is judged once.
    verdicts: dict[tuple[str, int, str], Verdict] = {}
    custom = config.agent.custom_programs

    def verdict_for(body: kopf.Body, namespaces: kopf.Index[str, dict[str, str]] | None
                    ) -> Verdict:
        labels: dict[str, str] | None = None
        if custom.enabled and namespaces is not None:
            labels = next(iter(namespaces.get(body.metadata.namespace or "", [])), None)
        key = (body.metadata.uid or "", int(body.metadata.get("generation") or 0),
               repr(sorted((labels or {}).items())) if custom.enabled else "")
        if key not in verdicts:
            if len(verdicts) > 10000:
                verdicts.clear()
            verdicts[key] = judge(body, admin_namespace=config.admin_namespace,
                                  custom_programs=custom, namespace_labels=labels)
        return verdicts[key]

    announced: set[tuple[str, str, int]] = set()
    announcing = threading.Lock()  # sync handlers run in kopf's thread pool

    def first_time(occasion: tuple[str, str, int]) -> bool:
        with announcing:
            if occasion in announced:
                return False
            if len(announced) > 10000:
                announced.clear()
            announced.add(occasion)
            return True

    touched = Touched()

    def reconcile(body: kopf.Body, patch: kopf.Patch, nodes: kopf.Index[str, NodeInfo],
                  logger: Any, namespaces: Any = None,
                  nodestates: Any = None) -> DesiredStatus | None:
        if contract.FINALIZER not in body.metadata.get("finalizers", []) and not body.meta.get(
                "deletionTimestamp"):
            # kopf adds the finalizer first (the event it causes brings us back here). Writing
            # Accepted before it exists would let agents attach to a policy whose deletion
            # would then not wait for them to detach.
            return None
        metrics.reconciles.inc()
        with metrics.reconcile_errors.count_exceptions():
            return _reconcile(body, patch, nodes, logger, namespaces, nodestates)

    def _reconcile(body: kopf.Body, patch: kopf.Patch, nodes: kopf.Index[str, NodeInfo],
                   logger: Any, namespaces: Any, nodestates: Any) -> DesiredStatus | None:
        now = datetime.datetime.now(tz=datetime.UTC)
        verdict = verdict_for(body, namespaces)
        desired = desired_status(body, verdict, _nodes(nodes), config.agent,
                                 entries=_entries(nodestates, body), now=now,
                                 finalizer_timeout=config.finalizer_timeout)
        changes = status_patch(body, desired, now)
        if changes:
            metrics.status_writes.inc()
            for key, value in changes.items():
                patch.status[key] = value
        # Events once per occasion: the event, timer and deletion handlers may all see the same
        # transition before the status patch that records it comes back.
        ready = next(c for c in desired.conditions if c.type == contract.READY)
        uid = body.metadata.uid or ""
        key = (body.metadata.namespace or "", body.metadata.name or "", uid)
        if body.meta.get("deletionTimestamp") and not desired.holding:
            metrics.forget(key)
        else:
            metrics.policy(key, ready.status, ready.reason)
        if ready.reason == contract.FINALIZER_TIMEOUT and first_time(("timeout", uid, 0)):
            kopf.warn(body, reason=contract.FINALIZER_TIMEOUT, message=ready.message)
            metrics.events.labels("Warning", contract.FINALIZER_TIMEOUT).inc()
        if (not verdict.accepted and not contract.is_rejected(body)
                and not body.meta.get("deletionTimestamp")
                and first_time(("invalid", uid, verdict.generation))):
            kopf.warn(body, reason=contract.INVALID_SPEC, message=verdict.message)
            metrics.events.labels("Warning", contract.INVALID_SPEC).inc()
            logger.warning("rejected generation %s: %s", verdict.generation, verdict.message)
        for reason, message in normal_events(body, verdict, desired):
            if first_time((reason, uid, verdict.generation)):
                kopf.event(body, type="Normal", reason=reason, message=message)
                metrics.events.labels("Normal", reason).inc()
        return desired

    @kopf.on.login(id="login", registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info(configuration)

    @kopf.index("v1", "nodes", id="nodes", registry=registry)
    def nodes(name: str, body: kopf.Body, **_: Any) -> dict[str, NodeInfo]:
        return {name: NodeInfo.from_node(body)}

    @kopf.index(*NODE_STATES, id="nodestates", registry=registry)
    def nodestates(name: str, status: Any, **_: Any) -> dict[tuple[str, str], Entry]:
        entries = {policy_key(e): dict(e) for e in (status or {}).get("policies") or ()
                   if isinstance(e, dict)}
        touched.node_state(name, entries)
        return {key: (name, entry) for key, entry in entries.items()}

    if custom.enabled:
        # Which namespaces the admin labelled for custom programs (only when they are on:
        # otherwise the operator needs no access to Namespaces at all).
        @kopf.index("v1", "namespaces", id="namespaces", registry=registry)
        def namespaces(name: str, labels: Any, **_: Any) -> dict[str, dict[str, str]]:
            return {name: dict(labels or {})}

    # LwtRoutePolicy and ClusterLwtRoutePolicy get the same handlers: a cluster policy's key
    # is ("", name), as its node-state entries are written.
    for resource in (POLICIES, CLUSTER_POLICIES):
        @kopf.on.event(*resource, id="status", registry=registry)
        def policy_changed(type: str | None, body: kopf.Body, patch: kopf.Patch,
                           nodes: kopf.Index[str, NodeInfo], logger: Any, **kw: Any) -> None:
            if type == "DELETED":
                return
            reconcile(body, patch, nodes, logger, kw.get("namespaces"), kw.get("nodestates"))

        @kopf.timer(*resource, id="aggregate", interval=config.timings.aggregate,
                    registry=registry)
        def policy_aggregate(body: kopf.Body, patch: kopf.Patch, nodes: kopf.Index[str, NodeInfo],
                             logger: Any, **kw: Any) -> None:
            # Only when an entry of this policy changed since the last pass: a rollout on 5,000
            # nodes is a few status writes per policy, not 5,000.
            if touched.take((body.metadata.namespace or "", body.metadata.name or "")):
                reconcile(body, patch, nodes, logger, kw.get("namespaces"), kw.get("nodestates"))

        @kopf.timer(*resource, id="resync", interval=config.timings.resync, registry=registry)
        def policy_resync(body: kopf.Body, patch: kopf.Patch, nodes: kopf.Index[str, NodeInfo],
                          logger: Any, **kw: Any) -> None:
            # Level-triggered: nodes that appear, disappear or change labels affect every policy
            # (and namespace labels, when custom programs are on).
            reconcile(body, patch, nodes, logger, kw.get("namespaces"), kw.get("nodestates"))

        @kopf.on.delete(*resource, id="detach", registry=registry)
        def policy_deleted(body: kopf.Body, patch: kopf.Patch, nodes: kopf.Index[str, NodeInfo],
                           logger: Any, **kw: Any) -> None:
            desired = reconcile(body, patch, nodes, logger, kw.get("namespaces"),
                                kw.get("nodestates"))
            if desired is not None and desired.holding:
                raise kopf.TemporaryError(
                    f"waiting for nodes {', '.join(sorted(desired.holding))} to report detached",
                    delay=config.timings.finalizer_poll)

    return registry

