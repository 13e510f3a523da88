"""Label and field selectors as the Kubernetes API server evaluates them.

kmock 0.8 ignores `labelSelector` and `fieldSelector` on list and watch requests (it returns every
object of the resource). The agent watches the pods of its own node with
`fieldSelector=spec.nodeName=<node>` and the operator selects nodes by labels, so the emulator
must filter like a real server. Parsing follows apimachinery's `labels.Parse` and
`fields.ParseSelector` (the subset clients send):

- labels: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k` (exists), `!k` (absent);
- fields: `path=v`, `path==v`, `path!=v`, comma-separated (AND).

A real server accepts only the field paths a resource declares (pods: spec.nodeName, status.phase,
...; custom resources: metadata.name, metadata.namespace and the CRD's `selectableFields`) and
answers 400 for others; `SUPPORTED_FIELDS` and `field_selector_paths_supported()` reproduce that.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class SelectorError(ValueError):
    """A selector string the API server would reject with 400 Bad Request."""


@dataclass(frozen=True)
class LabelRequirement:
    key: str
    operator: str  # "=", "!=", "in", "notin", "exists", "!"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        match self.operator:
            case "=":
                return present and value in self.values
            case "!=":
                return not present or value not in self.values
            case "in":
                return present and value in self.values
            case "notin":
                return not present or value not in self.values
            case "exists":
                return present
            case "!":
                return not present
        raise AssertionError(f"unknown operator {self.operator!r}")


_LABEL_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_LABEL_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET_RE = re.compile(rf"^\s*({_LABEL_KEY})\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ_RE = re.compile(rf"^\s*({_LABEL_KEY})\s*(==|=|!=)\s*({_LABEL_VALUE})\s*$")
_EXISTS_RE = re.compile(rf"^\s*(!?)\s*({_LABEL_KEY})\s*$")


def _split_top_level(selector: str) -> list[str]:
    """Split on commas that are not inside `in (...)` value lists."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part for part in parts if part.strip()]


def parse_label_selector(selector: str) -> list[LabelRequirement]:
    requirements: list[LabelRequirement] = []
    for term in _split_top_level(selector):
        if m := _SET_RE.match(term):
            values = frozenset(v.strip() for v in m.group(4).split(",") if v.strip())
            requirements.append(LabelRequirement(m.group(1), m.group(3), values))
        elif m := _EQ_RE.match(term):
            operator = "!=" if m.group(3) == "!=" else "="
            requirements.append(LabelRequirement(m.group(1), operator, frozenset([m.group(4)])))
        elif m := _EXISTS_RE.match(term):
            requirements.append(LabelRequirement(m.group(2), "!" if m.group(1) else "exists"))
        else:
            raise SelectorError(f"unable to parse requirement {term.strip()!r} in labelSelector")
    return requirements


@dataclass(frozen=True)
class FieldRequirement:
    path: str
    equal: bool
    value: str

    def matches(self, obj: Mapping[str, Any]) -> bool:
        actual = field_value(obj, self.path)
        return (actual == self.value) == self.equal


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """The string form of a field, as the API server compares it ("" when absent)."""
    current: Any = obj
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return ""
        current = current[part]
    if isinstance(current, bool):
        return "true" if current else "false"
    return "" if current is None else str(current)


def parse_field_selector(selector: str) -> list[FieldRequirement]:
    requirements: list[FieldRequirement] = []
    for term in _split_top_level(selector):
        for operator, equal in (("!=", False), ("==", True), ("=", True)):
            if operator in term:
                path, value = term.split(operator, 1)
                requirements.append(FieldRequirement(path.strip(), equal, value.strip()))
                break
        else:
            raise SelectorError(f"invalid field selector term {term.strip()!r}: use path=value")
    return requirements


# Field paths every resource supports, plus the ones the real API server adds per resource
# (k8s.io/kubernetes pkg/registry/*/strategy.go: ...ToSelectableFields).
COMMON_FIELDS = frozenset({"metadata.name", "metadata.namespace"})
SUPPORTED_FIELDS: dict[str, frozenset[str]] = {
    "pods": frozenset({
        "spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
        "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName",
    }),
    "events": frozenset({
        "involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
        "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
        "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type",
    }),
    "nodes": frozenset({"spec.unschedulable"}),
    "secrets": frozenset({"type"}),
    "namespaces": frozenset({"status.phase"}),
}


def check_field_paths(
    requirements: list[FieldRequirement], plural: str, extra: frozenset[str] = frozenset()
) -> None:
    allowed = COMMON_FIELDS | SUPPORTED_FIELDS.get(plural, frozenset()) | extra
    for requirement in requirements:
        if requirement.path not in allowed:
            raise SelectorError(
                f'field label not supported: "{requirement.path}" (resource {plural}; '
                f"supported: {', '.join(sorted(allowed))})"
            )


def matches(
    obj: Mapping[str, Any],
    labels: list[LabelRequirement],
    fields: list[FieldRequirement],
) -> bool:
    object_labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(r.matches(object_labels) for r in labels) and all(f.matches(obj) for f in fields)
