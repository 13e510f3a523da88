"""Cluster mode: who may run programs from ConfigMaps, and watching only the ConfigMaps used.

- `CustomProgramGate`: the agent's own enforcement of `lwt_policy.custom_programs` (the
  operator enforces it too; an agent never loads a tenant's bytecode on the operator's word
  alone). Off unless the DaemonSet sets $LWT_CUSTOM_PROGRAMS; then the agent watches only the
  Namespaces that match the admin's selector (a label selector on the watch: the cache holds
  the allowed namespaces' names and labels, nothing else).
- `ReferencedConfigMaps`: one watch per ConfigMap that an allowed policy references
  (`fieldSelector=metadata.name=<name>` in its namespace), never every ConfigMap of the
  cluster, and each cached as a slim view (`slim_configmap`). What a tenant can make an agent
  hold is bounded by what the admin allowed, not by what the tenant creates.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from lwt_policy import limits
from lwt_policy.custom_programs import CustomProgramRule
from lwt_policy.model import ConfigMapSource
from lwt_policy.status import NodeError

from .admission import PolicyView
from .kube import Informer


def slim_namespace(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    return {"metadata": {k: meta[k] for k in ("name", "labels") if k in meta}}


def slim_configmap(obj: dict[str, Any]) -> dict[str, Any]:
    """Name and binaryData only (data keeps its keys, for the "it is under data" hint). An
    object larger than `limits.MAX_PROGRAM_BYTES` is replaced by a short marker that
    `lwt_policy.configmap` refuses with its size, so it is never held or decoded."""
    meta = obj.get("metadata") or {}
    binary: dict[str, str] = {}
    for key, value in (obj.get("binaryData") or {}).items():
        if isinstance(value, str) and limits.program_size_problem(value) is not None:
            binary[key] = limits.too_large_marker(limits.decoded_size(value))
        else:
            binary[key] = value
    return {
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion")
                     if k in meta},
        "binaryData": binary,
        "data": dict.fromkeys(obj.get("data") or {}, ""),
    }


def uses_configmap(view: PolicyView) -> bool:
    return view.policy is not None and any(
        isinstance(h.program, ConfigMapSource) for h in view.policy.spec.hooks.values())


class CustomProgramGate:
    """Refuses, on this agent, policies whose namespace may not run custom programs."""

    def __init__(self, rule: CustomProgramRule, kube: Any, on_change: Callable[[], None],
                 on_drop: Callable[[str], None] | None = None) -> None:
        self.rule = rule
        self.namespaces: Informer | None = None
        if rule.enabled:
            self.namespaces = Informer(kube, "/api/v1/namespaces", on_change,
                                       name="namespaces", transform=slim_namespace,
                                       label_selector=rule.namespace_selector,
                                       on_drop=on_drop)

    @property
    def informers(self) -> list[Informer]:
        return [self.namespaces] if self.namespaces is not None else []

    def allowed_namespaces(self) -> dict[str, dict[str, str]]:
        if self.namespaces is None:
            return {}
        return {name: (obj.get("metadata") or {}).get("labels") or {}
                for (_, name), obj in self.namespaces.snapshot_items()}

    def apply(self, views: Iterable[PolicyView]) -> list[PolicyView]:
        allowed = self.allowed_namespaces()
        out: list[PolicyView] = []
        for view in views:
            # "" is a ClusterLwtRoutePolicy's: the rule judges those without a namespace.
            namespace = view.ref.namespace or None
            labels = allowed.get(namespace) if namespace is not None else None
            if uses_configmap(view) and not self.rule.allowed(namespace, labels):
                view = dataclasses.replace(view, policy=None, error=NodeError(
                    f"refused by this agent: {self.rule.refusal(namespace)}"))
            out.append(view)
        return out


class ReferencedConfigMaps:
    """One informer per referenced ConfigMap; started and stopped as references change."""

    def __init__(self, kube: Any, on_change: Callable[[], None],
                 on_drop: Callable[[str], None] | None = None) -> None:
        self.kube = kube
        self.on_change = on_change
        self.on_drop = on_drop
        self.informers: dict[tuple[str, str], Informer] = {}

    def follow(self, views: Iterable[PolicyView]) -> None:
        wanted = {(h.program.namespace, h.program.name)
                  for v in views if v.policy is not None
                  for h in v.policy.spec.hooks.values() if isinstance(h.program, ConfigMapSource)}
        for key in [k for k in self.informers if k not in wanted]:
            self.informers.pop(key).stop()
        for namespace, name in sorted(wanted - set(self.informers)):
            self.informers[(namespace, name)] = Informer(
                self.kube, f"/api/v1/namespaces/{namespace}/configmaps", self.on_change,
                field_selector=f"metadata.name={name}", name=f"configmap {namespace}/{name}",
                transform=slim_configmap, on_drop=self.on_drop).start()

    def wait_synced(self, timeout: float) -> bool:
        return all(i.synced.wait(timeout) for i in self.informers.values())

    def snapshot(self) -> list[dict[str, Any]]:
        return [obj for informer in self.informers.values() for obj in informer.snapshot()]

    def stop(self) -> None:
        for informer in self.informers.values():
            informer.stop()
        self.informers.clear()


__all__ = ["CustomProgramGate", "ReferencedConfigMaps", "slim_configmap", "slim_namespace",
           "uses_configmap"]
