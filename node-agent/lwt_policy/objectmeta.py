"""ObjectMeta checked as the API server checks it (apimachinery's ValidateObjectMeta).

Standalone mode has no API server: without these checks a policy named `team-a/web` or a
namespace `2024-01-01T00:00:00Z` would be attached under an owner the agent can never
garbage-collect, and a non-integer `generation` would crash the agent. Rules (Kubernetes'):

- `metadata.name` of a custom resource: a DNS-1123 subdomain (at most 253 characters of
  lowercase alphanumerics, `-` and `.`, starting and ending alphanumeric);
- `metadata.namespace`: a DNS-1123 label (at most 63 characters of lowercase alphanumerics
  and `-`, starting and ending alphanumeric);
- `generation`: an integer >= 0; `uid`, `resourceVersion`: strings; `creationTimestamp`,
  `deletionTimestamp`: RFC 3339 date-times; `labels`: qualified-name keys and label values;
  `annotations`: qualified-name keys and string values; `finalizers`: strings.
"""
from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from lwt_policy.errors import Problem, join_path
from lwt_policy.selectors import label_key_error, label_value_error

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
MAX_LABEL = 63
MAX_SUBDOMAIN = 253
RULE = "object-meta"


def dns_subdomain_error(value: str) -> str | None:
    """Why `value` is not a DNS-1123 subdomain, or None."""
    if len(value) > MAX_SUBDOMAIN:
        return f"must be at most {MAX_SUBDOMAIN} characters"
    if not _DNS_SUBDOMAIN.fullmatch(value):
        return ("must be a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', "
                "starting and ending with a letter or digit (e.g. 'web-counters')")
    return None


def dns_label_error(value: str) -> str | None:
    """Why `value` is not a DNS-1123 label, or None."""
    if len(value) > MAX_LABEL:
        return f"must be at most {MAX_LABEL} characters"
    if not _DNS_LABEL.fullmatch(value):
        return ("must be a DNS-1123 label: lowercase letters, digits and '-', starting and "
                "ending with a letter or digit (e.g. 'shop')")
    return None


def identity_problems(meta: Any) -> list[Problem]:
    """Problems of `metadata.name` and `metadata.namespace` only: what the agent keys
    objects by. A missing name is left to the caller (it reports it its own way)."""
    if not isinstance(meta, Mapping):
        return [Problem("metadata", f"must be a mapping, got {type(meta).__name__}", RULE)]
    problems: list[Problem] = []
    name = meta.get("name")
    if name is not None:
        if not isinstance(name, str):
            problems.append(Problem("metadata.name", f"must be a string, got {name!r}", RULE))
        elif name and (why := dns_subdomain_error(name)):
            problems.append(Problem("metadata.name", f"{_short(name)} {why}", RULE))
    namespace = meta.get("namespace")
    if namespace is not None:
        if not isinstance(namespace, str):
            problems.append(Problem("metadata.namespace",
                                    f"must be a string, got {_short(namespace)}", RULE))
        elif namespace and (why := dns_label_error(namespace)):
            problems.append(Problem("metadata.namespace", f"{_short(namespace)} {why}", RULE))
    return problems


def metadata_problems(meta: Any) -> list[Problem]:
    """Every problem of an object's metadata the API server would refuse."""
    problems = identity_problems(meta)
    if not isinstance(meta, Mapping):
        return problems
    generation = meta.get("generation")
    if generation is not None and (isinstance(generation, bool)
                                   or not isinstance(generation, int) or generation < 0):
        problems.append(Problem("metadata.generation",
                                f"must be an integer >= 0, got {_short(generation)}", RULE))
    for key in ("uid", "resourceVersion"):
        value = meta.get(key)
        if value is not None and not isinstance(value, str):
            problems.append(Problem(f"metadata.{key}", f"must be a string, got "
                                    f"{_short(value)}", RULE))
    for key in ("creationTimestamp", "deletionTimestamp"):
        value = meta.get(key)
        if value is not None and not _is_timestamp(value):
            problems.append(Problem(f"metadata.{key}", "must be an RFC 3339 date-time such "
                                    f"as 2026-01-01T00:00:00Z, got {_short(value)}", RULE))
    problems += _string_map(meta.get("labels"), "metadata.labels", label_value_error)
    problems += _string_map(meta.get("annotations"), "metadata.annotations", _any_string)
    finalizers = meta.get("finalizers")
    if finalizers is not None and (not isinstance(finalizers, list)
                                   or not all(isinstance(f, str) for f in finalizers)):
        problems.append(Problem("metadata.finalizers", "must be a list of strings", RULE))
    return problems


def _string_map(value: Any, path: str, value_error: Any) -> list[Problem]:
    if value is None:
        return []
    if not isinstance(value, Mapping):
        return [Problem(path, f"must be a mapping of string to string, got "
                        f"{type(value).__name__}", RULE)]
    problems = []
    for key, item in value.items():
        if not isinstance(key, str):
            problems.append(Problem(path, f"key {key!r} must be a string", RULE))
            continue
        why = label_key_error(key) or value_error(item)
        if why:
            problems.append(Problem(join_path(path, key), why, RULE))
    return problems


def _any_string(value: Any) -> str | None:
    return None if isinstance(value, str) else f"value {_short(value)} must be a string"


def _is_timestamp(value: Any) -> bool:
    if isinstance(value, dt.datetime):  # YAML parses an unquoted date-time itself
        return True
    if not isinstance(value, str):
        return False
    try:
        dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return "T" in value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
