"""The agent's informers: list + watch of one resource each into a cache, on the one
client (`lwt_kube`).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from lwt_kube import ApiError, Kube
from lwt_policy import limits

log = logging.getLogger(__name__)
OPTIONAL_RETRY = 30.0  # seconds between lists of a resource the API does not serve


def object_key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "", meta.get("name") or "")


class Informer:
    """List + watch of one resource into a cache, in a thread; relists on 410 Gone and
    after any failure (with backoff). The cache keeps its last contents while the API is
    unreachable; `synced` is set after the first successful list.

    One bad object never stops the others: an object nested deeper than
    `lwt_policy.limits.MAX_DEPTH`, or one `transform` refuses (raises ValueError), is left
    out of the cache, logged once per version, counted (`on_drop`) and listed in `rejected`
    (key -> reason) until it is fixed or deleted. Lists are paged (`page_size`), so that
    peak memory is one page, not the whole resource."""

    def __init__(self, kube: Kube, path: str, on_change: Callable[[], None],
                 field_selector: str = "", name: str = "",
                 transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 label_selector: str = "", page_size: int = 500,
                 on_drop: Callable[[str], None] | None = None,
                 check_depth: bool = True, optional: bool = False) -> None:
        self.kube = kube
        # An optional resource may not be served (its CRD not installed yet, e.g. after a
        # `helm upgrade`, which adds no CRDs): that is an empty, synced cache, re-listed
        # every OPTIONAL_RETRY seconds, not an agent that never gets ready.
        self.optional = optional
        # Built-in kinds (pods, nodes) have the API server's fixed schemas, which bound their
        # depth: walking every one of them would only cost time. Custom resources do not.
        self.check_depth = check_depth
        self.transform = transform or (lambda obj: obj)
        self.path = path
        self.field_selector = field_selector
        self.label_selector = label_selector
        self.page_size = page_size
        self.on_drop = on_drop
        self.rejected: dict[tuple[str, str], str] = {}
        self._logged: set[tuple[tuple[str, str], str]] = set()
        self.on_change = on_change
        self.name = name or path
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.synced = threading.Event()
        self.healthy = False
        self.last_error: str | None = None
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch {self.name}",
                                        daemon=True)

    def start(self) -> Informer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.items.values())

    def snapshot_items(self) -> list[tuple[tuple[str, str], dict[str, Any]]]:
        with self.lock:
            return list(self.items.items())

    def rejections(self) -> dict[tuple[str, str], str]:
        """Objects left out of the cache: (namespace, name) -> why."""
        with self.lock:
            return dict(self.rejected)

    def _run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                version = self._list()
                backoff = 0.2
                self._watch(version)
            except ApiError as exc:
                if self.optional and exc.status == 404:
                    self._not_served(exc)
                    continue
                self.healthy = False
                self.failures += 1
                self.last_error = str(exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception as exc:  # keep watching whatever happened
                self.healthy = False
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _not_served(self, exc: ApiError) -> None:
        if self.last_error is None or "not served" not in self.last_error:
            log.warning("%s is not served by the API (%s): treated as none, checking again "
                        "every %ss; install the CRDs of this release (kubectl apply "
                        "--server-side -f crds/)", self.name, exc, OPTIONAL_RETRY)
        self.last_error = f"{self.name} not served: {exc}"
        with self.lock:
            changed = bool(self.items)
            self.items = {}
        self.healthy = True
        first = not self.synced.is_set()
        self.synced.set()
        if changed or first:
            self.on_change()
        self._stop.wait(OPTIONAL_RETRY)

    def _admit(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """The cache entry for `obj`, or None when it is dropped (see the class doc)."""
        key = object_key(obj)
        reason = (limits.depth_problem(obj, f"{self.name} {key[0]}/{key[1]}")
                  if self.check_depth else None)
        if reason is None:
            try:
                entry = self.transform(obj)
            except ValueError as exc:
                reason = f"{self.name} {key[0]}/{key[1]}: {exc}"
            else:
                if key in self.rejected:
                    with self.lock:
                        self.rejected.pop(key, None)
                return entry
        version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        if (key, version) not in self._logged:
            if len(self._logged) > 10000:
                self._logged.clear()
            self._logged.add((key, version))
            log.warning("ignoring %s (the others keep syncing)", reason)
        with self.lock:
            self.rejected[key] = reason
        if self.on_drop is not None:
            self.on_drop(reason)
        return None

    def _list(self) -> str:
        items: dict[tuple[str, str], dict[str, Any]] = {}
        with self.lock:
            rejected_before = dict(self.rejected)
            self.rejected.clear()
        token = ""
        while True:
            try:
                body = self.kube.list(self.path, field_selector=self.field_selector,
                                      label_selector=self.label_selector,
                                      limit=self.page_size, continue_token=token)
            except BaseException:
                with self.lock:
                    self.rejected.update(rejected_before)
                raise
            for obj in body.get("items") or []:
                if isinstance(obj, dict) and (entry := self._admit(obj)) is not None:
                    items[object_key(obj)] = entry
            page_meta = body.get("metadata") or {}
            token = str(page_meta.get("continue") or "")
            version = str(page_meta.get("resourceVersion") or "")
            del body  # one page at a time
            if not token:
                break
        with self.lock:
            changed = items != self.items
            self.items = items
        self.healthy = True
        self.last_error = None
        first = not self.synced.is_set()
        self.synced.set()
        if changed or first:
            self.on_change()
        return version

    def _watch(self, version: str) -> None:
        while not self._stop.is_set():
            for event in self.kube.watch(self.path, version,
                                         field_selector=self.field_selector,
                                         label_selector=self.label_selector, bookmarks=True):
                kind = event.get("type") if isinstance(event, dict) else None
                obj = event.get("object") if isinstance(event, dict) else None
                if not isinstance(obj, dict):
                    continue  # not an event of this API: nothing to cache
                if kind == "ERROR":
                    raise ApiError(int(obj.get("code") or 0) or 410, str(obj.get("reason") or ""),
                                   f"watch {self.name}: {obj.get('message', '')}; relisting",
                                   obj)
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if kind == "BOOKMARK":
                    continue
                if kind == "DELETED":
                    with self.lock:
                        self.rejected.pop(object_key(obj), None)
                    entry = None
                else:
                    entry = self._admit(obj)
                with self.lock:
                    if entry is None:
                        self.items.pop(object_key(obj), None)
                    else:
                        self.items[object_key(obj)] = entry
                self.on_change()
                if self._stop.is_set():
                    return


def wait_all(informers: list[Informer], stop: threading.Event, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not stop.is_set() and time.monotonic() < deadline:
        if all(i.synced.is_set() for i in informers):
            return True
        stop.wait(0.05)
    return all(i.synced.is_set() for i in informers)
