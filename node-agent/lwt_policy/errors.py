"""Typed errors of lwt_policy. Every problem names the field it is about.

A `Problem` is (field path, message[, rule]); the operator turns a list of them into a
`Ready=False` condition and an Event, the agent into its node's `lastError`.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an object.

    path: dotted field path from the object root, e.g. `spec.hooks.xmit.headroom`, with list
      indexes in brackets (`spec.podSelector.matchExpressions[0].values`).
    rule: what caught it: a CEL rule name (`lwt_policy.schema.CelRule.name`), `schema:<keyword>`
      for an openAPIV3Schema keyword, or a semantic check name (e.g. `builtin-exists`).
    """

    path: str
    message: str
    rule: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def join_path(base: str, *parts: str | int) -> str:
    """`join_path("spec", "hooks", "in")` -> "spec.hooks.in"; ints become `[i]`."""
    out = base
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = f"{out}.{part}" if out else part
    return out


class PolicyError(Exception):
    """Base of every lwt_policy error."""


class PolicyValidationError(PolicyError):
    """An LwtRoutePolicy is invalid; `.problems` lists every problem found."""

    def __init__(self, where: str, problems: Sequence[Problem]) -> None:
        self.where = where
        self.problems = tuple(problems)
        lines = "; ".join(str(p) for p in self.problems)
        super().__init__(f"{where} is invalid: {lines}")


class ProgramSourceError(PolicyError):
    """A configMap program could not be resolved; `.field` is the field to fix."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")

    @property
    def problem(self) -> Problem:
        return Problem(self.field, self.message, "configmap-program")


class ManifestError(PolicyError):
    """A Kubernetes manifest file could not be read; names the file and the document."""

    def __init__(self, path: str, message: str, document: int | None = None,
                 item: int | None = None) -> None:
        self.path = path
        self.document = document
        self.item = item
        self.message = message
        where = path
        if document is not None:
            where += f", document {document}"
        if item is not None:
            where += f", items[{item}]"
        super().__init__(f"{where}: {message}")


def problems_text(problems: Iterable[Problem]) -> str:
    return "; ".join(str(p) for p in problems)
