"""Kubernetes connection: one config for kopf's login and for the operator's own calls.

kopf watches and patches policies itself; the operator's own calls (the agent DaemonSet) go
through the official client's ApiClient with raw JSON in and out, so no generated model classes
stand between the manifest dicts and the API.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.config
import urllib3

from lwt_operator.errors import ApiError, ConfigError

MERGE_PATCH = "application/merge-patch+json"


def load_configuration(kubeconfig: Path | None) -> kubernetes.client.Configuration:
    """--kubeconfig, else $KUBECONFIG, else the in-cluster service account, else ~/.kube/config."""
    configuration = kubernetes.client.Configuration()
    try:
        if kubeconfig is not None:
            kubernetes.config.load_kube_config(config_file=str(kubeconfig),
                                               client_configuration=configuration)
        elif os.environ.get("KUBECONFIG"):
            kubernetes.config.load_kube_config(client_configuration=configuration)
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        else:
            kubernetes.config.load_kube_config(client_configuration=configuration)
    except (kubernetes.config.ConfigException, OSError) as exc:
        raise ConfigError(f"cannot load Kubernetes credentials: {exc}; pass --kubeconfig FILE "
                          f"or set KUBECONFIG, or run in a pod with a service account") from exc
    return configuration


class Kube:
    """Raw JSON calls to the API (get/create/patch/delete/watch) with the loaded credentials."""

    def __init__(self, configuration: kubernetes.client.Configuration,
                 timeout: float = 30) -> None:
        self.configuration = configuration
        self.client = kubernetes.client.ApiClient(configuration)
        self.timeout = timeout

    def close(self) -> None:
        self.client.close()

    def _call(self, method: str, path: str, body: Any = None,
              content_type: str = "application/json",
              query: list[tuple[str, str]] | None = None,
              stream: bool = False, timeout: float | None = None) -> Any:
        method_, url, headers, payload, _ = self.client.param_serialize(
            method, path,
            query_params=query or [],
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self.client.call_api(method_, url, header_params=headers, body=payload,
                                            _request_timeout=timeout or self.timeout)
        except kubernetes.client.ApiException as exc:
            raise ApiError(exc.status or 0, exc.reason or "", str(exc.body or "")) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ApiError(0, "Unreachable", f"{self.configuration.host}: {exc}") from exc
        if response.status >= 400:
            data = response.read()
            try:
                status = json.loads(data or b"{}")
            except ValueError:
                status = {"message": data.decode(errors="replace")}
            raise ApiError(response.status, status.get("reason", response.reason or ""),
                           status.get("message", ""))
        if stream:
            return response.response
        return json.loads(response.read() or b"null")

    def get(self, path: str) -> Any:
        return self._call("GET", path)

    def create(self, path: str, obj: dict[str, Any]) -> Any:
        return self._call("POST", path, obj)

    def merge_patch(self, path: str, patch: dict[str, Any]) -> Any:
        return self._call("PATCH", path, patch, MERGE_PATCH)

    def delete(self, path: str) -> Any:
        return self._call("DELETE", path)

    def watch(self, path: str, *, field_selector: str = "", timeout: int = 30,
              resource_version: str = "") -> Iterator[dict[str, Any]]:
        """Watch events until the server ends the stream (after `timeout` seconds)."""
        query = [("watch", "true"), ("timeoutSeconds", str(timeout))]
        if field_selector:
            query.append(("fieldSelector", field_selector))
        if resource_version:
            query.append(("resourceVersion", resource_version))
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
            raise ApiError(0, "Unreachable", f"watch {path}: {exc}") from exc
        finally:
            response.release_conn()
