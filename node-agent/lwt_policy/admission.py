"""The verdict on a policy as a cluster gives it at `kubectl apply`: one function for the
operator (its Accepted condition), the offline validator (`lwt-agent validate`) and tests.

A policy is refused by one of two layers; `refused_by(rule)` says which:

- the API server itself: the CRD's openAPIV3Schema (including the built-in enum and each
  built-in's config fields, generated from the catalogue), its CEL rules (which built-in may
  run on which hook, which config fields each built-in takes) and the API identity;
- the operator: what a CRD cannot say (label syntax, config values such as a CIDR's prefix
  length, podSubnets outside the admin namespace, programs from ConfigMaps where the admin
  did not allow them). It refuses such a generation with Accepted=False and a Warning Event.
"""
from __future__ import annotations

import enum
import functools
from collections.abc import Mapping
from typing import Any

from lwt_policy import schema
from lwt_policy.cluster_schema import CLUSTER_CEL_RULES
from lwt_policy.custom_programs import CustomProgramRule, custom_program_problems
from lwt_policy.errors import Problem
from lwt_policy.model import DEFAULT_ADMIN_NAMESPACE, validate_policy


class Layer(enum.StrEnum):
    API_SERVER = "api-server"
    OPERATOR = "operator"


@functools.cache
def _server_rules() -> frozenset[str]:
    return frozenset(rule.name for rule in (
        *schema.ALL_CEL_RULES, *schema.builtin_config_rules(), *schema.builtin_hook_rules(),
        *CLUSTER_CEL_RULES))


def refused_by(rule: str) -> Layer:
    """Which layer of a cluster refuses a problem caught by `rule` (a `Problem.rule`)."""
    if rule.startswith("schema:") or rule == "identity" or rule in _server_rules():
        return Layer.API_SERVER
    return Layer.OPERATOR


def policy_problems(obj: Mapping[str, Any], *,
                    admin_namespace: str = DEFAULT_ADMIN_NAMESPACE,
                    custom_programs: CustomProgramRule | None = None,
                    namespace_labels: Mapping[str, str] | None = None) -> list[Problem]:
    """Every problem of a policy's identity and spec ([] when a cluster would accept it).
    `status` is output, never judged. `custom_programs`: the admin's rule (default: off, as
    the chart installs it); `namespace_labels`: the labels of the policy's namespace."""
    subject = {k: v for k, v in obj.items() if k != "status"}
    problems = validate_policy(subject, admin_namespace=admin_namespace)
    problems += custom_program_problems(subject, custom_programs or CustomProgramRule(),
                                        namespace_labels)
    return problems
