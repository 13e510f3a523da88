"""Issue 12, "freeze policy sync cluster-wide": a `config` nested thousands deep.

Before: the agent's informer raised RecursionError decoding the list, relisted forever and
never synced any policy; the operator's validation raised RecursionError too. Now the one
object is refused (a Problem for the operator, a drop + log + metric for the agent's cache)
and every other object keeps syncing. The agent side runs the real `Kube` + `Informer`
over real HTTP against a server that answers with canned bytes (the emulator cannot store
an object its own JSON decoder cannot read).
"""
from __future__ import annotations

import http.server
import json
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from lwt_agent.agent.kube import Informer
from lwt_kube import Kube
from lwt_operator.validation import judge
from lwt_policy import limits
from lwt_policy.model import validate_policy

DEPTH = 20_000  # beyond any recursion limit cel-python or anyone else sets
PATH = "/apis/lwt.dev/v1alpha1/lwtroutepolicies"


def deep_json(depth: int = DEPTH) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def policy_json(name: str, config: str = "{}", version: str = "1") -> str:
    return ('{"apiVersion":"lwt.dev/v1alpha1","kind":"LwtRoutePolicy","metadata":{"name":"'
            + name + '","namespace":"shop","resourceVersion":"' + version + '"},"spec":'
            '{"podSelector":{},"hooks":{"out":{"program":{"builtin":"counters"},"config":'
            + config + "}}}}")


def deep_policy() -> dict[str, Any]:
    text = policy_json("bomb", deep_json(3000))
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)  # only to build the test input
    try:
        return json.loads(text)  # type: ignore[no-any-return]
    finally:
        sys.setrecursionlimit(limit)


def test_operator_and_validation_refuse_a_deep_config_without_recursion_error() -> None:
    obj = deep_policy()
    obj["metadata"]["generation"] = 1
    problems = validate_policy(obj)
    assert [p.rule for p in problems] == ["depth-limit"]
    assert "nests more than" in problems[0].message
    verdict = judge(obj, admin_namespace="lwt-system")
    assert not verdict.accepted and "nests more than" in verdict.message


def test_bounded_loads_keeps_the_shallow_items() -> None:
    body = '{"items":[' + policy_json("a") + "," + policy_json("bomb", deep_json()) + "," + \
        policy_json("b") + "]}"
    with pytest.raises(RecursionError):
        json.loads(body)
    items = limits.loads(body)["items"]
    assert [limits.nesting_depth(i) > limits.MAX_DEPTH for i in items] == [False, True, False]
    assert items[0]["metadata"]["name"] == "a" and items[2]["metadata"]["name"] == "b"
    assert items[1]["metadata"]["name"] == "bomb"  # identity survives: it can be reported
    # Strings holding brackets are not structure.
    assert limits.loads('{"k":"]]}}[[{{"}') == {"k": "]]}}[[{{"}


class _CannedApi(http.server.BaseHTTPRequestHandler):
    """GET PATH lists `LIST`; GET PATH?watch=true streams `EVENTS` then holds the stream."""

    LIST: bytes = b""
    EVENTS: list[bytes] = []
    lists = 0

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        if "watch=true" in self.path:
            for event in type(self).EVENTS:
                self.wfile.write(event + b"\n")
                self.wfile.flush()
            time.sleep(1)
            return
        type(self).lists += 1
        self.wfile.write(type(self).LIST)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def canned_api() -> Iterator[tuple[str, type[_CannedApi]]]:
    handler = type("Handler", (_CannedApi,), {"lists": 0, "EVENTS": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def _wait(probe: Any, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {probe}")


def test_informer_drops_the_deep_object_and_keeps_syncing_the_others(canned_api) -> None:
    url, handler = canned_api
    handler.LIST = ('{"kind":"LwtRoutePolicyList","metadata":{"resourceVersion":"5"},"items":['
                    + policy_json("a") + "," + policy_json("bomb", deep_json()) + ","
                    + policy_json("b") + "]}").encode()
    handler.EVENTS = [
        # A good object turns bad: it leaves the cache (and is reported), others stay.
        ('{"type":"MODIFIED","object":' + policy_json("a", deep_json(), "6") + "}").encode(),
        ('{"type":"ADDED","object":' + policy_json("c", "{}", "7") + "}").encode(),
    ]
    kube = Kube.at(url, timeout=5)
    drops: list[str] = []
    informer = Informer(kube, PATH, lambda: None, name="policies", on_drop=drops.append)
    informer.start()
    try:
        assert informer.synced.wait(10), f"never synced: {informer.last_error}"
        _wait(lambda: {n for _, n in informer.items} == {"b", "c"})
        assert set(informer.rejections()) == {("shop", "bomb"), ("shop", "a")}
        assert all("nests more than" in r for r in informer.rejections().values())
        assert len(drops) >= 2
        assert informer.failures == 0, informer.last_error
    finally:
        informer.stop()
        kube.close()


def test_an_oversized_configmap_program_is_refused_before_decoding() -> None:
    """A ConfigMap holds up to 1 MiB: an object past `MAX_PROGRAM_BYTES` is refused with its
    size, and the agent's cache never holds its bytes (slim_configmap keeps a marker)."""
    import base64

    from lwt_agent.agent.programs_gate import slim_configmap
    from lwt_policy.configmap import resolve_configmap_program
    from lwt_policy.errors import ProgramSourceError
    from lwt_policy.model import parse_policy

    policy = parse_policy({
        "apiVersion": "lwt.dev/v1alpha1", "kind": "LwtRoutePolicy",
        "metadata": {"name": "p", "namespace": "lab"},
        "spec": {"podSelector": {}, "hooks": {"out": {"program": {
            "configMap": {"name": "big", "key": "p.o"}, "section": "lwt/out"}}}}})
    hook = policy.spec.hooks["out"]
    blob = base64.b64encode(b"\0" * (limits.MAX_PROGRAM_BYTES + 1)).decode()
    cm = {"metadata": {"name": "big", "namespace": "lab"}, "binaryData": {"p.o": blob}}
    for held in (cm, slim_configmap(cm)):
        with pytest.raises(ProgramSourceError, match="more than the 524288 bytes"):
            resolve_configmap_program(hook, [held])
    assert len(json.dumps(slim_configmap(cm))) < 1000
    small = {"metadata": {"name": "big", "namespace": "lab"},
             "binaryData": {"p.o": base64.b64encode(b"\x7fELF").decode()}}
    assert resolve_configmap_program(hook, [slim_configmap(small)]) == b"\x7fELF"


def test_a_100k_key_config_is_refused_by_its_size_before_any_schema_work() -> None:
    """The issue's 5.5 s per generation for the operator: a config stored before the CRD was
    typed is now refused for its size (one json.dumps) before defaulting, schema or CEL."""
    obj = json.loads(policy_json("big", json.dumps({f"k{i}": i for i in range(100_000)})))
    obj["metadata"]["generation"] = 3
    verdict = judge(obj, admin_namespace="lwt-system")
    assert [p.rule for p in verdict.problems] == ["size-limit"]
    assert "more than the 524288 bytes" in verdict.message
