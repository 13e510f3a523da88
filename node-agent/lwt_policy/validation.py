"""Offline validation against the CRD's own openAPIV3Schema: defaults, structure, CEL.

This is what the API server does on create/update, reproduced so the agent (standalone mode,
where there is no API server) and the operator (which also sees objects created before a CRD
upgrade) apply exactly the rules the CRD declares:

1. `apply_defaults`: nulls of non-nullable fields are dropped, then structural defaulting (a
   property's `default` fills it when absent and its parent object is present);
2. `schema_problems`: the openAPIV3Schema, with unknown fields reported the way
   `kubectl apply` (field validation Strict, the default since Kubernetes 1.27) reports them;
3. `cel_problems`: every `x-kubernetes-validations` rule, evaluated with cel-python on the
   node it is declared on, `self` bound as Kubernetes binds it (reserved-word property names
   escaped, e.g. `in` -> `__in__`).
"""
from __future__ import annotations

import copy
import functools
import re
from collections.abc import Mapping
from typing import Any

import celpy
import jsonschema

from lwt_policy import schema as crd_schema
from lwt_policy.errors import Problem, join_path
from lwt_policy.objectmeta import metadata_problems

# Kubernetes' CEL property-name escaping (apiextensions-apiserver schema/cel/model/escaping.go).
_CEL_RESERVED = frozenset({
    "true", "false", "null", "in", "as", "break", "const", "continue", "else", "for",
    "function", "if", "import", "let", "loop", "package", "namespace", "return", "var",
})
_CEL_ESCAPES = (("__", "__underscores__"), (".", "__dot__"), ("-", "__dash__"),
                ("/", "__slash__"))


def escape_cel_name(name: str) -> str:
    """The identifier under which a CEL rule sees the object property `name`."""
    if name in _CEL_RESERVED:
        return f"__{name}__"
    for raw, escaped in _CEL_ESCAPES:
        name = name.replace(raw, escaped)
    return name


def apply_defaults(obj: Any, node: dict[str, Any]) -> Any:
    """A copy of `obj` with the schema's defaults filled in, as the API server stores it."""
    obj = copy.deepcopy(obj)
    _default_in_place(obj, node)
    return obj


def _default_in_place(value: Any, node: dict[str, Any]) -> None:
    if isinstance(value, dict):
        # The API server prunes nulls of non-nullable fields before defaulting
        # ("Defaulting and Nullable" in the CRD docs): `nodeSelector: null` means absent.
        for name, sub in node.get("properties", {}).items():
            if name in value and value[name] is None and not sub.get("nullable"):
                del value[name]
        for name, sub in node.get("properties", {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                _default_in_place(value[name], sub)
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            for item in value.values():
                _default_in_place(item, extra)
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for item in value:
            _default_in_place(item, node["items"])


def to_json_schema(node: dict[str, Any], *, closed: bool = True) -> dict[str, Any]:
    """A jsonschema (draft 2020-12) equivalent of an openAPIV3Schema node.

    `nullable` becomes a null type, `x-kubernetes-list-type: set` uniqueness, and objects with
    declared properties (unless they preserve unknown fields) refuse unknown ones, as Strict
    field validation does. `closed=False` leaves a node open: ObjectMeta, which the API server
    validates itself and the CRD may only narrow (name), must not refuse namespace, labels...
    """
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in ("nullable", "description", "default"):
            continue
        if key == "properties":
            out[key] = {
                name: to_json_schema(sub, closed=name != "metadata" or not _is_object_root(node))
                for name, sub in value.items()
            }
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = to_json_schema(value)
        else:
            out[key] = copy.deepcopy(value)
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if node.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
        and closed
    ):
        out["additionalProperties"] = False
    return out


def _is_object_root(node: dict[str, Any]) -> bool:
    """Whether `node` is an object root (it has apiVersion, kind and metadata properties)."""
    return {"apiVersion", "kind", "metadata"} <= set(node.get("properties", {}))


_REQUIRED_RE = re.compile(r"^'(?P<name>.+)' is a required property$")


def schema_problems(obj: Any, node: dict[str, Any], base: str = "") -> list[Problem]:
    """Problems of `obj` against the openAPIV3Schema `node` (defaults already applied)."""
    return json_schema_problems(obj, to_json_schema(node), base)


def json_schema_problems(obj: Any, json_schema: Mapping[str, Any], base: str = "",
                         validator: jsonschema.protocols.Validator | None = None
                         ) -> list[Problem]:
    """Problems of `obj` against a plain JSON schema, one per field, paths under `base`."""
    validator = validator or jsonschema.Draft202012Validator(json_schema)
    problems: list[Problem] = []
    for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.path))):
        path = join_path(base, *error.absolute_path)
        keyword = str(error.validator)
        message = error.message
        if keyword == "required":
            match = _REQUIRED_RE.match(error.message)
            if match:
                path = join_path(path, match["name"])
                message = "required field is missing"
        elif keyword == "additionalProperties" and isinstance(error.instance, dict):
            known = set(error.schema.get("properties", {}))
            unknown = sorted(set(error.instance) - known)
            for name in unknown:
                problems.append(Problem(
                    join_path(path, name),
                    f"unknown field (known fields here: {', '.join(sorted(known))})",
                    "schema:unknown-field",
                ))
            continue
        elif keyword == "enum":
            message = f"unsupported value {error.instance!r}: must be one of " + ", ".join(
                map(str, error.validator_value))
        problems.append(Problem(path, message, f"schema:{keyword}"))
    return problems


@functools.cache
def _cel_environment() -> celpy.Environment:
    return celpy.Environment()


@functools.cache
def _compiled(rule: str) -> Any:
    env = _cel_environment()
    return env.program(env.compile(rule))


def _cel_value(value: Any, node: dict[str, Any]) -> Any:
    """`value` shaped as Kubernetes exposes it to CEL (escaped property names)."""
    if isinstance(value, dict):
        props = node.get("properties")
        if props is not None:
            return {
                escape_cel_name(name): _cel_value(item, props.get(name, {}))
                for name, item in value.items()
            }
        extra = node.get("additionalProperties")
        sub = extra if isinstance(extra, dict) else {}
        return {name: _cel_value(item, sub) for name, item in value.items()}
    if isinstance(value, list):
        items = node.get("items", {})
        return [_cel_value(item, items) for item in value]
    return value


def evaluate_rule(rule: str, value: Any, node: dict[str, Any]) -> bool:
    """Evaluate one CEL rule with `self` = value; raises on evaluation errors."""
    activation = {"self": celpy.json_to_cel(_cel_value(value, node))}
    result = _compiled(rule).evaluate(activation)
    if isinstance(result, Exception):
        raise result
    return bool(result)


def cel_problems(obj: Any, node: dict[str, Any], base: str = "") -> list[Problem]:
    """Every failing `x-kubernetes-validations` rule under `node`."""
    problems: list[Problem] = []
    _walk_cel(obj, node, base, problems)
    return problems


def _walk_cel(value: Any, node: dict[str, Any], path: str, out: list[Problem]) -> None:
    if value is None:
        return
    for entry in node.get("x-kubernetes-validations", []):
        where = path
        if entry.get("fieldPath"):
            where = join_path(path, entry["fieldPath"].lstrip("."))
        name = _rule_name(entry)
        try:
            ok = evaluate_rule(entry["rule"], value, node)
        except Exception as err:  # cel-python raises several unrelated types
            out.append(Problem(where, f"rule {entry['rule']!r} could not be evaluated: {err}",
                               name))
            continue
        if not ok:
            out.append(Problem(where, entry["message"], name))
    if isinstance(value, dict):
        for name, sub in node.get("properties", {}).items():
            if name in value:
                _walk_cel(value[name], sub, join_path(path, name), out)
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            for key, item in value.items():
                _walk_cel(item, extra, join_path(path, key), out)
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for index, item in enumerate(value):
            _walk_cel(item, node["items"], join_path(path, index), out)


def _rule_name(entry: dict[str, Any]) -> str:
    try:
        return crd_schema.rule_by_message(entry["message"]).name
    except KeyError:
        return f"cel:{entry['rule']}"


@functools.cache
def _root_validator() -> tuple[dict[str, Any], jsonschema.protocols.Validator]:
    # Built once per process: the operator and the agent validate every policy event.
    node = crd_schema.root_schema()
    return node, jsonschema.Draft202012Validator(to_json_schema(node))


def validate_object(obj: Any, node: dict[str, Any] | None = None) -> tuple[Any, list[Problem]]:
    """Default, then check structure, then (only if the structure is sound) the CEL rules.

    Returns the defaulted object and the problems. CEL rules are skipped while the structure is
    wrong because their messages would only repeat the structural problem less clearly.
    """
    if node is None:
        node, validator = _root_validator()
        defaulted = apply_defaults(obj, node)
        # ObjectMeta is the API server's own (the CRD schema leaves it open): checked here
        # so a file-fed agent refuses what a cluster would.
        problems = metadata_problems(obj.get("metadata")) if isinstance(obj, Mapping) else []
        problems += json_schema_problems(defaulted, validator.schema, validator=validator)
    else:
        defaulted = apply_defaults(obj, node)
        problems = schema_problems(defaulted, node)
    if problems:
        return defaulted, problems
    return defaulted, cel_problems(defaulted, node)
