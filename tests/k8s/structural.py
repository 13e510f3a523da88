"""What the API server does with a custom resource's structural schema on every write.

kmock stores custom resources as sent. A real API server, for a CRD with an openAPIV3Schema:

1. prunes fields the schema does not declare (unless `x-kubernetes-preserve-unknown-fields`),
   silently for clients that do not ask for strict field validation;
2. applies `default`s where a field is absent and its parent object is present;
3. validates the result (types, enums, bounds, lengths, patterns, required fields, list and
   map sizes, set/map list uniqueness, anyOf/oneOf/allOf/not) and refuses the write with
   422 Invalid listing every violation.

This is an independent implementation (not lwt_policy's validator), so an agent or operator
that writes a wrong status field is caught here as a real cluster would catch it.
`x-kubernetes-validations` (CEL) rules are not evaluated; see docs/testing.md.
"""
from __future__ import annotations

import copy
import datetime
import json
import re
from collections.abc import Mapping
from typing import Any

# Root fields the API server keeps whatever the schema says (ObjectMeta is its own business).
_ROOT_KEPT = ("apiVersion", "kind", "metadata")
_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


def prune(value: Any, node: Mapping[str, Any], *, root: bool = False) -> Any:
    """A copy of `value` without the fields `node` does not declare."""
    if isinstance(value, dict):
        if node.get("x-kubernetes-preserve-unknown-fields") and "properties" not in node:
            return copy.deepcopy(value)
        properties = node.get("properties") or {}
        extra = node.get("additionalProperties")
        out: dict[str, Any] = {}
        for key, item in value.items():
            if root and key in _ROOT_KEPT:
                out[key] = copy.deepcopy(item)
            elif key in properties:
                out[key] = prune(item, properties[key])
            elif isinstance(extra, Mapping):
                out[key] = prune(item, extra)
            elif extra is True or node.get("x-kubernetes-preserve-unknown-fields"):
                out[key] = copy.deepcopy(item)
        return out
    if isinstance(value, list) and isinstance(node.get("items"), Mapping):
        return [prune(item, node["items"]) for item in value]
    return copy.deepcopy(value)


def unknown_fields(value: Any, node: Mapping[str, Any], path: str = "") -> list[str]:
    """Paths `prune` would drop (what fieldValidation=Strict refuses)."""
    found: list[str] = []
    if isinstance(value, dict):
        if node.get("x-kubernetes-preserve-unknown-fields") and "properties" not in node:
            return found
        properties = node.get("properties") or {}
        extra = node.get("additionalProperties")
        for key, item in value.items():
            sub = _join(path, key)
            if not path and key in _ROOT_KEPT:
                continue
            if key in properties:
                found += unknown_fields(item, properties[key], sub)
            elif isinstance(extra, Mapping):
                found += unknown_fields(item, extra, sub)
            elif not (extra is True or node.get("x-kubernetes-preserve-unknown-fields")):
                found.append(sub)
    elif isinstance(value, list) and isinstance(node.get("items"), Mapping):
        for index, item in enumerate(value):
            found += unknown_fields(item, node["items"], f"{path}[{index}]")
    return found


def default(value: Any, node: Mapping[str, Any]) -> Any:
    """Fill absent fields that have a `default`, inside objects that are present (in place)."""
    if isinstance(value, dict):
        for key, sub in (node.get("properties") or {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                default(value[key], sub)
        extra = node.get("additionalProperties")
        if isinstance(extra, Mapping):
            for key, item in value.items():
                if key not in (node.get("properties") or {}):
                    default(item, extra)
    elif isinstance(value, list) and isinstance(node.get("items"), Mapping):
        for item in value:
            default(item, node["items"])
    return value


def _type_ok(value: Any, type_: str) -> bool:
    match type_:
        case "object":
            return isinstance(value, dict)
        case "array":
            return isinstance(value, list)
        case "string":
            return isinstance(value, str)
        case "integer":
            return isinstance(value, int) and not isinstance(value, bool)
        case "number":
            return isinstance(value, int | float) and not isinstance(value, bool)
        case "boolean":
            return isinstance(value, bool)
    return True


def _show(value: Any) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validate(value: Any, node: Mapping[str, Any], path: str = "") -> list[str]:
    """Every violation, formatted like the API server's field errors."""
    where = path or "<root>"
    if value is None:
        return [] if node.get("nullable") else [f"{where}: Invalid value: \"null\": "
                                                f"{where} in body must be of type "
                                                f"{node.get('type', 'object')}"]
    errors: list[str] = []
    type_ = node.get("type")
    int_or_string = node.get("x-kubernetes-int-or-string")
    if type_ and not int_or_string and not _type_ok(value, type_):
        return [f"{where}: Invalid value: {_show(value)}: {where} in body must be of type "
                f"{type_}"]

    def bad(reason: str) -> None:
        errors.append(f"{where}: Invalid value: {_show(value)}: {reason}")

    if "enum" in node and value not in node["enum"]:
        errors.append(f"{where}: Unsupported value: {_show(value)}: supported values: "
                      + ", ".join(f'"{v}"' for v in node["enum"]))
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in node and value < node["minimum"]:
            bad(f"{where} in body should be greater than or equal to {node['minimum']}")
        if "maximum" in node and value > node["maximum"]:
            bad(f"{where} in body should be less than or equal to {node['maximum']}")
        bounds = _INT_RANGES.get(node.get("format", ""))
        if bounds and isinstance(value, int) and not bounds[0] <= value <= bounds[1]:
            bad(f"{where} in body must fit {node['format']}")
    if isinstance(value, str):
        if "maxLength" in node and len(value) > node["maxLength"]:
            errors.append(f"{where}: Too long: may not be more than {node['maxLength']} bytes")
        if "minLength" in node and len(value) < node["minLength"]:
            bad(f"{where} in body should be at least {node['minLength']} chars long")
        if "pattern" in node and not re.search(node["pattern"], value):
            bad(f"{where} in body should match '{node['pattern']}'")
        if node.get("format") == "date-time":
            try:
                datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                bad(f"{where} in body must be of type date-time")
    if isinstance(value, list):
        if "maxItems" in node and len(value) > node["maxItems"]:
            errors.append(f"{where}: Too many: {len(value)}: must have at most "
                          f"{node['maxItems']} items")
        if "minItems" in node and len(value) < node["minItems"]:
            bad(f"{where} in body should have at least {node['minItems']} items")
        list_type = node.get("x-kubernetes-list-type")
        if list_type == "set":
            seen: list[Any] = []
            for index, item in enumerate(value):
                if item in seen:
                    errors.append(f"{where}[{index}]: Duplicate value: {_show(item)}")
                seen.append(item)
        elif list_type == "map":
            keys = node.get("x-kubernetes-list-map-keys") or []
            seen_keys: list[tuple[Any, ...]] = []
            for index, item in enumerate(value):
                key = tuple(item.get(k) for k in keys) if isinstance(item, dict) else (item,)
                if key in seen_keys:
                    shown = _show(dict(zip(keys, key, strict=True)))
                    errors.append(f"{where}[{index}]: Duplicate value: {shown}")
                seen_keys.append(key)
        if isinstance(node.get("items"), Mapping):
            for index, item in enumerate(value):
                errors += validate(item, node["items"], f"{path}[{index}]")
    if isinstance(value, dict):
        if "maxProperties" in node and len(value) > node["maxProperties"]:
            errors.append(f"{where}: Too many: {len(value)}: must have at most "
                          f"{node['maxProperties']} items")
        if "minProperties" in node and len(value) < node["minProperties"]:
            bad(f"{where} in body should have at least {node['minProperties']} properties")
        properties = node.get("properties") or {}
        for name in node.get("required") or []:
            if name not in value:
                errors.append(f"{_join(path, name)}: Required value")
        extra = node.get("additionalProperties")
        for key, item in value.items():
            if key in properties:
                if not (path == "" and key == "metadata"):
                    errors += validate(item, properties[key], _join(path, key))
            elif isinstance(extra, Mapping):
                errors += validate(item, extra, _join(path, key))
    for branch in node.get("allOf") or []:
        errors += validate(value, branch, path)
    if node.get("anyOf") and all(validate(value, b, path) for b in node["anyOf"]):
        bad("must validate at least one schema (anyOf)")
    if node.get("oneOf") and sum(not validate(value, b, path) for b in node["oneOf"]) != 1:
        bad("must validate one and only one schema (oneOf)")
    if isinstance(node.get("not"), Mapping) and not validate(value, node["not"], path):
        bad("must not validate the schema (not)")
    return errors


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def admit(obj: dict[str, Any], schema: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Prune, default and validate an object about to be stored: (stored form, errors)."""
    stored = default(prune(obj, schema, root=True), schema)
    return stored, validate(stored, schema)
