"""Who may run their own BPF bytecode (`program.configMap`): an explicit cluster-admin choice.

A custom program runs in the kernel on routes that carry other tenants' traffic, with the
agent's capabilities. So it is off by default, and when the admin turns it on
(chart `agent.configMapPrograms: true`), only policies in namespaces whose labels match the
admin's selector may use it (default `lwt.dev/custom-programs=allowed`; namespace labels
can only be set by whoever may update Namespaces, normally the admin). Built-ins are always
allowed.

The operator refuses such a policy (Accepted=False, reason InvalidSpec, rule
`custom-programs-allowed`) and every agent refuses it again on its own (it never loads the
object, whatever the operator said). Standalone mode is the host admin's own files: no rule.

ClusterLwtRoutePolicies only cluster admins can create; they are judged with
`namespace=None`, and `cluster_policies` says whether they may run custom programs (yes once
the feature is on: creating one is itself the admin's choice).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lwt_policy.cluster_schema import KIND as CLUSTER_KIND
from lwt_policy.errors import Problem
from lwt_policy.selectors import LabelSelector, Requirement, label_key_error, label_value_error

NAMESPACE_LABEL = "lwt.dev/custom-programs"
NAMESPACE_VALUE = "allowed"
DEFAULT_NAMESPACE_SELECTOR = f"{NAMESPACE_LABEL}={NAMESPACE_VALUE}"
# How the operator tells the agents (DaemonSet env): empty = off, else the namespace selector.
ENV = "LWT_CUSTOM_PROGRAMS"
RULE = "custom-programs-allowed"


class CustomProgramSettingError(ValueError):
    """The admin's namespace selector is not a label selector we understand."""


def parse_selector(text: str) -> LabelSelector:
    """`key=value`, `key==value`, `key` (exists), comma-separated (all must hold)."""
    requirements: list[Requirement] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            raise CustomProgramSettingError(
                f"namespace selector {text!r}: empty requirement; write e.g. "
                f"{DEFAULT_NAMESPACE_SELECTOR}")
        key, eq, value = part.partition("=")
        key, value = key.strip(), value.lstrip("=").strip()
        if (err := label_key_error(key)) is not None:
            raise CustomProgramSettingError(f"namespace selector {text!r}: {err}")
        if eq:
            if (err := label_value_error(value)) is not None:
                raise CustomProgramSettingError(f"namespace selector {text!r}: {err}")
            requirements.append(Requirement(key, "In", frozenset({value})))
        else:
            requirements.append(Requirement(key, "Exists", frozenset()))
    return LabelSelector(tuple(requirements))


@dataclass(frozen=True)
class CustomProgramRule:
    """The admin's choice. `enabled=False` (the default): nobody runs custom bytecode."""

    enabled: bool = False
    namespace_selector: str = DEFAULT_NAMESPACE_SELECTOR
    cluster_policies: bool = True  # issue 16's cluster-scoped kind, when enabled

    def __post_init__(self) -> None:
        if self.enabled:
            parse_selector(self.namespace_selector)  # refuse a bad setting at start-up

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CustomProgramRule:
        value = (os.environ if environ is None else environ).get(ENV, "").strip()
        return cls(True, value) if value else cls()

    def env_value(self) -> str:
        return self.namespace_selector if self.enabled else ""

    def allowed(self, namespace: str | None, labels: Mapping[str, str] | None) -> bool:
        if not self.enabled:
            return False
        if namespace is None:
            return self.cluster_policies
        return parse_selector(self.namespace_selector).matches(labels or {})

    def refusal(self, namespace: str | None) -> str:
        if not self.enabled or namespace is None:
            return ("programs from ConfigMaps (your own BPF bytecode) are disabled in this "
                    "cluster: use a builtin, or ask the cluster admin to enable them (chart "
                    "value agent.configMapPrograms)")
        return (f"namespace {namespace!r} may not run programs from ConfigMaps (your own BPF "
                f"bytecode): the cluster admin allows them only in namespaces labelled "
                f"{self.namespace_selector} (kubectl label namespace {namespace} "
                f"{self.namespace_selector.split(',')[0]}, by an admin)")


def custom_hooks(spec: Mapping[str, Any] | None) -> list[str]:
    """The hooks of a policy spec whose program comes from a ConfigMap."""
    hooks = (spec or {}).get("hooks") if isinstance(spec, Mapping) else None
    if not isinstance(hooks, Mapping):
        return []
    return [hook for hook, body in hooks.items()
            if isinstance(body, Mapping) and isinstance(body.get("program"), Mapping)
            and "configMap" in body["program"]]


def custom_program_problems(obj: Mapping[str, Any], rule: CustomProgramRule,
                            namespace_labels: Mapping[str, str] | None) -> list[Problem]:
    """A problem per configMap hook of `obj` the rule does not allow ([] otherwise)."""
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    # A cluster-scoped policy has no namespace: only cluster admins can create one.
    namespace = None if obj.get("kind") == CLUSTER_KIND else str(
        meta.get("namespace") or "default")
    hooks = custom_hooks(obj.get("spec"))
    if not hooks or rule.allowed(namespace, namespace_labels):
        return []
    return [Problem(f"spec.hooks.{hook}.program.configMap", rule.refusal(namespace), RULE)
            for hook in hooks]
