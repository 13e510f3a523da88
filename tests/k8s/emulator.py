"""A Kubernetes API emulator for tests: kmock's `KubernetesEmulator` with the gaps filled that stop
kopf and the node agents from working against it.

kmock (by kopf's author) provides the HTTP server plumbing, request parsing, API discovery
(`/api`, `/apis`, `/apis/<group>/<version>` with the bundled list of built-in resources), the
Kubernetes `Status` error format, the object store with per-object history (`.objects`) and the
request DSL that lets a test inject faults (`emulator['list pods'] << 503`). kmock 0.8's own
object semantics are a JSON dict merge and nothing more; a real API server does much more, and
kopf and the agent depend on it. Each gap below is filled here and has a test of its own in
`tests/k8s/test_emulator.py` that shows the real-API behaviour it stands in for:

1. resourceVersion and uid: every write gets a new cluster-wide increasing `resourceVersion`
   (kmock: none, so kopf's finalizer JSON patch with `test /metadata/resourceVersion` fails);
   create sets `uid`, `creationTimestamp`, `generation`. Stale writes are rejected: 409 Conflict
   for a PUT or merge patch that carries an old resourceVersion, 422 for a failed JSON-patch
   `test` op, as kopf expects.
2. Namespace in objects: the namespace of the URL is written into `metadata.namespace`
   (kmock stores the body as sent, and its watch then drops events of objects without
   `metadata.namespace` for namespaced watches).
3. Selectors: `labelSelector` and `fieldSelector` are applied to list and watch (kmock ignores
   both); an object that stops or starts matching shows up as DELETED or ADDED in a watch, as on a
   real server; unsupported field paths get 400 (see `k8s_selectors`).
4. The `/status` subresource: for resources that declare it, writes to the main resource ignore
   `.status` and writes to `/status` ignore everything but `.status` (kmock treats both the same).
   `metadata.generation` increases only when something other than metadata and status changes,
   and when the deletion of an object with finalizers starts (apiserver `markAsDeleting`).
5. Patch types: JSON merge patch (RFC 7386, `null` deletes), JSON patch (RFC 6902, via
   `jsonpatch`), strategic merge patch for built-in resources only (approximated as a merge patch:
   lists are replaced, not merged by key; custom resources answer 415 like a real server), PUT
   (replace, absent in kmock). Server-side apply answers 415.
6. Deletion: with finalizers, DELETE sets `deletionTimestamp` (once); the object is removed with a
   DELETED event when the last finalizer goes; no finalizer may be added after deletion started
   (422); DELETE preconditions (uid, resourceVersion) are honoured.
7. Watches: resumable from a `resourceVersion` (events are kept in a bounded log; a version older
   than the log answers with an ERROR event 410 Gone, as etcd compaction does); without one (or
   with "0") the current objects come first as ADDED; `sendInitialEvents` ends the initial
   objects with the BOOKMARK kopf and client-go expect; `timeoutSeconds` closes the stream.
   kmock's watch streams all objects on every (re)connect and cannot resume.
8. Lists carry the real `metadata.resourceVersion` (kmock: "...") and honour `limit`/`continue`.
   Namespace objects can be addressed (kmock's path parser fails on /api/v1/namespaces/<name>).
9. CRDs: a CRD (from a YAML file, or POSTed to apiextensions.k8s.io/v1) registers its resource for
   discovery with its scope, kind, short names, `status` subresource and `selectableFields`.
10. Structural schemas: custom resources are pruned, defaulted and validated against the CRD's
   openAPIV3Schema on every write (`structural.py`; kmock stores anything). CEL rules are not.
11. Speed: object requests bypass kmock's reaction matching (quadratic in the request count)
   while no test reaction exists.

What it still does not do is listed in docs/testing.md (no admission, no CEL validation, no RBAC,
no garbage collection, no controllers, no scheduler, no kubelet).
"""
from __future__ import annotations

import asyncio
import base64
import bisect
import copy
import datetime
import json
import re
import threading
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp.web
import attrs
import jsonpatch
import kmock
import yaml
from kmock._internal import enums, rendering

from tests.k8s import k8s_selectors, structural

T = TypeVar("T")

ALL_VERBS = frozenset(
    {"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}
)
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

ObjectKey = tuple[kmock.resource, str | None, str]
_NAMESPACES = kmock.resource("", "v1", "namespaces")
_NAMESPACE_OBJECT_PATH = re.compile(r"^/api/v1/namespaces(/[^/]+)?(/status|/finalize)?/?$")


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(status: int, reason: str, message: str) -> kmock.KubernetesError:
    # details={} keeps kmock from attaching a server-side traceback to an expected API error.
    return kmock.KubernetesError(status=status, reason=reason, message=message, details={})


def _strict(request: kmock.Request) -> bool:
    return request.params.get("fieldValidation") == "Strict"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: dicts merge recursively, `null` deletes, the rest replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _without(obj: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in keys}


@dataclass(frozen=True)
class WatchEvent:
    """One change, kept in the resource's event log so that watches can resume from a version."""

    revision: int
    type: str  # ADDED, MODIFIED, DELETED
    obj: dict[str, Any]
    old: dict[str, Any] | None  # the state before, to tell selector entries/exits apart


@dataclass
class _ResourceState:
    log: list[WatchEvent]
    changed: asyncio.Condition
    revisions: list[int] = dataclass_field(default_factory=list)  # log[i].revision, for bisection
    # The oldest revision a watch can resume from; older ones get 410 Gone.
    compacted: int = 0


@attrs.define(kw_only=True)
class ApiEmulator(kmock.KubernetesEmulator):
    """The emulated API server (an aiohttp handler). Start it with `EmulatedApiServer`."""

    history_limit: int = 20  # versions kept per object in kmock's `.objects` history
    request_log_limit: int = 1000  # kmock's `.requests` log, while no test reactions exist
    _builtin_reactions: int = attrs.field(default=0, init=False)
    event_log_limit: int = 5000  # watch events kept per resource for resumption
    # etcd's revision: never "0" (which a watch would read as "any version, send the state").
    _revision: int = attrs.field(default=1, init=False)
    _states: dict[kmock.resource, _ResourceState] = attrs.field(factory=dict, init=False)
    _selectable: dict[kmock.resource, frozenset[str]] = attrs.field(factory=dict, init=False)
    _crd_resources: dict[str, list[kmock.resource]] = attrs.field(factory=dict, init=False)
    _schemas: dict[kmock.resource, Mapping[str, Any]] = attrs.field(factory=dict, init=False)
    _custom: set[kmock.resource] = attrs.field(factory=set, init=False)  # not kmock's bundled

    def __attrs_post_init__(self) -> None:
        # The parent registers its fallbacks for list/watch/fetch/create/update(PATCH)/delete as
        # self._serve_*; the overrides below replace them. PUT and collection DELETE have no kmock
        # action, so they are added by method. User reactions (fault injection) take precedence.
        super().__attrs_post_init__()
        self.fallback[enums.method.PUT] << self._serve_replace
        self.fallback[enums.method.DELETE] << self._serve_delete_collection
        self._builtin_reactions = len(self._payloads)
        with warnings.catch_warnings():  # kmock 0.8 uses importlib.resources.read_binary
            warnings.simplefilter("ignore", DeprecationWarning)
            self.resources.load_bundled()

    # --- resources -------------------------------------------------------------------------

    def register_resource(
        self,
        group: str,
        version: str,
        plural: str,
        *,
        kind: str,
        namespaced: bool,
        singular: str | None = None,
        shortnames: Iterable[str] = (),
        categories: Iterable[str] = (),
        status_subresource: bool = True,
        selectable_fields: Iterable[str] = (),
    ) -> kmock.resource:
        """Serve a custom resource (what a CRD does; `register_crd` reads one)."""
        resource = kmock.resource(group, version, plural)
        self.resources[resource] = kmock.ResourceInfo(
            kind=kind,
            singular=singular or kind.lower(),
            namespaced=namespaced,
            verbs=set(ALL_VERBS),
            shortnames=set(shortnames),
            categories=set(categories),
            subresources={"status"} if status_subresource else set(),
        )
        self._selectable[resource] = frozenset(selectable_fields)
        self._custom.add(resource)
        return resource

    def register_crd(self, crd: Mapping[str, Any]) -> list[kmock.resource]:
        """Serve the resource a CustomResourceDefinition declares (every served version)."""
        spec = crd["spec"]
        names = spec["names"]
        resources = []
        for version in spec["versions"]:
            if not version.get("served", True):
                continue
            resource = kmock.resource(spec["group"], version["name"], names["plural"])
            schema = (version.get("schema") or {}).get("openAPIV3Schema")
            if schema:
                self._schemas[resource] = schema
            resources.append(
                self.register_resource(
                    spec["group"],
                    version["name"],
                    names["plural"],
                    kind=names["kind"],
                    singular=names.get("singular"),
                    namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                    shortnames=names.get("shortNames", ()),
                    categories=names.get("categories", ()),
                    status_subresource="status" in (version.get("subresources") or {}),
                    selectable_fields=[
                        field["jsonPath"].lstrip(".")
                        for field in version.get("selectableFields", ())
                    ],
                )
            )
        self._crd_resources[crd["metadata"]["name"]] = resources
        return resources

    def register_crd_file(self, path: Path) -> list[kmock.resource]:
        resources: list[kmock.resource] = []
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                resources += self.register_crd(doc)
        return resources

    def _admit(self, key: ObjectKey, obj: dict[str, Any], strict: bool = False) -> dict[str, Any]:
        """Prune, default and validate against the CRD's schema, as the API server does.
        `strict`: the request asked for fieldValidation=Strict (kubectl's default)."""
        schema = self._schemas.get(key[0])
        if schema is None:
            return obj
        if strict and (unknown := structural.unknown_fields(obj, schema)):
            raise _error(400, "BadRequest", "strict decoding error: " + ", ".join(
                f'unknown field "{path}"' for path in unknown))
        stored, errors = structural.admit(obj, schema)
        if errors:
            kind = self._info(key[0]).kind
            raise _error(422, "Invalid", f'{kind}.{key[0].group} "{key[2]}" is invalid: '
                         f"[{', '.join(errors)}]")
        return stored

    async def _serve_version(self, request: kmock.Request) -> rendering.Payload:
        # kmock gives subresources the verbs of their resource; a real server lists only these.
        result = await super()._serve_version(request)
        for entry in result.get("resources", []):
            if entry["name"].endswith("/status"):
                entry["verbs"] = ["get", "patch", "update"]
        return result

    def _info(self, resource: kmock.resource) -> kmock.ResourceInfo:
        if resource not in self.resources:
            raise kmock.KubernetesResourceNotFoundError()
        return self.resources[resource]

    def _has_status(self, resource: kmock.resource) -> bool:
        return "status" in self._info(resource).subresources

    def _is_builtin(self, resource: kmock.resource) -> bool:
        return resource not in self._custom

    def _state(self, resource: kmock.resource) -> _ResourceState:
        if resource not in self._states:
            self._states[resource] = _ResourceState(log=[], changed=asyncio.Condition())
        return self._states[resource]

    # --- addressing ------------------------------------------------------------------------

    def _key(self, request: kmock.Request, name: str | None = None) -> ObjectKey:
        assert request.resource is not None
        info = self._info(request.resource)
        if info.namespaced and not request.namespace:
            raise _error(404, "NotFound", f"{request.resource.plural} is namespaced: use "
                         f"/namespaces/<namespace>/{request.resource.plural}")
        if not info.namespaced and request.namespace:
            raise _error(404, "NotFound", f"{request.resource.plural} is cluster-scoped")
        return (request.resource, request.namespace if info.namespaced else None,
                name or request.name or "")

    def _current(self, key: ObjectKey) -> dict[str, Any] | None:
        if key not in self._objects or self._objects[key].deleted:
            return None
        return copy.deepcopy(self._objects[key].raw)

    def _require(self, key: ObjectKey) -> dict[str, Any]:
        obj = self._current(key)
        if obj is None:
            raise _error(404, "NotFound",
                         f'{key[0].plural} "{key[2]}" not found')
        return obj

    def _check_subresource(self, request: kmock.Request) -> bool:
        """True for /status; 404 for any other subresource (none are emulated)."""
        if request.subresource is None:
            return False
        assert request.resource is not None
        if request.subresource == "status" and self._has_status(request.resource):
            return True
        raise _error(404, "NotFound",
                     f"the server could not find the requested resource "
                     f"({request.resource.plural}/{request.subresource} is not emulated)")

    # --- the write path ----------------------------------------------------------------------

    async def _commit(
        self, key: ObjectKey, event_type: str, new: dict[str, Any], old: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Store a new state (or a deletion) under a fresh resourceVersion and wake watchers."""
        resource = key[0]
        self._revision += 1
        new = copy.deepcopy(new)
        new["metadata"]["resourceVersion"] = str(self._revision)
        if event_type == "DELETED":
            self._objects[key].delete()
        elif key not in self._objects:
            self._objects[key] = new
        else:
            self._objects[key].history.append(new)
        history = self._objects[key].history
        if len(history) > self.history_limit:
            del history[: len(history) - self.history_limit]

        state = self._state(resource)
        state.log.append(WatchEvent(self._revision, event_type, new, old))
        state.revisions.append(self._revision)
        if len(state.log) > self.event_log_limit:
            dropped = state.log[: len(state.log) - self.event_log_limit]
            del state.log[: len(dropped)]
            del state.revisions[: len(dropped)]
            state.compacted = dropped[-1].revision
        async with state.changed:
            state.changed.notify_all()
        return copy.deepcopy(new)

    async def _write(
        self, key: ObjectKey, old: dict[str, Any], new: dict[str, Any], *, status_only: bool,
        strict: bool = False,
    ) -> dict[str, Any]:
        """Apply the server-side rules of an update (PUT or PATCH) and commit it."""
        resource = key[0]
        has_status = self._has_status(resource)
        old_meta, new_meta = old["metadata"], new.get("metadata") or {}

        sent_version = new_meta.get("resourceVersion")
        if sent_version not in (None, "") and sent_version != old_meta["resourceVersion"]:
            raise _error(409, "Conflict",
                         f'Operation cannot be fulfilled on {resource.plural} "{key[2]}": the '
                         f"object has been modified; please apply your changes to the latest "
                         f"version and try again")
        if new_meta.get("uid") not in (None, old_meta["uid"]):
            raise _error(409, "Conflict", f"Precondition failed: UID in object meta: "
                         f"{new_meta.get('uid')}, UID in storage: {old_meta['uid']}")

        if status_only:
            # /status: everything but .status comes from the stored object.
            result = copy.deepcopy(old)
            if "status" in new:
                result["status"] = new["status"]
            else:
                result.pop("status", None)
        else:
            result = copy.deepcopy(new)
            if has_status:
                # The main resource ignores .status when the status subresource exists.
                if "status" in old:
                    result["status"] = old["status"]
                else:
                    result.pop("status", None)
            meta = result.setdefault("metadata", {})
            # Server-managed fields cannot be changed by clients.
            for field in ("uid", "creationTimestamp", "generation", "name", "namespace",
                          "deletionTimestamp", "deletionGracePeriodSeconds"):
                if field in old_meta:
                    meta[field] = old_meta[field]
                else:
                    meta.pop(field, None)
            if old_meta.get("deletionTimestamp"):
                added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
                if added:
                    raise _error(422, "Invalid",
                                 f"metadata.finalizers: Forbidden: no new finalizers can be added "
                                 f"if the object is being deleted, found new finalizers "
                                 f"{sorted(added)}")
            result = self._admit(key, result, strict)
            meta = result["metadata"]
            ignored = ("metadata", "status") if has_status else ("metadata",)
            if _without(result, *ignored) != _without(old, *ignored):
                meta["generation"] = old_meta.get("generation", 1) + 1
            if not meta.get("finalizers"):
                meta.pop("finalizers", None)

        if status_only:
            result = self._admit(key, result, strict)
        result["metadata"]["resourceVersion"] = old_meta["resourceVersion"]
        if result == old:
            return old  # a no-op write keeps the resourceVersion and sends no event
        if result["metadata"].get("deletionTimestamp") and not result["metadata"].get("finalizers"):
            # The last finalizer is gone: the deletion completes.
            return await self._commit(key, "DELETED", result, old)
        return await self._commit(key, "MODIFIED", result, old)

    # --- handlers (kmock fallbacks) ------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock's path parser reads ".../namespaces/<x>" as a namespace prefix, so the Namespace
        # objects themselves (/api/v1/namespaces[/<name>[/status]]) fail to parse (HTTP 500).
        # Such paths are re-addressed to a placeholder namespace "-" that _handle() removes.
        if match := _NAMESPACE_OBJECT_PATH.match(raw_request.path):
            path = "/api/v1/namespaces/-/namespaces" + (match.group(1) or "") + (
                match.group(2) or "")
            url = raw_request.rel_url
            raw_request = raw_request.clone(rel_url=url.with_path(path).with_query(url.query))
        return await super().__call__(raw_request)

    def _direct_route(self, request: kmock.Request) -> Callable[..., Any] | None:
        """The object handler for a request, when no test reaction could intercept it.

        kmock matches every request against every reaction by re-filtering its whole request
        log (quadratic: 2,000 pod creations took 270 s). Without user reactions there is nothing
        to match, so object requests go straight to their handler and the log is kept short.
        """
        if len(self._payloads) != self._builtin_reactions:
            return None  # a test added reactions: let kmock match them
        if request.resource is None or request.resource.plural is None:
            return None  # discovery: rare, served by kmock
        if request.method == enums.method.PUT:
            return self._serve_replace
        routes: dict[enums.action | None, Callable[..., Any]] = {
            enums.action.WATCH: self._serve_watch,
            enums.action.LIST: self._serve_list,
            enums.action.FETCH: self._serve_fetch,
            enums.action.CREATE: self._serve_create,
            enums.action.UPDATE: self._serve_update,
            enums.action.DELETE: self._serve_delete,
        }
        if request.action is None and request.method == enums.method.DELETE:
            return self._serve_delete_collection
        return routes.get(request.action)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if request.resource == _NAMESPACES and request.namespace == "-":
            # kmock's reactions match requests by identity against its request log: swap it.
            evolved = attrs.evolve(request, namespace=None)
            for index in range(len(self._requests) - 1, -1, -1):
                if self._requests[index] is request:
                    self._requests[index] = evolved
                    break
            request = evolved
        route = self._direct_route(request)
        if route is not None:
            if len(self._requests) > self.request_log_limit:
                del self._requests[: len(self._requests) - self.request_log_limit]
            return await rendering.Response(payload=route)(request)
        # Skip KubernetesEmulator._handle: it mutates its store before any reaction runs, with the
        # plain dict merge this class replaces. The fallbacks below do all state changes.
        return await kmock.RawHandler._handle(self, request)

    async def _serve_fetch(self, request: kmock.Request) -> rendering.Payload:
        self._check_subresource(request)
        async with self._lock:
            return self._require(self._key(request))

    async def _serve_create(self, request: kmock.Request) -> rendering.Payload:
        assert request.resource is not None
        if request.subresource is not None:
            raise _error(405, "MethodNotAllowed", "POST to a subresource is not emulated")
        body = request.data
        if not isinstance(body, Mapping):
            raise _error(400, "BadRequest", "the request body must be a JSON object")
        obj = copy.deepcopy(dict(body))
        meta = obj.setdefault("metadata", {})
        info = self._info(request.resource)
        if info.namespaced:
            if meta.get("namespace") not in (None, request.namespace):
                raise _error(400, "BadRequest", "the namespace of the provided object does not "
                             "match the namespace sent on the request")
            meta["namespace"] = request.namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        name = meta.get("name") or ""
        if not _NAME_RE.match(name) or len(name) > 253:
            raise _error(422, "Invalid", f"metadata.name: Invalid value: {name!r}: a lowercase "
                         f"RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                         f"'-' or '.'")
        key = self._key(request, name)
        group = request.resource.group
        obj["apiVersion"] = f"{group}/{request.resource.version}" if group else "v1"
        obj["kind"] = info.kind
        if self._has_status(request.resource) and not self._is_builtin(request.resource):
            obj.pop("status", None)  # custom resources drop .status on create
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        for field in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(field, None)
        obj = self._admit(key, obj, _strict(request))
        async with self._lock:
            if self._current(key) is not None:
                raise _error(409, "AlreadyExists",
                             f'{request.resource.plural} "{name}" already exists')
            if request.resource == kmock.resource("apiextensions.k8s.io", "v1",
                                                  "customresourcedefinitions"):
                self.register_crd(obj)
            created = await self._commit(key, "ADDED", obj, None)
        return kmock.Response(status=201, payload=created)

    async def _serve_replace(self, request: kmock.Request) -> rendering.Payload:
        if request.resource is None or request.name is None:
            raise kmock.KubernetesEndpointNotFoundError()
        status_only = self._check_subresource(request)
        if not isinstance(request.data, Mapping):
            raise _error(400, "BadRequest", "the request body must be a JSON object")
        async with self._lock:
            key = self._key(request)
            old = self._require(key)
            return await self._write(key, old, dict(request.data), status_only=status_only,
                                     strict=_strict(request))

    async def _serve_update(self, request: kmock.Request) -> rendering.Payload:  # PATCH
        assert request.resource is not None
        status_only = self._check_subresource(request)
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
        async with self._lock:
            key = self._key(request)
            old = self._require(key)
            if content_type == JSON_PATCH:
                try:
                    new = jsonpatch.apply_patch(old, request.data)
                except jsonpatch.JsonPatchTestFailed as exc:
                    raise _error(422, "Invalid", f"the server rejected our request due to an "
                                 f"error in our request: {exc}") from exc
                except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                    raise _error(422, "Invalid", f"invalid JSON patch: {exc}") from exc
            elif content_type == MERGE_PATCH or (
                content_type == STRATEGIC_MERGE_PATCH and self._is_builtin(request.resource)
            ):
                if not isinstance(request.data, Mapping):
                    raise _error(400, "BadRequest", "a merge patch must be a JSON object")
                new = merge_patch(old, request.data)
            elif content_type == STRATEGIC_MERGE_PATCH:
                raise _error(415, "UnsupportedMediaType", "the body of the request was in an "
                             "unknown format - accepted media types include: "
                             "application/json-patch+json, application/merge-patch+json")
            else:
                raise _error(415, "UnsupportedMediaType", f"patch type {content_type!r} is not "
                             f"emulated (server-side apply is not supported)")
            return await self._write(key, old, new, status_only=status_only,
                                     strict=_strict(request))

    async def _serve_delete(self, request: kmock.Request) -> rendering.Payload:
        if request.name is None:
            return await self._serve_delete_collection(request)
        if request.subresource is not None:
            raise _error(405, "MethodNotAllowed", "DELETE of a subresource")
        options = request.data if isinstance(request.data, Mapping) else {}
        preconditions = options.get("preconditions") or {}
        async with self._lock:
            key = self._key(request)
            old = self._require(key)
            meta = old["metadata"]
            for field in ("uid", "resourceVersion"):
                if preconditions.get(field) not in (None, meta[field]):
                    raise _error(409, "Conflict", f"Precondition failed: {field} in "
                                 f"precondition: {preconditions[field]}, {field} in object "
                                 f"meta: {meta[field]}")
            return await self._delete(key, old)

    async def _delete(self, key: ObjectKey, old: dict[str, Any]) -> dict[str, Any]:
        meta = old["metadata"]
        if not meta.get("finalizers"):
            return await self._commit(key, "DELETED", old, old)
        if meta.get("deletionTimestamp"):
            return old  # already being deleted: nothing changes
        new = copy.deepcopy(old)
        new["metadata"].update(
            deletionTimestamp=_now(),
            deletionGracePeriodSeconds=0,
            generation=meta.get("generation", 1) + 1,
        )
        return await self._commit(key, "MODIFIED", new, old)

    async def _serve_delete_collection(self, request: kmock.Request) -> rendering.Payload:
        if request.resource is None or request.resource.plural is None or request.name:
            raise kmock.KubernetesEndpointNotFoundError()
        labels, fields = self._selectors(request)
        async with self._lock:
            deleted = []
            for key, obj in self._matching(request, labels, fields):
                deleted.append(await self._delete(key, obj))
        return self._list_body(request.resource, deleted, str(self._revision))

    # --- reads ---------------------------------------------------------------------------------

    def _selectors(
        self, request: kmock.Request
    ) -> tuple[list[k8s_selectors.LabelRequirement], list[k8s_selectors.FieldRequirement]]:
        assert request.resource is not None and request.resource.plural is not None
        if request.namespace and not self._info(request.resource).namespaced:
            raise _error(404, "NotFound", f"{request.resource.plural} is cluster-scoped")
        try:
            labels = k8s_selectors.parse_label_selector(request.params.get("labelSelector", ""))
            fields = k8s_selectors.parse_field_selector(request.params.get("fieldSelector", ""))
            k8s_selectors.check_field_paths(
                fields, request.resource.plural, self._selectable.get(request.resource, frozenset())
            )
        except k8s_selectors.SelectorError as exc:
            raise _error(400, "BadRequest", str(exc)) from exc
        if request.name:  # a watch of one named object
            fields = [*fields, k8s_selectors.FieldRequirement("metadata.name", True, request.name)]
        return labels, fields

    def _visible(
        self,
        request: kmock.Request,
        obj: Mapping[str, Any] | None,
        labels: list[k8s_selectors.LabelRequirement],
        fields: list[k8s_selectors.FieldRequirement],
    ) -> bool:
        if obj is None:
            return False
        if request.namespace and obj["metadata"].get("namespace") != request.namespace:
            return False
        return k8s_selectors.matches(obj, labels, fields)

    def _matching(
        self,
        request: kmock.Request,
        labels: list[k8s_selectors.LabelRequirement],
        fields: list[k8s_selectors.FieldRequirement],
    ) -> list[tuple[ObjectKey, dict[str, Any]]]:
        assert request.resource is not None
        self._info(request.resource)
        found = []
        for key in [k for k in self._objects if k[0] == request.resource]:
            obj = self._current(key)
            if self._visible(request, obj, labels, fields):
                assert obj is not None
                found.append((key, obj))
        found.sort(key=lambda item: (item[0][1] or "", item[0][2]))
        return found

    def _list_body(
        self, resource: kmock.resource, items: list[dict[str, Any]], version: str,
        continue_token: str = "",
    ) -> dict[str, Any]:
        info = self._info(resource)
        return {
            "apiVersion": f"{resource.group}/{resource.version}" if resource.group else "v1",
            "kind": f"{info.kind}List",
            "metadata": {"resourceVersion": version, "continue": continue_token},
            "items": items,
        }

    async def _serve_list(self, request: kmock.Request) -> rendering.Payload:
        assert request.resource is not None
        labels, fields = self._selectors(request)
        limit = int(request.params.get("limit") or 0)
        start_after = ""
        if token := request.params.get("continue"):
            try:
                start_after = json.loads(base64.urlsafe_b64decode(token))["after"]
            except (ValueError, KeyError) as exc:
                raise _error(400, "BadRequest", f"invalid continue token: {exc}") from exc
        async with self._lock:
            found = self._matching(request, labels, fields)
            version = str(self._revision)
        items = [obj for key, obj in found if f"{key[1] or ''}/{key[2]}" > start_after]
        next_token = ""
        if limit and len(items) > limit:
            items = items[:limit]
            last = items[-1]["metadata"]
            after = f"{last.get('namespace') or ''}/{last['name']}"
            next_token = base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode()
        return self._list_body(request.resource, items, version, next_token)

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[rendering.Payload]:
        assert request.resource is not None
        labels, fields = self._selectors(request)  # 400 before the stream starts
        params = request.params
        since_param = params.get("resourceVersion") or "0"
        send_initial = params.get("sendInitialEvents") == "true"
        timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout is not None else None
        state = self._state(request.resource)

        gone = False
        async with self._lock:
            initial: list[dict[str, Any]] = []
            if since_param == "0" or send_initial:
                initial = [obj for _, obj in self._matching(request, labels, fields)]
                since = self._revision
            else:
                try:
                    since = int(since_param)
                except ValueError:
                    raise _error(400, "BadRequest",
                                 f"invalid resourceVersion {since_param!r}") from None
                gone = since < state.compacted
        yield b""  # send the headers now: the client waits for them before reading events

        if gone:
            yield {"type": "ERROR", "object": {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "code": 410, "reason": "Expired",
                "message": f"too old resource version: {since} ({state.compacted})"}}
            return
        for obj in initial:
            yield {"type": "ADDED", "object": obj}
        if send_initial:
            yield {"type": "BOOKMARK", "object": {
                "kind": self._info(request.resource).kind,
                "apiVersion": f"{request.resource.group}/{request.resource.version}".lstrip("/"),
                "metadata": {"resourceVersion": str(since),
                             "annotations": {"k8s.io/initial-events-end": "true"}}}}

        while True:
            position = bisect.bisect_right(state.revisions, since)
            pending = state.log[position:]
            if since < state.compacted:
                return  # fell behind the log: the client resumes, gets 410 and relists
            for event in pending:
                since = event.revision
                was = self._visible(request, event.old, labels, fields)
                now_ = self._visible(request, event.obj, labels, fields)
                if event.type == "DELETED":
                    if was or now_:
                        yield {"type": "DELETED", "object": event.obj}
                elif now_:
                    yield {"type": "MODIFIED" if was else "ADDED", "object": event.obj}
                elif was:
                    yield {"type": "DELETED", "object": event.obj}  # left the selection
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return
            async with state.changed:
                if state.log and state.log[-1].revision > since:
                    continue
                try:
                    await asyncio.wait_for(state.changed.wait(), remaining)
                except TimeoutError:
                    return


class EmulatedApiServer:
    """The emulator on 127.0.0.1, in a thread of its own, with a kubeconfig file pointing at it.

    The HTTP listener can be stopped and started again on the same port while the stored objects
    stay (`restart()`), like an API server restart in front of the same etcd: clients see their
    connections and watches break and must reconnect and resume.
    """

    def __init__(self, workdir: Path, *, crd_paths: Iterable[Path] = (), port: int = 0) -> None:
        self.workdir = workdir
        self.kubeconfig = workdir / "kubeconfig"
        self._crd_paths = list(crd_paths)
        self._port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="k8s-emulator",
                                        daemon=True)
        self._runner: aiohttp.web.ServerRunner | None = None
        self.emulator: ApiEmulator | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def call(self, fn: Callable[[], Coroutine[Any, Any, T]], timeout: float = 10) -> T:
        """Run a coroutine on the emulator's loop and wait for its result."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(fn(), self._loop)
        return future.result(timeout)

    def __enter__(self) -> EmulatedApiServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    def start(self) -> EmulatedApiServer:
        self._thread.start()
        self.call(self._create)
        self.call(self._listen)
        self._write_kubeconfig()
        return self

    async def _create(self) -> None:
        self.emulator = ApiEmulator()
        await self.emulator.__aenter__()
        for path in self._crd_paths:
            self.emulator.register_crd_file(path)

    async def _listen(self) -> None:
        assert self.emulator is not None
        server = aiohttp.web.Server(self.emulator)
        self._runner = aiohttp.web.ServerRunner(server, shutdown_timeout=0.5)
        await self._runner.setup()
        site = aiohttp.web.TCPSite(self._runner, "127.0.0.1", self._port, reuse_address=True)
        await site.start()
        if not self._port:
            self._port = self._runner.addresses[0][1]

    async def _unlisten(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def stop_listening(self) -> None:
        """Take the API down (connections and watches break); objects are kept."""
        self.call(self._unlisten)

    def start_listening(self) -> None:
        self.call(self._listen)

    def restart(self, downtime: float = 0.0) -> None:
        self.stop_listening()
        if downtime:
            threading.Event().wait(downtime)
        self.start_listening()

    def close(self) -> None:
        async def shutdown() -> None:
            await self._unlisten()
            if self.emulator is not None:
                await self.emulator.__aexit__(None, None, None)
            # Watch streams still waiting for changes: end them before the loop goes.
            current = asyncio.current_task()
            pending = [t for t in asyncio.all_tasks() if t is not current]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        try:
            self.call(shutdown)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop.close()

    def register_resource(self, *args: Any, **kwargs: Any) -> kmock.resource:
        assert self.emulator is not None
        emulator = self.emulator

        async def register() -> kmock.resource:
            return emulator.register_resource(*args, **kwargs)

        return self.call(register)

    def _write_kubeconfig(self) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "emulator", "user": {"token": "emulator-accepts-any-token"}}],
            "contexts": [{"name": "emulator",
                          "context": {"cluster": "emulator", "user": "emulator"}}],
            "current-context": "emulator",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))
