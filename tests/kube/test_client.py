"""The one Kubernetes client (lwt_kube), over real HTTP against a small canned server.

What it must do for the agent, the operator and the tests alike: find credentials in the
documented order and send them, decode answers as plain dicts (bounded depth), turn every
refusal into one ApiError carrying the Kubernetes Status, and stream watch events until the
server ends the stream.
"""
from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from lwt_kube import ApiError, CredentialsError, Kube, api_path, load_configuration
from lwt_policy import limits


class Handler(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[str, str, dict[str, str], Any]] = []
    answers: dict[tuple[str, str], tuple[int, bytes]] = {}
    events: list[bytes] = []

    def log_message(self, *_: object) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        path = self.path.split("?")[0]
        self.seen.append((self.command, self.path,
                          {k.lower(): v for k, v in self.headers.items()}, body))
        if "watch=true" in self.path:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            for event in self.events:
                self.wfile.write(event + b"\n")
                self.wfile.flush()
            return  # the server ends the stream
        status, payload = self.answers.get((self.command, path), (404, json.dumps(
            {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404,
             "message": f"{path} not found"}).encode()))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer


@pytest.fixture
def server() -> Iterator[str]:
    Handler.seen, Handler.answers, Handler.events = [], {}, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def kubeconfig(path: Path, server: str, token: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}))
    return path


def test_api_path_spells_groups_as_kubectl_does() -> None:
    assert api_path("v1/pods") == "/api/v1/pods"
    assert api_path("v1/pods", "shop", "web", "status") == "/api/v1/namespaces/shop/pods/web/status"
    assert (api_path("lwt.dev/v1alpha1/lwtroutepolicies", "shop")
            == "/apis/lwt.dev/v1alpha1/namespaces/shop/lwtroutepolicies")


def test_calls_send_the_kubeconfig_token_and_decode_json(server: str, tmp_path: Path) -> None:
    Handler.answers[("GET", "/api/v1/pods")] = (200, b'{"items": [{"metadata": {}}]}')
    Handler.answers[("PATCH", "/api/v1/namespaces/a/pods/p")] = (200, b'{"ok": true}')
    with Kube(load_configuration(kubeconfig(tmp_path / "kc", server, "s3cret"))) as kube:
        assert kube.list("/api/v1/pods", field_selector="spec.nodeName=n1", limit=2) == {
            "items": [{"metadata": {}}]}
        assert kube.merge_patch("/api/v1/namespaces/a/pods/p", {"x": None}) == {"ok": True}
    (method, url, headers, _), (patch, _, patch_headers, body) = Handler.seen
    assert method == "GET" and "fieldSelector=spec.nodeName%3Dn1" in url and "limit=2" in url
    assert headers["authorization"] == "Bearer s3cret"
    assert patch == "PATCH" and patch_headers["content-type"] == "application/merge-patch+json"
    assert body == {"x": None}


def test_refusals_carry_the_status_and_unreachable_is_status_zero(server: str) -> None:
    Handler.answers[("POST", "/api/v1/namespaces/a/pods")] = (409, json.dumps(
        {"kind": "Status", "reason": "AlreadyExists", "message": "pods \"p\" exists"}).encode())
    kube = Kube.at(server)
    with pytest.raises(ApiError) as exc:
        kube.create("/api/v1/namespaces/a/pods", {"metadata": {"name": "p"}})
    assert (exc.value.status, exc.value.reason) == (409, "AlreadyExists")
    assert exc.value.body["message"] == 'pods "p" exists' and "409 AlreadyExists" in str(exc.value)
    with pytest.raises(ApiError) as exc:
        kube.get("/api/v1/nodes/gone")
    assert exc.value.status == 404
    with pytest.raises(ApiError) as exc:
        Kube.at("http://127.0.0.1:9", timeout=2).get("/api/v1/pods")
    assert exc.value.status == 0 and "API server runs" in str(exc.value)
    assert exc.value.__cause__ is not None  # the cause stays for the log


def test_a_deep_answer_is_a_marker_not_a_recursion_error(server: str) -> None:
    deep = '{"a":' * 5000 + "1" + "}" * 5000
    Handler.answers[("GET", "/x")] = (200, ('{"items": [' + deep + "]}").encode())
    body = Kube.at(server).get("/x")
    assert limits.depth_problem(body, "x") is not None


def test_watch_streams_events_until_the_server_ends_it(server: str) -> None:
    Handler.events = [b'{"type": "ADDED", "object": {"metadata": {"name": "a"}}}',
                      b'{"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}}']
    events = list(Kube.at(server).watch("/api/v1/pods", "5", field_selector="a=b",
                                        bookmarks=True, timeout=3))
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    url = Handler.seen[0][1]
    for part in ("watch=true", "resourceVersion=5", "allowWatchBookmarks=true",
                 "timeoutSeconds=3", "fieldSelector=a%3Db"):
        assert part in url


def test_credentials_order(server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    kubeconfig(home / ".kube" / "config", server, "from-home")
    assert load_configuration().auth_settings()["BearerToken"]["value"] == "Bearer from-home"
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path / "env", server, "from-env")))
    assert load_configuration().auth_settings()["BearerToken"]["value"] == "Bearer from-env"
    given = kubeconfig(tmp_path / "given", server, "given")
    assert load_configuration(given).auth_settings()["BearerToken"]["value"] == "Bearer given"
    # In a pod (the variable set) the service account wins over ~/.kube/config; none mounted
    # here, so the refusal says what to do.
    monkeypatch.delenv("KUBECONFIG")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "1")
    with pytest.raises(CredentialsError, match="service account"):
        load_configuration()
    with pytest.raises(CredentialsError, match="--kubeconfig"):
        load_configuration(tmp_path / "missing")
