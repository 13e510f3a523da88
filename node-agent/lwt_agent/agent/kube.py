"""A small Kubernetes client for the agent: raw JSON list/watch/merge-patch/create.

The official client loads the credentials (kubeconfig or the in-cluster service account)
and does the HTTP; objects stay plain dicts, as the reconciler and lwt_policy want them.
"""
from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.config
import urllib3

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
        return json.loads(response.read() or b"null")

    def list(self, path: str, field_selector: str = "") -> dict[str, Any]:
        query = [("fieldSelector", field_selector)] if field_selector else []
        return self._call("GET", path, query=query)  # type: ignore[no-any-return]

    def watch(self, path: str, resource_version: str, field_selector: str = "",
              timeout: int = 30) -> Iterator[dict[str, Any]]:
        query = [("watch", "true"), ("timeoutSeconds", str(timeout)),
                 ("resourceVersion", resource_version), ("allowWatchBookmarks", "true")]
        if field_selector:
            query.append(("fieldSelector", field_selector))
        response = self._call("GET", path, query=query, stream=True, timeout=timeout + 10)
        try:
            buffer = b""
            for chunk in response.stream(4096, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
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
    unreachable; `synced` is set after the first successful list."""

    def __init__(self, kube: Kube, path: str, on_change: Callable[[], None],
                 field_selector: str = "", name: str = "",
                 transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        self.kube = kube
        self.transform = transform or (lambda obj: obj)
        self.path = path
        self.field_selector = field_selector
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

    def _list(self) -> str:
        body = self.kube.list(self.path, self.field_selector)
        items = {object_key(o): self.transform(o) for o in body.get("items") or []}
        with self.lock:
            changed = items != self.items
            self.items = items
        self.healthy = True
        self.last_error = None
        first = not self.synced.is_set()
        self.synced.set()
        if changed or first:
            self.on_change()
        return str((body.get("metadata") or {}).get("resourceVersion") or "")

    def _watch(self, version: str) -> None:
        while not self._stop.is_set():
            for event in self.kube.watch(self.path, version, self.field_selector):
                kind = event.get("type")
                obj = event.get("object") or {}
                if kind == "ERROR":
                    raise ApiError(int(obj.get("code") or 0) or 410,
                                   f"watch {self.name}: {obj.get('message', '')}; relisting")
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if kind == "BOOKMARK":
                    continue
                with self.lock:
                    if kind == "DELETED":
                        self.items.pop(object_key(obj), None)
                    else:
                        self.items[object_key(obj)] = self.transform(obj)
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
