"""Keeps the agent DaemonSet as the settings describe it: creates it, repairs drift, re-creates
it after a deletion.

Runs in a thread of its own next to kopf: kopf's watches are cluster-wide for policies, while
the DaemonSet lives in one namespace and the operator's RBAC for it is a namespaced Role; a
namespaced watch on that one DaemonSet (field selector on its name) plus a periodic re-check
(the watch's server timeout) covers deletion, drift and missed events alike.

It runs in every replica, also in a peering standby: ensure() is idempotent, so replicas with
the same settings agree, and during an operator rollout (old and new settings side by side)
the replica that started last wins (daemonset.superseded) instead of the two flapping.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from lwt_kube import ApiError, Kube

from lwt_operator import daemonset

log = logging.getLogger(__name__)


class OwnerGone(ApiError):
    """The operator's Deployment named by --owner-deployment does not exist."""

    def __init__(self, namespace: str, name: str) -> None:
        super().__init__(404, "NotFound",
                         f"the owner Deployment {namespace}/{name} does not exist: the agent "
                         f"DaemonSet is left alone (the operator is being uninstalled, or "
                         f"--owner-deployment names the wrong Deployment)")


class DaemonSetKeeper:
    def __init__(self, kube: Kube, desired: Mapping[str, Any], *, resync: float = 30,
                 retry: float = 2, owner_deployment: str | None = None) -> None:
        self.kube = kube
        self.template = desired
        self.desired = desired
        self.owner_deployment = owner_deployment
        self.name = desired["metadata"]["name"]
        self.namespace = desired["metadata"]["namespace"]
        self.resync = resync
        self.retry = retry
        self.collection = f"/apis/apps/v1/namespaces/{self.namespace}/daemonsets"
        self.path = f"{self.collection}/{self.name}"

    def _owner(self) -> dict[str, Any] | None:
        """The owner Deployment's reference, read each time: its uid changes when it is
        re-created. Raises OwnerGone when it does not exist (being uninstalled)."""
        if self.owner_deployment is None:
            return None
        path = f"/apis/apps/v1/namespaces/{self.namespace}/deployments/{self.owner_deployment}"
        try:
            return daemonset.owner_reference(self.kube.get(path))
        except ApiError as exc:
            if exc.status == 404:
                raise OwnerGone(self.namespace, self.owner_deployment) from None
            raise

    def ensure(self) -> str:
        """Bring the DaemonSet to the desired state; says what it did."""
        try:
            self.desired = daemonset.with_owner(self.template, self._owner())
        except OwnerGone as exc:
            # Creating the DaemonSet now would leave agents behind the garbage collector's
            # back for a moment (an owner uid it never saw): do nothing, the operator is going.
            log.warning("%s", exc)
            return "ownerless"
        try:
            actual = self.kube.get(self.path)
        except ApiError as exc:
            if exc.status != 404:
                raise
            self.kube.create(self.collection, dict(self.desired))
            log.info("created DaemonSet %s/%s", self.namespace, self.name)
            return "created"
        if daemonset.superseded(self.desired, actual):
            log.debug("DaemonSet %s/%s was written by a newer operator; leaving it",
                      self.namespace, self.name)
            return "superseded"
        if daemonset.selector_changed(self.desired, actual):
            # spec.selector is immutable: the only way to a new one is delete and re-create.
            self.kube.delete(self.path)
            self.kube.create(self.collection, dict(self.desired))
            log.warning("re-created DaemonSet %s/%s: its pod selector changed",
                        self.namespace, self.name)
            return "recreated"
        drifted = daemonset.daemonset_drift(self.desired, actual)
        if not drifted:
            return "unchanged"
        self.kube.merge_patch(self.path, daemonset.repair_patch(self.desired))
        log.warning("repaired DaemonSet %s/%s; drifted fields: %s", self.namespace, self.name,
                    ", ".join(drifted[:10]))
        return "repaired"

    def run(self, stop: threading.Event) -> None:
        """ensure(), then watch the DaemonSet and ensure() again on every change, until stopped."""
        while not stop.is_set():
            try:
                self.ensure()
                for _event in self.kube.watch(self.collection,
                                              field_selector=f"metadata.name={self.name}",
                                              timeout=max(1, int(self.resync))):
                    if stop.is_set():
                        return
                    self.ensure()
            except ApiError as exc:
                log.warning("agent DaemonSet %s/%s: %s; retrying in %gs",
                            self.namespace, self.name, exc, self.retry)
                stop.wait(self.retry)
