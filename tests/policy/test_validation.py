"""Each invalid policy is rejected by the rule meant for it, and by that rule only."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from lwt_policy import schema
from lwt_policy.errors import PolicyValidationError
from lwt_policy.model import Catalogue, parse_policy, validate_policy
from lwt_policy.validation import apply_defaults, escape_cel_name, evaluate_rule

from tests.policy.conftest import ADMIN_NS, base_policy

Mutation = Callable[[dict[str, Any]], None]
SHA = "a" * 64


def _spec(p: dict[str, Any]) -> dict[str, Any]:
    return p["spec"]


def _set_hook(hook: str, value: dict[str, Any]) -> Mutation:
    def mutate(p: dict[str, Any]) -> None:
        p["spec"]["hooks"] = {hook: value}
    return mutate


def _cm_program(**extra: Any) -> dict[str, Any]:
    return {"configMap": {"name": "prog", "key": "f.o"}, "section": "lwt_out", **extra}


def _in_admin_ns(p: dict[str, Any]) -> None:
    p["metadata"]["namespace"] = ADMIN_NS


CASES: list[tuple[str, Mutation, str, str]] = [
    # --- CEL rules ---------------------------------------------------------------------
    ("no target", lambda p: _spec(p).pop("podSelector"), "exactly-one-target", "spec"),
    ("two targets", lambda p: _spec(p).update(podSubnets=["local"]),
     "exactly-one-target", "spec"),
    ("no hook", lambda p: _spec(p).update(hooks={}), "at-least-one-hook", "spec.hooks"),
    ("headroom on in", _set_hook("in", {"program": {"builtin": "counters"}, "headroom": 14}),
     "headroom-only-on-xmit", "spec.hooks.in.headroom"),
    ("headroom on out", _set_hook("out", {"program": {"builtin": "counters"}, "headroom": 0}),
     "headroom-only-on-xmit", "spec.hooks.out.headroom"),
    ("headroom too big", _set_hook("xmit", {"program": {"builtin": "counters"},
                                            "headroom": 257}),
     "headroom-range", "spec.hooks.xmit.headroom"),
    ("headroom negative", _set_hook("xmit", {"program": {"builtin": "counters"},
                                             "headroom": -1}),
     "headroom-range", "spec.hooks.xmit.headroom"),
    ("two program sources", _set_hook("out", {"program": {"builtin": "counters",
                                                          **_cm_program()}}),
     "exactly-one-program-source", "spec.hooks.out.program"),
    ("no program source", _set_hook("out", {"program": {}}),
     "exactly-one-program-source", "spec.hooks.out.program"),
    ("configMap without section", _set_hook("out", {"program": {
        "configMap": {"name": "prog", "key": "f.o"}}}),
     "configmap-needs-section", "spec.hooks.out.program.section"),
    ("section on a builtin", _set_hook("out", {"program": {"builtin": "counters",
                                                           "section": "x"}}),
     "section-only-with-configmap", "spec.hooks.out.program.section"),
    ("sha256 on a builtin", _set_hook("out", {"program": {"builtin": "counters",
                                                          "sha256": SHA}}),
     "sha256-only-with-configmap", "spec.hooks.out.program.sha256"),
    ("sha256 uppercase", _set_hook("out", {"program": _cm_program(sha256="A" * 64)}),
     "sha256-format", "spec.hooks.out.program.sha256"),
    ("sha256 too short", _set_hook("out", {"program": _cm_program(sha256="ab12")}),
     "sha256-format", "spec.hooks.out.program.sha256"),
    ("config for a configMap program", _set_hook("out", {"program": _cm_program(),
                                                         "config": {"oneIn": 1}}),
     "config-only-for-builtin", "spec.hooks.out.config"),
    ("In without values", lambda p: _spec(p).update(podSelector={"matchExpressions": [
        {"key": "app", "operator": "In"}]}),
     "selector-values-match-operator", "spec.podSelector.matchExpressions[0].values"),
    ("Exists with values", lambda p: _spec(p).update(nodeSelector={"matchExpressions": [
        {"key": "zone", "operator": "Exists", "values": ["a"]}]}),
     "selector-values-match-operator", "spec.nodeSelector.matchExpressions[0].values"),
    # --- openAPIV3Schema -----------------------------------------------------------------
    ("misspelt field", lambda p: _spec(p).update(podSelecter={}),
     "schema:unknown-field", "spec.podSelecter"),
    ("unknown hook", lambda p: _spec(p)["hooks"].update(egress={"program": {
        "builtin": "counters"}}), "schema:unknown-field", "spec.hooks.egress"),
    ("bad failurePolicy", lambda p: _spec(p).update(failurePolicy="Ignore"),
     "schema:enum", "spec.failurePolicy"),
    ("negative priority", lambda p: _spec(p).update(priority=-1),
     "schema:minimum", "spec.priority"),
    ("priority as string", lambda p: _spec(p).update(priority="high"),
     "schema:type", "spec.priority"),
    ("unknown subnet kind", lambda p: (_spec(p).pop("podSelector"), _in_admin_ns(p),
                                       _spec(p).update(podSubnets=["all"])),
     "schema:enum", "spec.podSubnets[0]"),
    ("duplicate subnet kind", lambda p: (_spec(p).pop("podSelector"), _in_admin_ns(p),
                                         _spec(p).update(podSubnets=["local", "local"])),
     "schema:uniqueItems", "spec.podSubnets"),
    ("empty podSubnets", lambda p: (_spec(p).pop("podSelector"), _in_admin_ns(p),
                                    _spec(p).update(podSubnets=[])),
     "schema:minItems", "spec.podSubnets"),
    ("hook without program", _set_hook("out", {"config": {}}),
     "schema:required", "spec.hooks.out.program"),
    ("no spec", lambda p: p.pop("spec"), "schema:required", "spec"),
    ("bad operator", lambda p: _spec(p).update(podSelector={"matchExpressions": [
        {"key": "app", "operator": "Like", "values": ["x"]}]}),
     "schema:enum", "spec.podSelector.matchExpressions[0].operator"),
    ("name too long for route labels", lambda p: p["metadata"].update(name="n" * 64),
     "schema:maxLength", "metadata.name"),
    # --- semantic checks --------------------------------------------------------------------
    ("wrong apiVersion", lambda p: p.update(apiVersion="lwt.dev/v1"), "identity", "apiVersion"),
    ("unknown builtin", _set_hook("out", {"program": {"builtin": "firewall"}}),
     "schema:enum", "spec.hooks.out.program.builtin"),
    ("builtin on a hook it does not support", _set_hook("out", {
        "program": {"builtin": "encap"}, "config": {"remote": "192.0.2.1",
                                                    "source": "192.0.2.2"}}),
     "builtin-hook-encap-out", "spec.hooks.out.program.builtin"),
    ("port out of range", lambda p: _spec(p)["hooks"]["out"].update(
        config={"denyTCPPorts": [70000]}),
     "schema:maximum", "spec.hooks.out.config.denyTCPPorts[0]"),
    ("unknown config field", lambda p: _spec(p)["hooks"]["out"].update(
        config={"denyPorts": [80]}),
     "schema:unknown-field", "spec.hooks.out.config.denyPorts"),
    ("another builtin's config field", lambda p: _spec(p)["hooks"]["out"].update(
        config={"denyTCPPorts": [80], "oneIn": 5}),
     "config-fields-port-filter", "spec.hooks.out.config"),
    ("missing required config", _set_hook("xmit", {"program": {"builtin": "encap"},
                                                   "config": {"remote": "192.0.2.1"}}),
     "config-required-encap", "spec.hooks.xmit.config"),
    ("config the schema cannot judge", lambda p: _spec(p)["hooks"]["out"].update(
        config={"denySourceCIDRs": ["10.0.0.0/33"]}),
     "builtin-config", "spec.hooks.out.config.denySourceCIDRs[0]"),
    ("podSubnets outside the admin namespace",
     lambda p: (_spec(p).pop("podSelector"), _spec(p).update(podSubnets=["local"])),
     "pod-subnets-admin-only", "spec.podSubnets"),
    ("bad label key", lambda p: _spec(p).update(podSelector={"matchLabels": {"-app": "web"}}),
     "label-selector-syntax", "spec.podSelector.matchLabels.-app"),
    ("bad label key prefix", lambda p: _spec(p).update(nodeSelector={"matchLabels": {
        "Example.COM/zone": "a"}}),
     "label-selector-syntax", "spec.nodeSelector.matchLabels.Example.COM/zone"),
    ("bad label value", lambda p: _spec(p).update(podSelector={"matchLabels": {
        "app": "web server"}}),
     "label-selector-syntax", "spec.podSelector.matchLabels.app"),
    ("bad expression value", lambda p: _spec(p).update(podSelector={"matchExpressions": [
        {"key": "app", "operator": "NotIn", "values": ["ok", "-bad"]}]}),
     "label-selector-syntax", "spec.podSelector.matchExpressions[0].values[1]"),
]


@pytest.mark.parametrize(("mutate", "rule", "path"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_invalid_policy_is_rejected_by_its_rule(mutate: Mutation, rule: str,
                                                path: str) -> None:
    obj = base_policy()
    mutate(obj)
    problems = validate_policy(obj, admin_namespace=ADMIN_NS)
    assert [(p.rule, p.path) for p in problems] == [(rule, path)], problems
    with pytest.raises(PolicyValidationError) as caught:
        parse_policy(obj, admin_namespace=ADMIN_NS)
    assert path in str(caught.value)


def test_every_cel_rule_has_an_invalid_case() -> None:
    covered = {rule for _, _, rule, _ in CASES}
    missing = {r.name for r in schema.ALL_CEL_RULES} - covered
    assert not missing


def test_base_policy_is_valid() -> None:
    assert validate_policy(base_policy(), admin_namespace=ADMIN_NS) == []


def test_several_problems_are_all_reported() -> None:
    obj = base_policy()
    obj["spec"]["hooks"] = {
        "in": {"program": {"builtin": "counters"}, "headroom": 4},
        "xmit": {"program": {"builtin": "counters"}, "headroom": 999},
    }
    rules = {p.rule for p in validate_policy(obj)}
    assert rules == {"headroom-only-on-xmit", "headroom-range"}


def test_fail_closed_needs_drop_all_in_the_catalogue() -> None:
    real = Catalogue.default()
    without_drop_all = Catalogue({k: v for k, v in real.programs.items() if k != "drop-all"},
                                 real.encode_config, real.config_error)
    obj = base_policy()
    obj["spec"]["failurePolicy"] = "FailClosed"
    assert validate_policy(obj, catalogue=real) == []
    problems = validate_policy(obj, catalogue=without_drop_all)
    assert [(p.rule, p.path) for p in problems] == [("fail-closed-supported",
                                                     "spec.failurePolicy")]


def test_admin_namespace_is_configurable() -> None:
    obj = base_policy()
    del obj["spec"]["podSelector"]
    obj["spec"]["podSubnets"] = ["remote"]
    obj["metadata"]["namespace"] = "net-admin"
    assert validate_policy(obj, admin_namespace="net-admin") == []
    assert validate_policy(obj, admin_namespace=ADMIN_NS)[0].rule == "pod-subnets-admin-only"


def test_cel_sees_reserved_words_escaped_as_kubernetes_does() -> None:
    assert escape_cel_name("in") == "__in__"
    assert escape_cel_name("x-y.z/w__v") == "x__dash__y__dot__z__slash__w__underscores__v"
    hooks = schema.spec_schema()["properties"]["hooks"]
    assert evaluate_rule(schema.AT_LEAST_ONE_HOOK.rule,
                         {"in": {"program": {"builtin": "counters"}}}, hooks)
    assert not evaluate_rule(schema.AT_LEAST_ONE_HOOK.rule, {}, hooks)


def test_defaults_are_applied_like_the_api_server() -> None:
    defaulted = apply_defaults(base_policy(), schema.root_schema())
    assert defaulted["spec"]["failurePolicy"] == "FailOpen"
    assert defaulted["spec"]["priority"] == schema.DEFAULT_PRIORITY
    # Absent optional objects stay absent (no default is invented for them).
    assert "nodeSelector" not in defaulted["spec"]
    assert "status" not in defaulted


def test_nulls_of_non_nullable_fields_are_pruned_like_the_api_server() -> None:
    obj = base_policy()
    obj["spec"].update(nodeSelector=None, priority=None, failurePolicy=None)
    obj["spec"]["hooks"]["out"]["config"] = None
    assert validate_policy(obj) == []
    defaulted = apply_defaults(obj, schema.root_schema())
    assert "nodeSelector" not in defaulted["spec"]
    assert defaulted["spec"]["priority"] == schema.DEFAULT_PRIORITY
    assert "config" not in defaulted["spec"]["hooks"]["out"]
    status = {"nodes": {"n": {"lastError": None}}}  # nullable: kept
    assert apply_defaults(status, schema.status_schema()) == status


def test_not_a_mapping() -> None:
    problems = validate_policy(["not", "a", "policy"])  # type: ignore[arg-type]
    assert problems[0].rule == "schema:type"
