"""A small Kubernetes client for the agent: raw JSON list/watch/merge-patch/create.

The official client loads the credentials (kubeconfig or the in-cluster service account)
and does the HTTP; objects stay plain dicts, as the reconciler and lwt_policy want them.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.config
import urllib3
from lwt_policy import limits

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"


class ApiError(Exception):
    """The API refused a request (.status: HTTP status, 0 when unreachable)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"HTTP {status}: {message}" if status else message)


class ConfigError(Exception):
    """No usable credentials."""


def load_configuration(kubeconfig: Path | None) -> kubernetes.client.Configuration:
    """--kubeconfig, else $KUBECONFIG, else the in-cluster service account."""
    configuration = kubernetes.client.Configuration()
    try:
        if kubeconfig is not None:
            kubernetes.config.load_kube_config(config_file=str(kubeconfig),
                                               client_configuration=configuration)
        elif os.environ.get("KUBECONFIG"):
            kubernetes.config.load_kube_config(client_configuration=configuration)
        else:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
    except (kubernetes.config.ConfigException, OSError) as exc:
        raise ConfigError(f"cannot load Kubernetes credentials: {exc}; pass --kubeconfig F, "
                          "set KUBECONFIG, or run in a pod with a service account") from exc
    return configuration


class Kube:
    def __init__(self, configuration: kubernetes.client.Configuration,
                 timeout: float = 15) -> None:
        self.configuration = configuration
        self.client = kubernetes.client.ApiClient(configuration)
        self.timeout = timeout

    def close(self) -> None:
        self.client.close()

    def _call(self, method: str, path: str, body: Any = None,
              content_type: str = "application/json",
              query: list[tuple[str, str]] | None = None, stream: bool = False,
              timeout: float | None = None) -> Any:
        method_, url, headers, payload, _ = self.client.param_serialize(
            method, path, query_params=query or [],
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body, auth_settings=["BearerToken"])
        try:
            response = self.client.call_api(method_, url, header_params=headers, body=payload,
                                            _request_timeout=timeout or self.timeout)
        except kubernetes.client.ApiException as exc:
            raise ApiError(exc.status or 0, str(exc.reason)) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ApiError(0, f"{self.configuration.host} unreachable: {exc}") from None
        if response.status >= 400:
            data = response.read()
            try:
                message = json.loads(data or b"{}").get("message", "")
            except ValueError:
                message = data.decode(errors="replace")
            raise ApiError(response.status, message)
        if stream:
            return response.response
        # Bounded: an object nested thousands deep decodes with a marker in its place
        # (lwt_policy.limits) instead of failing the whole list with RecursionError.
        return limits.loads(response.read() or b"null")

    def list(self, path: str, field_selector: str = "", limit: int = 0,
             continue_token: str = "", label_selector: str = "") -> dict[str, Any]:
        query = [("fieldSelector", field_selector)] if field_selector else []
        if label_selector:
            query.append(("labelSelector", label_selector))
        if limit:
            query.append(("limit", str(limit)))
        if continue_token:
            query.append(("continue", continue_token))
        return self._call("GET", path, query=query)  # type: ignore[no-any-return]

    def watch(self, path: str, resource_version: str, field_selector: str = "",
              timeout: int = 30, label_selector: str = "") -> Iterator[dict[str, Any]]:
        query = [("watch", "true"), ("timeoutSeconds", str(timeout)),
                 ("resourceVersion", resource_version), ("allowWatchBookmarks", "true")]
        if field_selector:
            query.append(("fieldSelector", field_selector))
        if label_selector:
            query.append(("labelSelector", label_selector))
        response = self._call("GET", path, query=query, stream=True, timeout=timeout + 10)
        try:
            buffer = b""
            for chunk in response.stream(4096, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield limits.loads(line)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ApiError(0, f"watch {path} broke: {exc}") from None
        finally:
            response.release_conn()

    def merge_patch(self, path: str, patch: dict[str, Any]) -> Any:
        return self._call("PATCH", path, patch, MERGE_PATCH)

    def create(self, path: str, obj: dict[str, Any]) -> Any:
        return self._call("POST", path, obj)


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
                 on_drop: Callable[[str], None] | None = None) -> None:
        self.kube = kube
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

    def _admit(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """The cache entry for `obj`, or None when it is dropped (see the class doc)."""
        key = object_key(obj)
        reason = limits.depth_problem(obj, f"{self.name} {key[0]}/{key[1]}")
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
                body = self.kube.list(self.path, self.field_selector, limit=self.page_size,
                                      continue_token=token,
                                      label_selector=self.label_selector)
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
            for event in self.kube.watch(self.path, version, self.field_selector,
                                         label_selector=self.label_selector):
                kind = event.get("type") if isinstance(event, dict) else None
                obj = event.get("object") if isinstance(event, dict) else None
                if not isinstance(obj, dict):
                    continue  # not an event of this API: nothing to cache
                if kind == "ERROR":
                    raise ApiError(int(obj.get("code") or 0) or 410,
                                   f"watch {self.name}: {obj.get('message', '')}; relisting")
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
