"""Cluster mode: the API feeds the same reconciler as standalone mode.

Watches (list + watch, relist on 410 and after failures):
- LwtRoutePolicies in all namespaces and ClusterLwtRoutePolicies, cached as slim views
  (`slim.py`), 10 per list page (a cluster whose API does not serve the cluster kind yet has
  none: its CRD comes with `kubectl apply -f crds/`, not with `helm upgrade`);
- Namespaces, name and labels only (cluster policies' namespaceSelector);
- the Pods of this node (fieldSelector spec.nodeName=<node>);
- Nodes (this node's labels for nodeSelector, pod CIDRs for podSubnets);
- only when the admin allows programs from ConfigMaps ($LWT_CUSTOM_PROGRAMS,
  `programs_gate.py`): the Namespaces matching the admin's selector, and one watch per
  ConfigMap an allowed policy names (fieldSelector metadata.name=<name>), never all of them.

Every change (and every resync period) triggers a reconcile. The agent writes nothing into
policies: its entry for every policy goes into one object, the LwtNodeState named after its
node (created on first need with an ownerReference to its Node, so the garbage collector
removes it with the Node), as one JSON merge patch to the status subresource per pass that
changed something (timestamps aside); a failed write is retried at the next pass. The API
server lets an agent write only its own node's object (the chart's ValidatingAdmissionPolicy
checks the token's node claim). A Warning Event (reason AttachFailed) is posted when a
policy's lastError on this node changes to a new error.

While the API is unreachable the caches keep their last contents: nothing is detached or
changed because of an outage. When the watches come back they relist (seeing everything
missed) and the next pass converges.
"""
from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lwt_kube import ApiError, CredentialsError, Kube, api_path, load_configuration
from lwt_policy import cluster_schema, contract, schema
from lwt_policy.custom_programs import CustomProgramRule
from lwt_policy.model import PolicyRef
from lwt_policy.status import (
    NodeError,
    node_state_entry,
    node_state_object,
    node_state_status,
    node_status,
)
from lwt_policy.targets import slim_node, slim_pod

from .admission import PolicyBook, PolicyView, ref_of
from .errors import StartupError
from .kube import Informer, wait_all
from .programs_gate import CustomProgramGate, ReferencedConfigMaps
from .reconciler import Inputs, Report
from .runtime import Agent
from .slim import slim_policy

log = logging.getLogger(__name__)

POLICIES = api_path(f"{schema.API_VERSION}/lwtroutepolicies")
CLUSTER_POLICIES = api_path(f"{schema.API_VERSION}/{cluster_schema.PLURAL}")
NAMESPACES = api_path("v1/namespaces")
PODS = api_path("v1/pods")
NODES = api_path("v1/nodes")
CONFIGMAPS = api_path("v1/configmaps")
NODE_STATES = f"{schema.API_VERSION}/{schema.NODE_STATE_PLURAL}"  # api_path's resource
POLICY_PAGE = 10
EVENT_NAMESPACE_OF_CLUSTER_OBJECTS = "default"


def _slim_namespace(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    return {"metadata": {k: meta[k] for k in ("name", "labels") if k in meta}}


def _as_kind(kind: str, obj: dict[str, Any], node: str) -> dict[str, Any]:
    """The slim policy, its kind set from the resource it was listed from (list items may
    omit it, and the kind decides whether a policy is namespaced)."""
    return {**slim_policy(obj, node=node), "kind": kind}


def _comparable(status: Mapping[str, Any] | None) -> Any:
    if status is None:
        return None
    return [{k: v for k, v in e.items() if k != "lastUpdateTime"}
            for e in status.get("policies") or ()]


class ClusterAgent:
    def __init__(self, agent: Agent, kubeconfig: Path | None, stop: threading.Event,
                 resync_seconds: float = 10.0, sync_timeout: float = 60.0) -> None:
        self.agent = agent
        self.node = agent.config.node_name
        self.stop = stop
        self.resync_seconds = resync_seconds
        self.sync_timeout = sync_timeout
        try:
            self.kube = Kube(load_configuration(kubeconfig))
        except CredentialsError as exc:
            raise StartupError(str(exc)) from exc
        self.dirty = threading.Event()
        self.book = PolicyBook(agent.config.admin_namespace)
        # Policies are paged small: a page is what one list holds in memory at once, and a
        # policy stored before the CRD bounded config may be megabytes.
        self.policies = Informer(self.kube, POLICIES, self.dirty.set, name="policies",
                                 page_size=POLICY_PAGE, on_drop=self._dropped,
                                 transform=functools.partial(_as_kind, schema.KIND,
                                                             node=self.node))
        self.cluster_policies = Informer(
            self.kube, CLUSTER_POLICIES, self.dirty.set, name="cluster policies",
            page_size=POLICY_PAGE, on_drop=self._dropped, optional=True,
            transform=functools.partial(_as_kind, cluster_schema.KIND, node=self.node))
        self.namespaces = Informer(self.kube, NAMESPACES, self.dirty.set, name="namespaces",
                                   transform=_slim_namespace, on_drop=self._dropped,
                                   check_depth=False)
        self.pods = Informer(self.kube, PODS, self.dirty.set,
                             field_selector=f"spec.nodeName={self.node}", name="pods",
                             transform=slim_pod, on_drop=self._dropped, check_depth=False)
        self.nodes = Informer(self.kube, NODES, self.dirty.set, name="nodes",
                              transform=slim_node, on_drop=self._dropped,
                              check_depth=False)
        # Programs from ConfigMaps: only where the admin allows them (checked here too, not
        # only by the operator), and only the ConfigMaps allowed policies reference.
        self.gate = CustomProgramGate(CustomProgramRule.from_env(), self.kube, self.dirty.set,
                                      self._dropped)
        self.configmaps = ReferencedConfigMaps(self.kube, self.dirty.set, self._dropped)
        self._errors_posted: dict[PolicyRef, str] = {}
        self._written: dict[str, Any] | None = None  # the node state's status as last written
        self._state_exists = False

    # --- loop ----------------------------------------------------------------------------

    def run(self) -> int:
        informers = [self.policies, self.cluster_policies, self.namespaces, self.pods,
                     self.nodes, *self.gate.informers]
        for informer in informers:
            informer.start()
        self.agent.health.reason = "waiting for the API (policies, pods, nodes)"
        if not wait_all(informers, self.stop, self.sync_timeout):
            if self.stop.is_set():
                return 0
            problems = "; ".join(f"{i.name}: {i.last_error}" for i in informers
                                 if not i.synced.is_set())
            log.error("the API did not answer in %ss: %s (still trying)", self.sync_timeout,
                      problems)
            wait_all(informers, self.stop, float("inf"))
        try:
            while not self.stop.is_set():
                self.dirty.clear()
                self._pass()
                self.agent.health.ready = True
                self.agent.health.reason = ""
                self._wait_for_work()
        finally:
            for informer in informers:
                informer.stop()
            self.configmaps.stop()
            self.kube.close()
        return 0

    def _wait_for_work(self) -> None:
        """Until something changed, the resync period passed, or we are told to stop."""
        waited = 0.0
        while not self.stop.is_set() and waited < self.resync_seconds:
            if self.dirty.wait(0.2):
                self.stop.wait(0.05)  # let a burst of events settle into one pass
                return
            waited += 0.2
            self.agent.health.beat()

    def _pass(self) -> None:
        policies = self.policies.snapshot() + self.cluster_policies.snapshot()
        views = self.gate.apply(self.book.cluster(policies))
        views += [PolicyView(PolicyRef(ns or "default", name), None, 0,
                             NodeError(f"refused by this agent: {reason}"))
                  for (ns, name), reason in sorted(self.policies.rejections().items())]
        views += [PolicyView(PolicyRef("", name), None, 0,
                             NodeError(f"refused by this agent: {reason}"))
                  for (_, name), reason in sorted(self.cluster_policies.rejections().items())]
        namespaces = {(obj.get("metadata") or {}).get("name", ""):
                      (obj.get("metadata") or {}).get("labels") or {}
                      for obj in self.namespaces.snapshot()}
        self.configmaps.follow(views)
        if not self.configmaps.wait_synced(5):
            log.warning("ConfigMaps not listed yet: configMap programs wait")
        report = self.agent.run_pass(Inputs(
            views, self.pods.snapshot(), self.nodes.snapshot(),
            self.configmaps.snapshot(), namespaces))
        self._write_status(report, {ref_of(p): p for p in policies})

    def _dropped(self, reason: str) -> None:
        self.agent.metrics.errors.labels("object").inc()

    # --- status --------------------------------------------------------------------------

    def _write_status(self, report: Report, objects: Mapping[PolicyRef, Any]) -> None:
        entries = []
        for ref, result in report.results.items():
            if _pending(report.views[ref]):
                continue  # not judged by the operator yet: nothing to say for this node
            entries.append(node_state_entry(ref, node_status(result)))
        try:
            self._ensure_state()
            previous = (self._written or {}).get("policies") or ()
            status = node_state_status(entries, previous)
            if self._written is not None and _comparable(status) == _comparable(self._written):
                return
            self.kube.merge_patch(api_path(NODE_STATES, None, self.node, "status"),
                                  {"status": status})
        except ApiError as exc:
            if exc.status == 404:
                self._state_exists = False  # deleted meanwhile: created again next pass
            log.warning("cannot write this node's LwtNodeState %s: %s (retrying)", self.node,
                        exc)
            self.agent.metrics.errors.labels("api").inc()
            return
        self._written = status
        for entry in status["policies"]:
            ref = PolicyRef(entry["namespace"], entry["name"])
            view = report.views.get(ref)
            if view is not None and view.error is None:  # the operator reports its refusals
                self._post_event(ref, objects.get(ref) or {}, entry)

    def _ensure_state(self) -> None:
        """Find this node's LwtNodeState (what it holds is what the next write compares
        with), or create it, owned by the Node so the garbage collector removes it with it."""
        if self._state_exists:
            return
        path = api_path(NODE_STATES, None, self.node)
        try:
            self._written = self.kube.get(path).get("status") or {}
            self._state_exists = True
            return
        except ApiError as exc:
            if exc.status != 404:
                raise
        uid = None
        try:
            uid = (self.kube.get(api_path("v1/nodes", None, self.node)).get("metadata")
                   or {}).get("uid")
        except ApiError as exc:
            log.warning("cannot read Node %s (%s): its LwtNodeState gets no owner and stays "
                        "after the Node is deleted", self.node, exc)
        try:
            self.kube.create(api_path(NODE_STATES), node_state_object(self.node, uid))
        except ApiError as exc:
            if exc.status != 409:  # created meanwhile
                raise
        self._written = None
        self._state_exists = True

    def _post_event(self, ref: PolicyRef, obj: Mapping[str, Any],
                    entry: Mapping[str, Any]) -> None:
        error = (entry.get("lastError") or {}).get("message")
        if not error:
            self._errors_posted.pop(ref, None)
            return
        if self._errors_posted.get(ref) == error:
            return
        meta = obj.get("metadata") or {}
        now = contract.rfc3339(dt.datetime.now(dt.UTC))
        # Events of a cluster-scoped object live in `default`, as Kubernetes puts them.
        namespace = EVENT_NAMESPACE_OF_CLUSTER_OBJECTS if ref.cluster else ref.namespace
        involved = {"apiVersion": schema.API_VERSION,
                    "kind": cluster_schema.KIND if ref.cluster else schema.KIND,
                    "name": ref.name, "uid": meta.get("uid", ""),
                    "resourceVersion": meta.get("resourceVersion", "")}
        if not ref.cluster:
            involved["namespace"] = ref.namespace
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{ref.name}.{uuid.uuid4().hex[:12]}",
                         "namespace": namespace},
            "involvedObject": involved,
            "reason": "AttachFailed", "type": "Warning",
            "message": contract.bounded(f"node {self.node}: {error}"),
            "source": {"component": "lwt-agent", "host": self.node},
            "reportingComponent": "lwt.dev/agent", "reportingInstance": self.node,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        try:
            self.kube.create(api_path("v1/events", namespace), event)
            self._errors_posted[ref] = error
        except ApiError as exc:
            log.warning("cannot post an Event for %s: %s", ref, exc)


def _pending(view: PolicyView) -> bool:
    return view.policy is None and view.error is None and not view.deleting
