"""Read Kubernetes objects from files in Kubernetes' own formats, for standalone mode.

Accepted: multi-document YAML (or JSON), where a document is one object or a list object
(`kind: List` as `kubectl get pods,configmaps -o yaml` prints it, or `PodList`,
`LwtRoutePolicyList`...). Kinds used: Pod, ConfigMap, Node (v1) and LwtRoutePolicy
(lwt.dev/v1alpha1); other kinds are skipped and listed in `ClusterObjects.ignored`, so a wider
`kubectl get ... -o yaml` dump works as is. Every error names the file, the document (1-based)
and, inside a list, the item.
"""
from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lwt_policy import schema
from lwt_policy.errors import ManifestError
from lwt_policy.objectmeta import identity_problems

# libyaml's safe loader parses a 10,000-pod dump ~4x faster and with far less memory than
# the pure-Python one; fall back where PyYAML was built without libyaml.
_BASE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# A document that uses YAML aliases may expand to at most this many values, and to at
# most _ALIAS_RATIO times the values it spells out: a 9-level "billion laughs" document of a
# few hundred bytes would otherwise expand to ~400 million values in validation.
MAX_ALIAS_EXPANSION = 100_000
_ALIAS_RATIO = 10
_MERGE = "tag:yaml.org,2002:merge"
_STR = "tag:yaml.org,2002:str"


class _StrictLoader(_BASE_LOADER):  # type: ignore[misc,valid-type]
    """The safe loader, refusing duplicate keys (YAML says they are an error; PyYAML keeps
    the last one silently) and counting alias uses so an alias bomb can be refused."""

    def construct_document(self, node: Any) -> Any:
        self.alias_uses = 0
        self.values = 0
        return super().construct_document(node)

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        if node in self.constructed_objects:
            self.alias_uses += 1
        else:
            self.values += 1
        return super().construct_object(node, deep)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:
                continue  # `<<: *base` then overriding a key is what merge keys are for
            if key_node.tag != _STR:
                # Kubernetes objects are JSON: keys are strings. `1:`, `null:` or `true:`
                # keys would reach code that sorts or joins field names.
                shown = (repr(key_node.value) if isinstance(key_node.value, str)
                         else f"({type(key_node).__name__.removesuffix('Node').lower()})")
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"key {shown} is not a string (Kubernetes field names and map keys are "
                    "strings: quote it)", key_node.start_mark)
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"duplicate key {key_node.value!r} (the API server refuses duplicate "
                    "fields: keep one)", key_node.start_mark)
            seen.add(key_node.value)
        return super().construct_mapping(node, deep)


DEFAULT_NAMESPACE = "default"
KNOWN_KINDS: dict[str, str] = {
    "Pod": "v1",
    "ConfigMap": "v1",
    "Node": "v1",
    schema.KIND: schema.API_VERSION,
}
CLUSTER_SCOPED = frozenset({"Node"})


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
    policies: list[Located] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (where, kind)


def read_documents(path: str | Path) -> list[Located]:
    """Every object of one file, lists flattened. Raises ManifestError on unreadable input."""
    name = str(path)
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ManifestError(name, f"cannot read the file: {err.strerror or err}") from None
    located: list[Located] = []
    reading = 1  # the document being read (1-based), for error messages
    loader = _StrictLoader(text)
    try:
        while loader.check_data():
            data = loader.get_data()
            document, reading = reading, reading + 1
            if data is None:  # empty document, e.g. a trailing `---`
                continue
            if loader.alias_uses:
                _check_expansion(data, loader.values, name, document)
            located += _flatten(data, name, document)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ManifestError(name, f"invalid YAML{where}: {problem}", reading) from None
    finally:
        loader.dispose()
    return located


def _check_expansion(data: Any, values: int, path: str, document: int) -> None:
    """Refuse a document whose aliases expand it past the bounds (counted without
    expanding: the walk stops at the bound)."""
    limit = min(MAX_ALIAS_EXPANSION, max(1_000, _ALIAS_RATIO * values))
    count = 0
    stack = [data]
    while stack:
        value = stack.pop()
        count += 1
        if count > limit:
            raise ManifestError(path, f"YAML aliases expand this document past {limit} "
                                "values (an alias bomb?): write the values out, or use "
                                "fewer aliases", document)
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


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
    if obj.get("apiVersion") != expected:
        raise loc.error(f"{kind} must have apiVersion {expected}, got {obj.get('apiVersion')!r}")
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not meta.get("name"):
        raise loc.error(f"{kind} has no metadata.name")
    problems = identity_problems(meta)
    if kind == schema.KIND:
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
