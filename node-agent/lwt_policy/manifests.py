"""Read Kubernetes objects from files in Kubernetes' own formats, for standalone mode.

Accepted: multi-document YAML (or JSON), where a document is one object or a list object
(`kind: List` as `kubectl get pods,configmaps -o yaml` prints it, or `PodList`,
`LwtRoutePolicyList`...). Kinds used: Pod, ConfigMap, Node, Namespace (v1), LwtRoutePolicy and
ClusterLwtRoutePolicy (lwt.dev/v1alpha1); other kinds are skipped and listed in
`ClusterObjects.ignored`, so a wider `kubectl get ... -o yaml` dump works as is. Every error
names the file, the document (1-based) and, inside a list, the item.
"""
from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml_rs

from lwt_policy import cluster_schema, schema
from lwt_policy.errors import ManifestError
from lwt_policy.objectmeta import identity_problems

# yaml-rs (Rust) parses a 10,000-pod dump ~10x faster than PyYAML's libyaml loader, whose
# Python-side construction dominated the agent's cold start (8.6 of 20 s measured). It
# refuses duplicate keys (YAML says they are an error; PyYAML kept the last one silently)
# and bounds alias expansion natively; it reads YAML 1.2 (no `<<` merge keys, `yes`/`on` are
# strings), and timestamps stay strings, as in the JSON the API server stores.
MAX_ALIAS_EXPANSION = 100_000  # values an alias-using file may expand to (alias bombs)
_ALIAS_LIMITS = yaml_rs.AliasLimits(max_total_replayed_events=MAX_ALIAS_EXPANSION)
_LINE = re.compile(r"at line (\d+)")
_AT = re.compile(r"YAML parse error at line (\d+), column (\d+)")
_MARKER = re.compile(r"---(\s|$)")


DEFAULT_NAMESPACE = "default"
KNOWN_KINDS: dict[str, str] = {
    "Pod": "v1",
    "ConfigMap": "v1",
    "Node": "v1",
    "Namespace": "v1",  # labels, for cluster policies' namespaceSelector
    schema.KIND: schema.API_VERSION,
    cluster_schema.KIND: schema.API_VERSION,
}
CLUSTER_SCOPED = frozenset({"Node", "Namespace", cluster_schema.KIND})
POLICY_KINDS = frozenset({schema.KIND, cluster_schema.KIND})


@dataclass(frozen=True)
class Located:
    """An object and where it was read from."""

    obj: dict[str, Any]
    path: str
    document: int
    item: int | None = None

    @property
    def where(self) -> str:
        text = f"{self.path}, document {self.document}"
        return text if self.item is None else f"{text}, items[{self.item}]"

    def error(self, message: str) -> ManifestError:
        return ManifestError(self.path, message, self.document, self.item)


@dataclass
class ClusterObjects:
    """The objects of a set of files, by kind; later files override earlier ones."""

    pods: list[dict[str, Any]] = field(default_factory=list)
    configmaps: list[dict[str, Any]] = field(default_factory=list)
    nodes: list[dict[str, Any]] = field(default_factory=list)
    namespaces: list[dict[str, Any]] = field(default_factory=list)
    policies: list[Located] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (where, kind)


def read_documents(path: str | Path) -> list[Located]:
    """Every object of one file, lists flattened. Raises ManifestError on unreadable input."""
    name = str(path)
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ManifestError(name, f"cannot read the file: {err.strerror or err}") from None
    try:
        parsed = yaml_rs.loads(text, parse_datetime=False, alias_limits=_ALIAS_LIMITS)
    except yaml_rs.YAMLDecodeError as err:
        raise ManifestError(name, f"invalid YAML{_describe(str(err))}",
                            _document_at(text, str(err))) from None
    # One document parses to its value, several to the list of them (a lone top-level list
    # is no Kubernetes object either way: each item is judged as a document).
    documents = parsed if isinstance(parsed, list) else [parsed]
    located: list[Located] = []
    for document, data in enumerate(documents, start=1):
        if data is None:  # empty document, e.g. a trailing `---`
            continue
        located += _flatten(data, name, document)
    return located


def _document_at(text: str, message: str) -> int:
    """The 1-based document holding the line an error message names (`---` lines start
    documents; one before any content starts the first)."""
    found = _LINE.search(message)
    if found is None:
        return 1
    before = text.splitlines()[: int(found.group(1)) - 1]
    markers = [i for i, line in enumerate(before) if _MARKER.match(line)]
    content_first = not markers or any(line.strip() and not line.lstrip().startswith("#")
                                       for line in before[: markers[0]])
    return len(markers) + (1 if content_first else 0)


def _describe(message: str) -> str:
    """` (line L, column C): what` from yaml-rs's message, which draws the offending line
    under it."""
    lines = [line for line in message.splitlines() if line.strip()]
    head = lines[0] if lines else message
    found = _AT.match(head)
    if found is None:
        return f": {head}"
    detail = lines[-1].strip() if len(lines) > 1 else "syntax error"
    return f" (line {found.group(1)}, column {found.group(2)}): {detail}"


# Kinds whose every key is read (sorted, joined into field paths, hashed into generations);
# of the others (Pods, Nodes: thousands of them) only the metadata the agent reads.
_DEEP_KEY_CHECK = POLICY_KINDS | {"ConfigMap"}


def _check_keys(loc: Located) -> None:
    """Kubernetes objects are JSON: every key is a string. YAML allows `1:`, `null:` or
    `true:` keys, which reached code that sorts or joins field names (TypeError)."""
    deep = loc.obj.get("kind") in _DEEP_KEY_CHECK
    meta = loc.obj.get("metadata")
    stack: list[tuple[Any, str]] = [(loc.obj, "")] if deep else [(meta, "metadata")]
    while stack:
        value, where = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise loc.error(f"{where or 'the top level'}: key {key!r} is not a string "
                                    "(Kubernetes field names and map keys are strings: quote "
                                    "it)")
                if isinstance(item, dict | list) and (deep or key in ("labels",
                                                                      "annotations")):
                    stack.append((item, f"{where}.{key}" if where else key))
        elif isinstance(value, list):
            stack.extend((item, f"{where}[{index}]") for index, item in enumerate(value)
                         if isinstance(item, dict | list))


def _flatten(data: Any, path: str, document: int) -> list[Located]:
    if not isinstance(data, dict):
        raise ManifestError(path, f"expected a Kubernetes object (a mapping), got "
                            f"{type(data).__name__}", document)
    kind = data.get("kind")
    if not isinstance(kind, str) or not kind:
        raise ManifestError(path, "the object has no kind", document)
    if kind == "List" or (kind.endswith("List") and "items" in data):
        items = data.get("items")
        if items is None:
            items = []
        if not isinstance(items, list):
            raise ManifestError(path, f"{kind}.items must be a list", document)
        out = []
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise ManifestError(path, f"expected an object, got {type(item).__name__}",
                                    document, index)
            if kind != "List" and "kind" not in item:
                # Typed lists (PodList) may omit kind/apiVersion on their items.
                item = {"kind": kind[: -len("List")], "apiVersion": data.get("apiVersion"),
                        **item}
            out.append(Located(item, path, document, index))
        return out
    return [Located(data, path, document)]


def _check(loc: Located) -> None:
    obj = loc.obj
    kind = obj.get("kind")
    if not isinstance(kind, str) or not kind:
        raise loc.error("the object has no kind")
    expected = KNOWN_KINDS.get(kind)
    if expected is None:
        return
    _check_keys(loc)
    if obj.get("apiVersion") != expected:
        raise loc.error(f"{kind} must have apiVersion {expected}, got {obj.get('apiVersion')!r}")
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not meta.get("name"):
        raise loc.error(f"{kind} has no metadata.name")
    problems = identity_problems(meta)
    if kind in POLICY_KINDS:
        # A policy with a well-typed but invalid name is refused on its own (its status
        # says why) by the policy validation; only what it is keyed by must be strings.
        problems = [p for p in problems if "must be a string" in p.message]
    if problems:
        raise loc.error(f"{kind} {problems[0]}")
    if kind == "ConfigMap":
        _check_configmap(loc)


def _check_configmap(loc: Located) -> None:
    binary = loc.obj.get("binaryData") or {}
    if not isinstance(binary, dict):
        raise loc.error("ConfigMap binaryData must be a mapping of key to base64 data")
    for key, value in binary.items():
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise loc.error(f"ConfigMap binaryData[{key!r}] is not valid base64 "
                            "(kubectl prints binaryData base64-encoded)") from None


def _with_namespace(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] in CLUSTER_SCOPED or obj["metadata"].get("namespace"):
        return obj
    # kubectl puts an object without a namespace into "default": do the same.
    return {**obj, "metadata": {**obj["metadata"], "namespace": DEFAULT_NAMESPACE}}


def load_cluster_objects(paths: Iterable[str | Path]) -> ClusterObjects:
    """Objects of every file, by kind. An object named again (same kind, namespace, name)
    replaces the earlier one, so a file given twice does not duplicate anything."""
    by_key: dict[tuple[str, str, str], Located] = {}
    ignored: list[tuple[str, str]] = []
    for path in paths:
        for loc in read_documents(path):
            _check(loc)
            kind = loc.obj["kind"]
            if kind not in KNOWN_KINDS:
                ignored.append((loc.where, kind))
                continue
            obj = _with_namespace(loc.obj)
            meta = obj["metadata"]
            key = (kind, meta.get("namespace", ""), meta["name"])
            by_key.pop(key, None)  # re-insert: the later definition keeps its file's order
            by_key[key] = Located(obj, loc.path, loc.document, loc.item)
    result = ClusterObjects(ignored=ignored)
    for (kind, _, _), loc in by_key.items():
        if kind == "Pod":
            result.pods.append(loc.obj)
        elif kind == "ConfigMap":
            result.configmaps.append(loc.obj)
        elif kind == "Node":
            result.nodes.append(loc.obj)
        elif kind == "Namespace":
            result.namespaces.append(loc.obj)
        else:
            result.policies.append(loc)
    return result


def assume_scheduled_here(pods: Iterable[Mapping[str, Any]], node_name: str
                          ) -> list[dict[str, Any]]:
    """Pods written by hand for a host without Kubernetes often have no spec.nodeName: take
    those as scheduled on this node. Pods that name another node are left alone."""
    out = []
    for pod in pods:
        spec = dict(pod.get("spec") or {})
        if not spec.get("nodeName"):
            spec["nodeName"] = node_name
            pod = {**pod, "spec": spec}
        out.append(dict(pod))
    return out
