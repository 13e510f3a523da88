"""The one Kubernetes client: raw JSON calls and watches over the official `kubernetes` package.

    kube = Kube(load_configuration(kubeconfig))    # --kubeconfig, $KUBECONFIG, in-cluster, ~/.kube
    kube.get(api_path("lwt.dev/v1alpha1/lwtroutepolicies", "shop", "web"))
    for event in kube.watch(path, resource_version, field_selector="spec.nodeName=n1"): ...

The `kubernetes` package loads the credentials (kubeconfig or the in-cluster service account)
and does the HTTP; objects stay plain dicts (no generated model classes), which is what the
agent's reconciler, the operator's handlers and lwt_policy work with. Bodies are decoded with
`lwt_policy.limits.loads`, so an object nested thousands deep reaches the caller as a marker
to refuse instead of a RecursionError that would stop a whole list.

Every failure is an `ApiError` (`.status` 0 when the server could not be reached).
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.config
import urllib3
from lwt_policy import limits

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class ApiError(Exception):
    """The API refused a request, or could not be reached (`.status` 0).

    `.reason` and `.message` are the Kubernetes Status's (e.g. 409 "Conflict"); `.body` is
    the whole Status object when the server sent one."""

    def __init__(self, status: int, reason: str, message: str,
                 body: Mapping[str, Any] | None = None) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        self.body = dict(body or {})
        head = f"HTTP {status} {reason}".rstrip() if status else "API unreachable"
        super().__init__(f"{head}: {message}")


class CredentialsError(Exception):
    """No usable Kubernetes credentials were found."""


def load_configuration(kubeconfig: Path | None = None) -> kubernetes.client.Configuration:
    """Credentials from `kubeconfig`, else $KUBECONFIG, else the in-cluster service account
    (in a pod), else ~/.kube/config."""
    configuration = kubernetes.client.Configuration()
    # Files are named explicitly: the package reads $KUBECONFIG for its default only once,
    # when it is imported.
    try:
        if kubeconfig is None and os.environ.get("KUBECONFIG"):
            kubeconfig = Path(os.environ["KUBECONFIG"])  # may list several, ':'-separated
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        else:
            kubernetes.config.load_kube_config(
                config_file=str(kubeconfig or Path.home() / ".kube" / "config"),
                client_configuration=configuration)
    except (kubernetes.config.ConfigException, OSError) as exc:
        raise CredentialsError(
            f"cannot load Kubernetes credentials: {exc}; pass --kubeconfig FILE, set "
            "KUBECONFIG, create ~/.kube/config, or run in a pod with a service account"
        ) from exc
    return configuration


def api_path(resource: str, namespace: str | None = None, name: str | None = None,
             subresource: str | None = None) -> str:
    """The URL path of a resource spelled as kubectl spells API groups: "v1/pods",
    "apps/v1/daemonsets", "lwt.dev/v1alpha1/lwtroutepolicies"."""
    *group_version, plural = resource.split("/")
    path = "/api/v1" if group_version == ["v1"] else "/apis/" + "/".join(group_version)
    if namespace:
        path += f"/namespaces/{namespace}"
    path += f"/{plural}"
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path


class Kube:
    """Raw JSON calls to one API server with the loaded credentials."""

    def __init__(self, configuration: kubernetes.client.Configuration,
                 timeout: float = 30) -> None:
        self.configuration = configuration
        self.client = kubernetes.client.ApiClient(configuration)
        self.timeout = timeout

    @classmethod
    def at(cls, url: str, timeout: float = 10) -> Kube:
        """A client of an API server that needs no credentials (a local test stand)."""
        configuration = kubernetes.client.Configuration()
        configuration.host = url.rstrip("/")
        return cls(configuration, timeout)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Kube:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- calls ---------------------------------------------------------------------------

    def _send(self, method: str, path: str, body: Any = None, content_type: str = JSON,
              params: Mapping[str, str] | None = None, timeout: float | None = None) -> Any:
        """The raw urllib3 response (not read yet) of a successful request."""
        method_, url, headers, payload, _ = self.client.param_serialize(
            method, path, query_params=list((params or {}).items()),
            header_params={"Content-Type": content_type, "Accept": JSON},
            body=body, auth_settings=["BearerToken"])
        try:
            response = self.client.call_api(method_, url, header_params=headers, body=payload,
                                            _request_timeout=timeout or self.timeout)
        except kubernetes.client.ApiException as exc:
            raise ApiError(exc.status or 0, exc.reason or "", str(exc.body or "")) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ApiError(0, "", f"{self.configuration.host}: {exc}; check that the API "
                           "server runs and the kubeconfig names it") from exc
        if response.status >= 400:
            data = response.read()
            try:
                status = json.loads(data or b"{}")
            except ValueError:
                status = None
            if not isinstance(status, dict):
                status = {"message": data.decode(errors="replace")}
            raise ApiError(response.status, str(status.get("reason") or response.reason or ""),
                           str(status.get("message") or ""), status)
        return response

    def request(self, method: str, path: str, body: Any = None, content_type: str = JSON,
                params: Mapping[str, str] | None = None) -> Any:
        """One call; the decoded JSON answer."""
        response = self._send(method, path, body, content_type, params)
        return limits.loads(response.read() or b"null")

    def get(self, path: str, **params: str) -> Any:
        return self.request("GET", path, params=params)

    def list(self, path: str, *, field_selector: str = "", label_selector: str = "",
             limit: int = 0, continue_token: str = "") -> dict[str, Any]:
        """One page of a list (`limit` 0: everything at once)."""
        params = {"fieldSelector": field_selector, "labelSelector": label_selector,
                  "limit": str(limit) if limit else "", "continue": continue_token}
        body = self.request("GET", path, params={k: v for k, v in params.items() if v})
        return body if isinstance(body, dict) else {}

    def create(self, path: str, obj: Mapping[str, Any]) -> Any:
        return self.request("POST", path, obj)

    def replace(self, path: str, obj: Mapping[str, Any]) -> Any:
        return self.request("PUT", path, obj)

    def merge_patch(self, path: str, patch: Mapping[str, Any]) -> Any:
        return self.request("PATCH", path, patch, MERGE_PATCH)

    def json_patch(self, path: str, ops: list[dict[str, Any]]) -> Any:
        return self.request("PATCH", path, ops, JSON_PATCH)

    def delete(self, path: str, options: Mapping[str, Any] | None = None) -> Any:
        return self.request("DELETE", path, options)

    # --- watch ---------------------------------------------------------------------------

    def watch(self, path: str, resource_version: str = "", *, field_selector: str = "",
              label_selector: str = "", timeout: float = 30, bookmarks: bool = False,
              **params: str) -> Iterator[dict[str, Any]]:
        """Watch events until the server ends the stream (after `timeout` seconds, or
        `timeoutSeconds` given in `params`). A stream that stays silent 10 s past that
        ends too; a broken one raises ApiError (status 0)."""
        query = {"watch": "true", "timeoutSeconds": str(int(timeout)),
                 "resourceVersion": resource_version, "fieldSelector": field_selector,
                 "labelSelector": label_selector,
                 "allowWatchBookmarks": "true" if bookmarks else "", **params}
        server_timeout = float(query["timeoutSeconds"])
        response = self._send("GET", path, params={k: v for k, v in query.items() if v},
                              timeout=server_timeout + 10).response  # urllib3's, unread
        try:
            buffer = b""
            for chunk in response.stream(4096, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield limits.loads(line)
        except urllib3.exceptions.ReadTimeoutError:
            return
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ApiError(0, "", f"watch {path} broke: {exc}") from exc
        finally:
            response.release_conn()
