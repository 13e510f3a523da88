"""Issue 12 item 4: each built-in's `config` has a typed schema in the CRD, generated from the
catalogue; nothing preserves unknown fields, so the API server itself refuses (Strict) or
prunes a config bomb before it reaches the operator or any agent."""
from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from lwt_kube import ApiError, Kube, api_path
from lwt_policy import catalogue, schema
from lwt_policy.model import validate_policy

from tests.k8s.conftest import k8s_api, kube  # noqa: F401 (fixtures)

POLICIES = "lwt.dev/v1alpha1/lwtroutepolicies"


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for key, sub in node.get("properties", {}).items():
            yield from _walk(sub, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            yield from _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            yield from _walk(node["additionalProperties"], f"{path}.*")


def test_nothing_in_the_crd_preserves_unknown_fields() -> None:
    for path, node in _walk(schema.root_schema()):
        assert not node.get("x-kubernetes-preserve-unknown-fields"), path


def test_every_config_string_list_and_object_is_bounded() -> None:
    config = schema.builtin_config_schema()
    assert "maxProperties" in config
    for path, node in _walk(config, "config"):
        if node.get("type") == "string" and "enum" not in node:
            assert "maxLength" in node, path
        if node.get("type") == "array":
            assert "maxItems" in node, path


def test_config_schema_follows_the_catalogue(monkeypatch) -> None:
    """A field DATA adds to a built-in in catalogue.py appears in the CRD, typed, and only
    that built-in may use it."""
    sampler = catalogue.CATALOGUE["sampler"]
    extra = copy.deepcopy(dict(sampler.config_schema))
    extra["properties"] = {**extra["properties"], "burst": {
        "type": "integer", "minimum": 1, "maximum": 64, "description": "Packets per sample."}}
    monkeypatch.setitem(catalogue.CATALOGUE, "sampler",
                        catalogue.BuiltinProgram(**{**sampler.__dict__, "config_schema": extra}))
    schema._config_fields.cache_clear()
    schema.builtin_config_rules.cache_clear()
    try:
        fields = schema.builtin_config_schema()["properties"]
        assert fields["burst"]["maximum"] == 64 and fields["burst"]["type"] == "integer"
        rules = {r.name: r for r in schema.builtin_config_rules()}
        assert "!has(self.config.burst)" in rules["config-fields-port-filter"].rule
        assert "burst" not in rules.get("config-fields-sampler", schema.CelRule("", "", "")).rule
        # A field two built-ins declare with different types cannot be one CRD field.
        extra["properties"]["remote"] = {"type": "integer", "maximum": 3}
        schema._config_fields.cache_clear()
        with pytest.raises(schema.ConfigSchemaError, match="different schemas"):
            schema.builtin_config_schema()
    finally:
        monkeypatch.undo()
        schema._config_fields.cache_clear()
        schema.builtin_config_rules.cache_clear()


def _policy(config: dict[str, Any], builtin: str = "port-filter") -> dict[str, Any]:
    return {"apiVersion": "lwt.dev/v1alpha1", "kind": "LwtRoutePolicy",
            "metadata": {"name": "bomb", "namespace": "shop"},
            "spec": {"podSelector": {}, "hooks": {"out": {"program": {"builtin": builtin},
                                                          "config": config}}}}


def test_the_api_server_refuses_a_config_bomb(kube: Kube) -> None:  # noqa: F811
    """Tens of thousands of keys (5.5 s per generation for 100k before) and junk nesting: refused
    with Strict field validation (kubectl's default), pruned away without it."""
    bomb = {f"k{i}": i for i in range(50_000)}  # the emulator takes 1 MiB bodies
    with pytest.raises(ApiError) as exc:
        kube.request("POST", api_path(POLICIES, "shop"), _policy(bomb),
                     params={"fieldValidation": "Strict"})
    assert exc.value.status in (400, 422), str(exc.value)[:300]
    created = kube.create(api_path(POLICIES, "shop"), _policy({"denyTCPPorts": [22],
                                                              "nested": {"a": {"b": {}}}}))
    assert created["spec"]["hooks"]["out"]["config"] == {"denyTCPPorts": [22]}
    # Offline (operator, agent, standalone) gives the same answer as the API server.
    assert [p.rule for p in validate_policy(_policy({"k1": 1}))] == ["schema:unknown-field"]
    # Out of bounds for the typed field.
    with pytest.raises(ApiError) as exc:
        kube.create(api_path(POLICIES, "shop"),
                    {**_policy({"denyTCPPorts": list(range(1, 2000))}),
                     "metadata": {"name": "many", "namespace": "shop"}})
    assert exc.value.status == 422
