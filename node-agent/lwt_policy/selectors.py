"""Kubernetes label selectors: syntax checks (Kubernetes' own rules) and matching.

The CRD schema checks the shape (operators, value lists); this module checks what the schema
cannot express cheaply: label keys are qualified names (optional DNS-subdomain prefix and `/`,
then a name of at most 63 characters), values are at most 63 characters of `[-A-Za-z0-9_.]`
starting and ending alphanumeric (or empty).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lwt_policy.errors import Problem, join_path

_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
MAX_NAME = 63
MAX_PREFIX = 253
MAX_VALUE = 63
OPERATORS_WITH_VALUES = frozenset({"In", "NotIn"})
OPERATORS_WITHOUT_VALUES = frozenset({"Exists", "DoesNotExist"})


def label_key_error(key: str) -> str | None:
    """Why `key` is not a valid label key, or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and not prefix:
        return f"label key {key!r}: the prefix before '/' must not be empty"
    if prefix:
        if len(prefix) > MAX_PREFIX:
            return f"label key {key!r}: the prefix must be at most {MAX_PREFIX} characters"
        if not _DNS_SUBDOMAIN_RE.match(prefix):
            return (f"label key {key!r}: the prefix must be a DNS subdomain (lowercase "
                    "alphanumerics, '-' and '.', starting and ending alphanumeric)")
    if not name:
        return f"label key {key!r}: the name part must not be empty"
    if len(name) > MAX_NAME:
        return f"label key {key!r}: the name part must be at most {MAX_NAME} characters"
    if not _NAME_RE.match(name):
        return (f"label key {key!r}: the name part must consist of alphanumerics, '-', '_' or "
                "'.', and start and end with an alphanumeric")
    return None


def label_value_error(value: str) -> str | None:
    """Why `value` is not a valid label value, or None."""
    if not isinstance(value, str):
        return f"label value {value!r} must be a string"
    if value == "":
        return None
    if len(value) > MAX_VALUE:
        return f"label value {value!r} must be at most {MAX_VALUE} characters"
    if not _NAME_RE.match(value):
        return (f"label value {value!r} must consist of alphanumerics, '-', '_' or '.', and "
                "start and end with an alphanumeric")
    return None


def selector_problems(selector: Mapping[str, Any], path: str) -> list[Problem]:
    """Every syntax problem of a metav1.LabelSelector dict, with field paths under `path`."""
    problems: list[Problem] = []
    for key, value in (selector.get("matchLabels") or {}).items():
        where = join_path(path, "matchLabels", key)
        if (err := label_key_error(key)) is not None:
            problems.append(Problem(where, err, "label-selector-syntax"))
        if (err := label_value_error(value)) is not None:
            problems.append(Problem(where, err, "label-selector-syntax"))
    for index, req in enumerate(selector.get("matchExpressions") or []):
        where = join_path(path, "matchExpressions", index)
        key, operator = req.get("key", ""), req.get("operator")
        values = req.get("values") or []
        if (err := label_key_error(key)) is not None:
            problems.append(Problem(join_path(where, "key"), err, "label-selector-syntax"))
        if operator in OPERATORS_WITH_VALUES and not values:
            problems.append(Problem(join_path(where, "values"),
                                    f"operator {operator} needs at least one value",
                                    "label-selector-syntax"))
        elif operator in OPERATORS_WITHOUT_VALUES and values:
            problems.append(Problem(join_path(where, "values"),
                                    f"operator {operator} takes no values",
                                    "label-selector-syntax"))
        elif operator not in OPERATORS_WITH_VALUES | OPERATORS_WITHOUT_VALUES:
            problems.append(Problem(join_path(where, "operator"),
                                    f"unknown operator {operator!r}: use In, NotIn, Exists or "
                                    "DoesNotExist", "label-selector-syntax"))
        for vindex, value in enumerate(values):
            if (err := label_value_error(value)) is not None:
                problems.append(Problem(join_path(where, "values", vindex), err,
                                        "label-selector-syntax"))
    return problems


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "In":
            return present and labels[self.key] in self.values
        if self.operator == "NotIn":
            return not present or labels[self.key] not in self.values
        if self.operator == "Exists":
            return present
        if self.operator == "DoesNotExist":
            return not present
        raise ValueError(f"unknown label selector operator {self.operator!r}")


@dataclass(frozen=True)
class LabelSelector:
    """A parsed, valid label selector. The empty selector matches everything."""

    requirements: tuple[Requirement, ...] = ()

    @classmethod
    def from_dict(cls, selector: Mapping[str, Any] | None) -> LabelSelector:
        """Parse a metav1.LabelSelector dict already checked by `selector_problems`."""
        if not selector:
            return cls()
        reqs = [Requirement(k, "In", frozenset({v}))
                for k, v in sorted((selector.get("matchLabels") or {}).items())]
        for expr in selector.get("matchExpressions") or []:
            reqs.append(Requirement(expr["key"], expr["operator"],
                                    frozenset(expr.get("values") or ())))
        return cls(tuple(reqs))

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(req.matches(labels) for req in self.requirements)

    @property
    def is_empty(self) -> bool:
        return not self.requirements
