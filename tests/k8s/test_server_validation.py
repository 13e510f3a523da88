"""The real API server and the offline validator (lwt_policy) agree on every invalid policy of
tests/policy/test_validation.py, and on the valid one.

Each case goes to the server as a user sends it: `kubectl apply --server-side` (server-side
dry run, so nothing is stored; validation, CEL with its cost budget, and admission all run).
What the CRD enforces (the structural schema and the CEL rules) must be refused there with
the rule's message; what only the operator and the agents check (catalogue lookups, label
syntax the schema cannot express, the admin namespace) is accepted by the server and must be
one of those rules offline. A case on which the two disagree fails the test.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from lwt_policy import schema
from lwt_policy.model import validate_policy

from tests.k8s.cluster import ControlPlane
from tests.k8s.policy_cases import as_sent, case_namespaces
from tests.policy.conftest import ADMIN_NS, base_policy
from tests.policy.test_validation import CASES, Mutation

# The namespaces the cases use, mapped to ones of this module (the session's other tests
# create and delete `shop` and `lwt-system` on the same server).
NAMESPACES = {"shop": "val-shop", ADMIN_NS: "val-admin"}
# Checked by the API server: the openAPIV3Schema, the CEL rules, the API identity.
CEL_RULES = {r.name: r for r in (*schema.ALL_CEL_RULES, *schema.builtin_config_rules(),
                                  *schema.builtin_hook_rules())}


def server_side(rule: str) -> bool:
    return rule.startswith("schema:") or rule in CEL_RULES or rule == "identity"


@pytest.fixture(scope="module")
def server(control_plane: ControlPlane) -> Iterator[ControlPlane]:
    with case_namespaces(control_plane, NAMESPACES):
        yield control_plane


def _as_sent(obj: dict[str, Any]) -> dict[str, Any]:
    return as_sent(obj, NAMESPACES)


def _apply(cp: ControlPlane, obj: dict[str, Any]) -> tuple[bool, str]:
    proc = cp.kubectl("apply", "--server-side", "--dry-run=server", "-f", "-",
                      input=yaml.safe_dump(obj), check=False)
    return proc.returncode == 0, proc.stderr.strip()


def test_the_valid_policy_is_accepted(server: ControlPlane) -> None:
    ok, message = _apply(server, _as_sent(base_policy()))
    assert ok, message


@pytest.mark.parametrize(("mutate", "rule", "path"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_server_and_offline_validator_agree(server: ControlPlane, mutate: Mutation,
                                            rule: str, path: str) -> None:
    obj = base_policy()
    mutate(obj)
    sent = _as_sent(obj)
    offline = validate_policy(sent, admin_namespace=NAMESPACES[ADMIN_NS])
    assert [p.rule for p in offline] == [rule], offline
    accepted, message = _apply(server, sent)
    verdict = {"offline": rule, "server": "accepted" if accepted else message,
               "sent": json.dumps(sent.get("spec", sent))[:300]}
    assert accepted != server_side(rule), verdict
    if rule in CEL_RULES:
        assert CEL_RULES[rule].message in message, verdict
