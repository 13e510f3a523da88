"""The typed model: parsing, defaults, agreement with the CRD schema, and the examples."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml
from lwt_policy import cluster_schema, schema
from lwt_policy.model import (
    CLUSTER_SPEC_FIELDS,
    CONFIGMAP_PROGRAM_FIELDS,
    HOOK_FIELDS,
    SPEC_FIELDS,
    BuiltinSource,
    ConfigMapSource,
    HookSpec,
    PolicyRef,
    PolicySpec,
    admin_namespace_from_env,
    parse_policy,
    validate_policy,
)
from lwt_policy.selectors import LabelSelector

from tests.policy.conftest import ADMIN_NS, EXAMPLES, base_policy

SHA = "0123456789abcdef" * 4


def test_spec_fields_agree_with_schema_and_dataclass() -> None:
    spec = schema.spec_schema()
    assert set(SPEC_FIELDS) == set(spec["properties"])
    assert set(SPEC_FIELDS.values()) | set(CLUSTER_SPEC_FIELDS.values()) == {
        f.name for f in dataclasses.fields(PolicySpec)}
    cluster = cluster_schema.cluster_spec_schema()
    assert set(CLUSTER_SPEC_FIELDS) == set(cluster["properties"])
    assert cluster["properties"]["hooks"] == spec["properties"]["hooks"]
    for hook in schema.HOOKS:
        hook_schema = spec["properties"]["hooks"]["properties"][hook]
        assert set(HOOK_FIELDS) == set(hook_schema["properties"])
        program = hook_schema["properties"]["program"]["properties"]
        assert set(program) == {"builtin"} | set(CONFIGMAP_PROGRAM_FIELDS)
        assert set(program["configMap"]["properties"]) == set(
            CONFIGMAP_PROGRAM_FIELDS["configMap"])
    assert set(HOOK_FIELDS.values()) <= {f.name for f in dataclasses.fields(HookSpec)}
    assert set(spec["properties"]["hooks"]["properties"]) == set(schema.HOOKS)
    assert spec["properties"]["failurePolicy"]["enum"] == list(schema.FAILURE_POLICIES)
    assert spec["properties"]["podSubnets"]["items"]["enum"] == list(schema.POD_SUBNETS)


def test_every_field_reaches_the_model() -> None:
    obj: dict[str, Any] = base_policy()
    obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    obj["spec"] = {
        "podSelector": {"matchLabels": {"app": "web"},
                        "matchExpressions": [{"key": "tier", "operator": "Exists"}]},
        "nodeSelector": {"matchLabels": {"zone": "a"}},
        "failurePolicy": "FailClosed",
        "priority": 7,
        "hooks": {
            "in": {"program": {"builtin": "counters"}},
            "out": {"program": {"configMap": {"name": "prog", "key": "f.o"},
                                "section": "lwt_out", "sha256": SHA}},
            "xmit": {"program": {"builtin": "encap"}, "headroom": 20,
                     "config": {"remote": "192.0.2.1", "source": "192.0.2.2"}},
        },
    }
    policy = parse_policy(obj)
    assert policy.ref == PolicyRef("shop", "web") and str(policy.ref) == "shop/web"
    assert policy.uid == "u-1" and policy.generation == 3 and policy.deleting
    spec = policy.spec
    assert spec.pod_selector is not None
    assert spec.pod_selector.matches({"app": "web", "tier": "x"})
    assert not spec.pod_selector.matches({"app": "web"})
    assert spec.node_selector.matches({"zone": "a"})
    assert spec.pod_subnets == frozenset()
    assert (spec.failure_policy, spec.priority) == ("FailClosed", 7)
    assert list(spec.hooks) == ["in", "out", "xmit"]
    assert spec.hooks["in"].program == BuiltinSource("counters")
    assert spec.hooks["out"].program == ConfigMapSource("shop", "prog", "f.o", "lwt_out", SHA)
    assert spec.hooks["out"].field_path == "spec.hooks.out"
    xmit = spec.hooks["xmit"]
    assert xmit.headroom == 20 and xmit.config == {"remote": "192.0.2.1",
                                                   "source": "192.0.2.2"}


def test_defaults() -> None:
    policy = parse_policy(base_policy())
    assert policy.spec.failure_policy == "FailOpen"
    assert policy.spec.priority == 100
    assert policy.spec.node_selector == LabelSelector()  # every node
    assert policy.spec.hooks["out"].headroom is None
    assert not policy.deleting
    assert policy.raw["spec"]["priority"] == 100  # the defaulted object is kept


def test_missing_namespace_means_default_like_kubectl() -> None:
    obj = base_policy()
    del obj["metadata"]["namespace"]
    assert parse_policy(obj).namespace == "default"


def test_admin_namespace_from_env() -> None:
    assert admin_namespace_from_env({}) == "lwt-system"
    assert admin_namespace_from_env({"POD_NAMESPACE": "ops"}) == "ops"
    assert admin_namespace_from_env({"POD_NAMESPACE": "ops",
                                     "LWT_ADMIN_NAMESPACE": "net"}) == "net"


def test_input_object_is_not_modified() -> None:
    obj = base_policy()
    before = yaml.safe_dump(obj)
    parse_policy(obj)
    assert yaml.safe_dump(obj) == before


EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))


def test_examples_cover_the_promised_cases() -> None:
    policies = [parse_policy(yaml.safe_load(p.read_text()), admin_namespace=ADMIN_NS)
                for p in EXAMPLE_FILES]
    builtins = {h.program.name for p in policies for h in p.spec.hooks.values()
                if isinstance(h.program, BuiltinSource)}
    assert {"port-filter", "counters", "sampler", "encap"} <= builtins
    assert any(isinstance(h.program, ConfigMapSource)
               for p in policies for h in p.spec.hooks.values())
    assert any(p.spec.pod_subnets for p in policies)
    assert any(h.headroom for p in policies for h in p.spec.hooks.values())


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_example_is_valid(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert len(docs) == 1
    assert validate_policy(docs[0], admin_namespace=ADMIN_NS) == []
    assert path.read_text().lstrip().startswith("#"), "examples explain themselves"


def test_admin_example_is_refused_in_a_tenant_namespace() -> None:
    obj = yaml.safe_load((EXAMPLES / "admin-pod-subnets.yaml").read_text())
    obj["metadata"]["namespace"] = "shop"
    assert [p.rule for p in validate_policy(obj, admin_namespace=ADMIN_NS)] == [
        "pod-subnets-admin-only"]
