"""The generated CRD: up to date, accepted by Kubernetes' own schema, structural, CEL sound."""
from __future__ import annotations

import re
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version
from lwt_policy import crd, schema
from lwt_policy.validation import _compiled, to_json_schema

from tests.policy.conftest import REPO

CRD_PATH = REPO / "crds" / crd.CRD_FILE_NAME


def committed_crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())


def test_committed_crd_matches_generator() -> None:
    assert CRD_PATH.read_text() == crd.render(), (
        "crds/ is stale: run `.venv/bin/python -m lwt_policy.crd --write`")


def test_check_flag_detects_stale_file(tmp_path) -> None:
    stale = tmp_path / "crd.yaml"
    stale.write_text(crd.render().replace("maxLength: 63", "maxLength: 64", 1))
    assert crd.main(["--check", "--path", str(stale)]) == 1
    assert crd.main(["--write", "--path", str(stale)]) == 0
    assert crd.main(["--check", "--path", str(stale)]) == 0


@pytest.mark.parametrize("version", [latest_version(), "1.30"])
def test_crd_passes_kubernetes_validate_strict(version: str) -> None:
    # Strict: unknown fields anywhere in the CRD object are errors, as the API server's
    # strict field validation would report them.
    assert kubernetes_validate.validate(committed_crd(), version, strict=True)


def test_kubernetes_validate_catches_a_broken_crd() -> None:
    broken = committed_crd()
    broken["spec"]["versions"][0]["servd"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, latest_version(), strict=True)


def test_names_and_shape() -> None:
    obj = committed_crd()
    spec = obj["spec"]
    assert obj["metadata"]["name"] == "lwtroutepolicies.lwt.dev"
    assert spec["group"] == "lwt.dev" and spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "LwtRoutePolicy"
    assert spec["names"]["plural"] == "lwtroutepolicies"
    assert spec["names"]["shortNames"] == ["lrp"]
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert {"Ready", "Nodes", "Routes", "Age"} <= set(columns)
    assert columns["Age"]["jsonPath"] == ".metadata.creationTimestamp"


def test_printer_columns_point_at_schema_fields() -> None:
    root = schema.root_schema()
    for column in schema.printer_columns():
        path = column["jsonPath"]
        if path.startswith(".metadata"):
            continue
        node = root  # a filter such as [?(@.type=="Ready")] selects list items
        for part in re.sub(r"\[\?\(.*?\)\]", "[]", path).lstrip(".").split("."):
            node = node["properties"][part.removesuffix("[]")]
            if part.endswith("[]"):
                node = node["items"]
        assert node["type"] == column["type"], column


def _walk(node: dict[str, Any], path: str = ""):
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}.*")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")


def test_schema_is_structural() -> None:
    """The API server's structural-schema rules (apiextensions structural.go)."""
    for path, node in _walk(schema.root_schema()):
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
        assert not node.get("uniqueItems"), f"{path}: uniqueItems is forbidden"
        assert not ("properties" in node and "additionalProperties" in node), path
        for forbidden in ("$ref", "allOf", "anyOf", "oneOf", "not", "definitions"):
            assert forbidden not in node, f"{path}: {forbidden}"
        if node.get("type") == "array":
            assert isinstance(node.get("items"), dict), f"{path}: arrays need items"
    metadata = schema.root_schema()["properties"]["metadata"]
    assert set(metadata["properties"]) <= {"name", "generateName"}


def test_every_list_and_cel_string_is_bounded() -> None:
    # Unbounded lists make the API server's CEL cost estimate exceed its budget.
    for path, node in _walk(schema.spec_schema(), ".spec"):
        if node.get("type") == "array":
            assert "maxItems" in node, path
    program = schema.program_schema()["properties"]
    assert program["sha256"]["maxLength"] == 64


def test_defaults_are_valid_values() -> None:
    import jsonschema

    for _path, node in _walk(schema.root_schema()):
        if "default" in node:
            jsonschema.validate(node["default"], to_json_schema(node))


def _cel_entries(node: dict[str, Any]):
    for path, sub in _walk(node):
        for entry in sub.get("x-kubernetes-validations", []):
            yield path, entry


def test_every_cel_rule_compiles_and_is_in_the_crd() -> None:
    in_crd = {entry["message"] for _, entry in _cel_entries(schema.root_schema())}
    for rule in schema.ALL_CEL_RULES:
        _compiled(rule.rule)  # raises on a syntax error
        assert rule.message in in_crd, f"{rule.name} is defined but not used in the schema"
        assert rule.reason in {"FieldValueInvalid", "FieldValueForbidden",
                               "FieldValueRequired", "FieldValueDuplicate"}
    messages = [r.message for r in schema.ALL_CEL_RULES]
    assert len(set(messages)) == len(messages), "messages map rejections back to rules"
    names = [r.name for r in schema.ALL_CEL_RULES]
    assert len(set(names)) == len(names)


def test_cel_field_paths_exist_in_the_schema() -> None:
    for path, entry in _cel_entries(schema.root_schema()):
        field_path = entry.get("fieldPath")
        if not field_path:
            continue
        node = schema.root_schema()
        for part in [p for p in path.split(".") if p]:
            node = node["additionalProperties"] if part == "*" else node["properties"][
                part.rstrip("[]")]
            if part.endswith("[]"):
                node = node["items"]
        for part in field_path.lstrip(".").split("."):
            assert part in node["properties"], f"{path}: fieldPath {field_path}"
            node = node["properties"][part]


def test_cel_rules_never_name_a_reserved_word_unescaped() -> None:
    # `self.in` does not parse in CEL; Kubernetes exposes the property as `self.__in__`.
    for _, entry in _cel_entries(schema.root_schema()):
        assert "self.in." not in entry["rule"] and not entry["rule"].endswith("self.in")
        assert "has(self.in)" not in entry["rule"]


def test_every_spec_field_has_a_description() -> None:
    for path, node in _walk(schema.spec_schema(), ".spec"):
        if path.endswith("[]") or path.endswith(".*"):
            continue
        assert node.get("description"), f"{path} has no description"


NODE_STATE_CRD_PATH = REPO / "crds" / crd.NODE_STATE_CRD_FILE_NAME


def test_node_state_crd_committed_valid_and_shaped() -> None:
    assert NODE_STATE_CRD_PATH.read_text() == crd.render_node_state(), (
        "crds/ is stale: run `.venv/bin/python -m lwt_policy.crd --write`")
    obj = yaml.safe_load(NODE_STATE_CRD_PATH.read_text())
    assert kubernetes_validate.validate(obj, latest_version(), strict=True)
    spec = obj["spec"]
    assert obj["metadata"]["name"] == "lwtnodestates.lwt.dev"
    assert spec["scope"] == "Cluster" and spec["names"]["shortNames"] == ["lns"]
    (version,) = spec["versions"]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Policies", "Errors", "Routes", "Updated", "Age"]
    # Per-node entries are not in the policy any more: its status is O(1) in nodes.
    policy_status = committed_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
        "properties"]["status"]["properties"]
    assert "nodes" not in policy_status
    assert policy_status["nodesNotReady"]["maxItems"] == schema.MAX_LISTED_NODES


def test_check_covers_every_generated_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(crd, "default_crd_path", lambda: tmp_path / crd.CRD_FILE_NAME)
    assert crd.main(["--write"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(crd.rendered_files())
    (tmp_path / crd.NODE_STATE_CRD_FILE_NAME).write_text("stale")
    assert crd.main(["--check"]) == 1
