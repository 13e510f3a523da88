"""A small synchronous JSON client for the emulated API, for tests (no kubernetes-client models).

Paths are built from a resource string as kubectl spells API groups: "v1/pods",
"apps/v1/daemonsets", "lwt.dev/v1alpha1/lwtroutepolicies".
"""
from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any


class ApiError(Exception):
    """The API answered with an error status; `.status` and `.reason` as in a Kubernetes Status."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = body
        self.reason = body.get("reason", "")
        super().__init__(f"HTTP {status} {self.reason}: {body.get('message', body)}")


def api_path(
    resource: str, namespace: str | None = None, name: str | None = None,
    subresource: str | None = None,
) -> str:
    *group_version, plural = resource.split("/")
    prefix = "/api/v1" if group_version == ["v1"] else "/apis/" + "/".join(group_version)
    path = prefix
    if namespace:
        path += f"/namespaces/{namespace}"
    path += f"/{plural}"
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path


class KubeClient:
    def __init__(self, base_url: str, timeout: float = 10) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _open(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json",
        params: dict[str, str] | None = None, timeout: float | None = None,
    ) -> Any:
        url = self.base_url + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Content-Type", content_type)
        request.add_header("Accept", "application/json")
        try:
            return urllib.request.urlopen(request, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            try:
                parsed = json.loads(payload)
            except ValueError:
                parsed = {"message": payload.decode(errors="replace")}
            raise ApiError(exc.code, parsed) from None

    def request(self, method: str, path: str, body: Any = None,
                content_type: str = "application/json",
                params: dict[str, str] | None = None) -> Any:
        with self._open(method, path, body, content_type, params) as response:
            return json.loads(response.read() or b"null")

    def get(self, path: str, **params: str) -> Any:
        return self.request("GET", path, params=params or None)

    def create(self, path: str, obj: dict[str, Any]) -> Any:
        return self.request("POST", path, obj)

    def replace(self, path: str, obj: dict[str, Any]) -> Any:
        return self.request("PUT", path, obj)

    def merge_patch(self, path: str, patch: dict[str, Any]) -> Any:
        return self.request("PATCH", path, patch, "application/merge-patch+json")

    def json_patch(self, path: str, ops: list[dict[str, Any]]) -> Any:
        return self.request("PATCH", path, ops, "application/json-patch+json")

    def delete(self, path: str, options: dict[str, Any] | None = None) -> Any:
        return self.request("DELETE", path, options)

    def watch(self, path: str, timeout: float = 5, **params: str) -> Iterator[dict[str, Any]]:
        """Yield watch events until the server closes the stream or `timeout` passes idle."""
        query = {"watch": "true", **params}
        with self._open("GET", path, params=query, timeout=timeout) as response:
            try:
                for line in response:
                    if line.strip():
                        yield json.loads(line)
            except TimeoutError:
                return
