"""Judging a policy's spec with the same model code the agents use (lwt_policy).

The operator validates what the API server cannot (the schema and CEL rules again, for objects
stored before a CRD upgrade; then built-in exists and allows the hook, config fits the program's
maps, podSubnets only in the admin namespace, programs from ConfigMaps only where the admin
allows them) and turns the verdict into the Accepted condition
the agents wait for (see contract.py).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lwt_policy import contract
from lwt_policy.admission import policy_problems
from lwt_policy.custom_programs import CustomProgramRule
from lwt_policy.errors import Problem


@dataclass(frozen=True)
class Verdict:
    generation: int
    problems: tuple[Problem, ...]

    @property
    def accepted(self) -> bool:
        return not self.problems

    @property
    def message(self) -> str:
        if self.accepted:
            return f"generation {self.generation} is valid"
        text = "; ".join(f"{p.path or '<object>'}: {p.message}" for p in self.problems)
        return contract.bounded(text)

    @property
    def reason(self) -> str:
        return contract.VALID if self.accepted else contract.INVALID_SPEC


def judge(obj: Mapping[str, Any], *, admin_namespace: str,
          custom_programs: CustomProgramRule | None = None,
          namespace_labels: Mapping[str, str] | None = None) -> Verdict:
    """Validate the policy's identity and spec (status is the agents' and operator's output,
    not something to judge), and whether its namespace may run programs from ConfigMaps
    (`custom_programs`, off by default; `namespace_labels`: the labels of its namespace)."""
    generation = int((obj.get("metadata") or {}).get("generation") or 0)
    problems = policy_problems(obj, admin_namespace=admin_namespace,
                               custom_programs=custom_programs,
                               namespace_labels=namespace_labels)
    return Verdict(generation, tuple(problems))
