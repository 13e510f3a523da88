"""The structural-schema rules the emulator applies to custom resources (structural.py)."""
from __future__ import annotations

from typing import Any

from tests.k8s.structural import admit, default, prune, unknown_fields, validate

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["mode"],
            "properties": {
                "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
                "size": {"type": "integer", "minimum": 0, "maximum": 10, "format": "int32"},
                "name": {"type": "string", "maxLength": 3, "pattern": "^[a-z]+$"},
                "tags": {"type": "array", "maxItems": 2, "x-kubernetes-list-type": "set",
                         "items": {"type": "string"}},
                "ports": {"type": "array", "x-kubernetes-list-type": "map",
                          "x-kubernetes-list-map-keys": ["port"],
                          "items": {"type": "object", "properties": {
                              "port": {"type": "integer"}, "proto": {"type": "string",
                                                                     "default": "TCP"}}}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "byNode": {"type": "object", "additionalProperties": {
                    "type": "object", "properties": {"n": {"type": "integer"}}}},
                "error": {"type": "object", "nullable": True,
                          "properties": {"message": {"type": "string"}}},
                "when": {"type": "string", "format": "date-time"},
            },
        },
    },
}


def test_prune_keeps_declared_preserved_and_additional_fields() -> None:
    obj = {"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "n", "labels": {"a": "b"}},
           "junk": 1,
           "spec": {"mode": "a", "junk": 2, "free": {"any": {"thing": 1}},
                    "byNode": {"n1": {"n": 1, "junk": 3}}, "ports": [{"port": 1, "junk": 4}]}}
    assert prune(obj, SCHEMA, root=True) == {
        "apiVersion": "x/v1", "kind": "K", "metadata": {"name": "n", "labels": {"a": "b"}},
        "spec": {"mode": "a", "free": {"any": {"thing": 1}}, "byNode": {"n1": {"n": 1}},
                 "ports": [{"port": 1}]}}


def test_unknown_fields_are_what_prune_drops() -> None:
    obj = {"metadata": {"x": 1}, "junk": 1,
           "spec": {"junk": 2, "free": {"a": 1}, "byNode": {"n": {"junk": 3}},
                    "ports": [{"port": 1, "junk": 4}]}}
    assert unknown_fields(obj, SCHEMA) == ["junk", "spec.junk", "spec.byNode.n.junk",
                                           "spec.ports[0].junk"]


def test_defaults_fill_absent_fields_of_present_objects() -> None:
    assert default({"spec": {"ports": [{"port": 1}]}}, SCHEMA) == {
        "spec": {"mode": "a", "ports": [{"port": 1, "proto": "TCP"}]}}
    assert default({}, SCHEMA) == {}  # no spec: nothing to default inside it


def test_validation_reports_every_violation_with_its_path() -> None:
    errors = validate({"spec": {
        "mode": "c", "size": 11, "name": "ABCD", "tags": ["x", "x", "y"],
        "ports": [{"port": 1}, {"port": 1}], "byNode": {"n1": {"n": "one"}},
        "when": "yesterday"}}, SCHEMA)
    text = "\n".join(errors)
    for expected in ('spec.mode: Unsupported value: "c"',
                     "spec.size: Invalid value: 11: spec.size in body should be less than",
                     "spec.name: Too long", "spec.name: Invalid value: \"ABCD\"",
                     "spec.tags: Too many: 3", 'spec.tags[1]: Duplicate value: "x"',
                     "spec.ports[1]: Duplicate value", "spec.byNode.n1.n: Invalid value",
                     "spec.when: Invalid value"):
        assert expected in text, (expected, errors)
    assert validate({"spec": {}}, SCHEMA) == ["spec.mode: Required value"]
    assert validate({"spec": {"mode": "a", "error": None}}, SCHEMA) == []
    assert validate({"spec": {"mode": "a", "size": True}}, SCHEMA)  # a bool is no integer


def test_admit_prunes_defaults_then_validates() -> None:
    stored, errors = admit({"spec": {"unknown": 1}}, SCHEMA)
    assert stored == {"spec": {"mode": "a"}} and errors == []
    _, errors = admit({"spec": {"size": -1}}, SCHEMA)
    assert errors and "spec.size" in errors[0]
