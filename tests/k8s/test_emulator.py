"""The emulator's gap fillers, each against the real API server behaviour it stands in for.

Every test here would fail against kmock 0.8's plain KubernetesEmulator (see the module docstring
of tests/k8s/emulator.py for the list of gaps).
"""
from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import yaml
from lwt_kube import ApiError, Kube, api_path

from tests.k8s.conftest import CRD_FILE, POLICIES
from tests.k8s.emulator import EmulatedApiServer

PODS = "v1/pods"
DAEMONSETS = "apps/v1/daemonsets"
# A schema-less namespaced custom resource with a status subresource: the generic API semantics
# are shown on it; LwtRoutePolicy's own schema is exercised by the structural-schema tests.
THINGS = "example.com/v1/things"


@pytest.fixture(autouse=True)
def things(k8s_api: EmulatedApiServer) -> None:
    k8s_api.register_resource("example.com", "v1", "things", kind="Thing", namespaced=True,
                              status_subresource=True)


def thing(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "example.com/v1", "kind": "Thing",
            "metadata": {"name": name}, "spec": spec or {"color": "red"}}


def valid_policy(name: str) -> dict[str, Any]:
    return {"apiVersion": "lwt.dev/v1alpha1", "kind": "LwtRoutePolicy",
            "metadata": {"name": name},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                     "hooks": {"in": {"program": {"builtin": "counters"}}}}}


def pod(name: str, node: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]}}


def events_since(kube: Kube, path: str, version: str, **params: str) -> list[dict[str, Any]]:
    """The watch events after `version`, read from a watch that the server closes after 0.3 s."""
    return list(kube.watch(path, resourceVersion=version, timeoutSeconds="0.3", **params))


# --- 1. resourceVersion, uid, optimistic concurrency -------------------------------------------

def test_create_sets_uid_resource_version_generation_and_namespace(kube: Kube) -> None:
    created = kube.create(api_path(THINGS, "shop"), thing("p1"))
    meta = created["metadata"]
    assert len(meta["uid"]) == 36
    assert int(meta["resourceVersion"]) > 0
    assert meta["generation"] == 1
    assert meta["namespace"] == "shop"  # from the URL: kmock keeps the body as sent
    assert meta["creationTimestamp"].endswith("Z")
    with pytest.raises(ApiError) as exc:
        kube.create(api_path(THINGS, "shop"), thing("p1"))
    assert exc.value.status == 409 and exc.value.reason == "AlreadyExists"


def test_resource_version_increases_on_every_write_and_not_on_noop(kube: Kube) -> None:
    path = api_path(THINGS, "shop", "p1")
    v1 = int(kube.create(api_path(THINGS, "shop"), thing("p1"))["metadata"]["resourceVersion"])
    v2 = int(kube.merge_patch(path, {"metadata": {"labels": {"a": "b"}}})["metadata"]
             ["resourceVersion"])
    kube.create(api_path(THINGS, "other"), thing("p2"))  # the counter is cluster-wide
    v3 = int(kube.merge_patch(path, {"spec": {"priority": 5}})["metadata"]["resourceVersion"])
    assert v1 < v2 < v3 - 1
    same = kube.merge_patch(path, {"spec": {"priority": 5}})
    assert int(same["metadata"]["resourceVersion"]) == v3  # nothing changed: no new version


def test_stale_updates_conflict(kube: Kube) -> None:
    path = api_path(THINGS, "shop", "p1")
    stale = kube.create(api_path(THINGS, "shop"), thing("p1"))
    kube.merge_patch(path, {"spec": {"priority": 1}})
    # PUT with the old resourceVersion: 409, as client-go's retry-on-conflict expects.
    with pytest.raises(ApiError) as exc:
        kube.replace(path, {**stale, "spec": {"priority": 2}})
    assert exc.value.status == 409 and exc.value.reason == "Conflict"
    # A merge patch that carries a resourceVersion is conditional too.
    with pytest.raises(ApiError) as exc:
        kube.merge_patch(path, {"metadata": {"resourceVersion": stale["metadata"]
                                             ["resourceVersion"]}, "spec": {"priority": 3}})
    assert exc.value.status == 409
    # kopf's finalizer patch: JSON patch guarded by a `test` of the resourceVersion -> 422.
    with pytest.raises(ApiError) as exc:
        kube.json_patch(path, [
            {"op": "test", "path": "/metadata/resourceVersion",
             "value": stale["metadata"]["resourceVersion"]},
            {"op": "add", "path": "/metadata/finalizers", "value": ["x/y"]}])
    assert exc.value.status == 422
    # With the current version, both succeed.
    current = kube.get(path)
    replaced = kube.replace(path, {**current, "spec": {"priority": 9}})
    assert replaced["spec"] == {"priority": 9}
    assert replaced["metadata"]["uid"] == stale["metadata"]["uid"]


# --- 2. namespaced objects in watches ---------------------------------------------------------

def test_namespaced_watch_gets_events_of_its_namespace_only(kube: Kube) -> None:
    version = kube.get(api_path(THINGS))["metadata"]["resourceVersion"]
    kube.create(api_path(THINGS, "shop"), thing("p1"))
    kube.create(api_path(THINGS, "bank"), thing("p2"))
    shop = events_since(kube, api_path(THINGS, "shop"), version)
    everywhere = events_since(kube, api_path(THINGS), version)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in shop] == [("ADDED", "p1")]
    assert [e["object"]["metadata"]["namespace"] for e in everywhere] == ["shop", "bank"]


def test_watch_delivers_live_events(kube: Kube) -> None:
    received: list[dict[str, Any]] = []
    watcher = threading.Thread(target=lambda: received.extend(
        kube.watch(api_path(THINGS, "shop"), timeoutSeconds="1")))
    watcher.start()
    time.sleep(0.2)
    kube.create(api_path(THINGS, "shop"), thing("p1"))
    kube.merge_patch(api_path(THINGS, "shop", "p1"), {"spec": {"priority": 1}})
    kube.delete(api_path(THINGS, "shop", "p1"))
    watcher.join(5)
    assert [e["type"] for e in received] == ["ADDED", "MODIFIED", "DELETED"]


# --- 3. label and field selectors -------------------------------------------------------------

def test_label_selectors_filter_lists(kube: Kube) -> None:
    for name, labels in [("a", {"app": "web", "tier": "1"}), ("b", {"app": "db"}), ("c", {})]:
        kube.create(api_path(PODS, "shop"), pod(name, "node-1", labels))

    def names(selector: str) -> list[str]:
        items = kube.get(api_path(PODS, "shop"), labelSelector=selector)["items"]
        return [i["metadata"]["name"] for i in items]

    assert names("app=web") == ["a"]
    assert names("app==web") == ["a"]
    assert names("app!=web") == ["b", "c"]
    assert names("app in (web,db)") == ["a", "b"]
    assert names("app notin (web)") == ["b", "c"]
    assert names("tier") == ["a"]
    assert names("!tier") == ["b", "c"]
    assert names("app=web,tier=2") == []
    with pytest.raises(ApiError) as exc:
        names("app in web")
    assert exc.value.status == 400


def test_field_selector_spec_node_name_on_pods(kube: Kube) -> None:
    kube.create(api_path(PODS, "shop"), pod("a", "node-1"))
    kube.create(api_path(PODS, "bank"), pod("b", "node-2"))
    kube.create(api_path(PODS, "bank"), pod("c", "node-1"))
    on_node_1 = kube.get(api_path(PODS), fieldSelector="spec.nodeName=node-1")["items"]
    assert sorted(i["metadata"]["name"] for i in on_node_1) == ["a", "c"]
    not_node_1 = kube.get(api_path(PODS), fieldSelector="spec.nodeName!=node-1")["items"]
    assert [i["metadata"]["name"] for i in not_node_1] == ["b"]
    by_name = kube.get(api_path(PODS), fieldSelector="metadata.namespace=bank,metadata.name=c")
    assert [i["metadata"]["name"] for i in by_name["items"]] == ["c"]
    # A real API server refuses field paths a resource does not index.
    with pytest.raises(ApiError) as exc:
        kube.get(api_path(THINGS), fieldSelector="spec.color=red")
    assert exc.value.status == 400 and "field label not supported" in str(exc.value)


def test_watch_with_field_selector_sees_objects_enter_and_leave(kube: Kube) -> None:
    version = kube.get(api_path(PODS))["metadata"]["resourceVersion"]
    kube.create(api_path(PODS, "shop"), pod("a", "node-2", {"app": "web"}))
    kube.create(api_path(PODS, "shop"), pod("b", "node-1", {"app": "web"}))
    kube.merge_patch(api_path(PODS, "shop", "b"), {"metadata": {"labels": {"app": "db"}}})
    kube.merge_patch(api_path(PODS, "shop", "b"), {"metadata": {"labels": {"app": "web"}}})
    events = events_since(kube, api_path(PODS), version,
                          fieldSelector="spec.nodeName=node-1", labelSelector="app=web")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "b"), ("DELETED", "b"), ("ADDED", "b")]


# --- 4. the /status subresource and generation ------------------------------------------------

def test_status_subresource_is_separate_from_the_main_resource(kube: Kube) -> None:
    created = kube.create(api_path(THINGS, "shop"), {**thing("p1"), "status": {"x": 1}})
    assert "status" not in created  # a custom resource's create ignores .status
    path = api_path(THINGS, "shop", "p1")
    # A spec write that carries status: the status part is ignored.
    after_spec = kube.merge_patch(path, {"spec": {"priority": 2}, "status": {"summary": {}}})
    assert after_spec["spec"]["priority"] == 2 and "status" not in after_spec
    assert after_spec["metadata"]["generation"] == 2
    # A status write that carries spec: the spec part is ignored, generation stays.
    after_status = kube.merge_patch(path + "/status", {"spec": {"priority": 7},
                                                       "status": {"nodes": {"n1": {"routes": 3}}}})
    assert after_status["spec"]["priority"] == 2
    assert after_status["status"] == {"nodes": {"n1": {"routes": 3}}}
    assert after_status["metadata"]["generation"] == 2
    # Two agents patch their own keys: the merge patch keeps both.
    kube.merge_patch(path + "/status", {"status": {"nodes": {"n2": {"routes": 1}}}})
    assert set(kube.get(path)["status"]["nodes"]) == {"n1", "n2"}
    # PUT of the main resource keeps the stored status.
    current = kube.get(path)
    replaced = kube.replace(path, {**current, "status": {}})
    assert replaced["status"] == current["status"]
    assert kube.get(path + "/status")["status"] == current["status"]


def test_generation_bumps_only_on_spec_changes(kube: Kube) -> None:
    path = api_path(THINGS, "shop", "p1")
    kube.create(api_path(THINGS, "shop"), thing("p1"))
    kube.merge_patch(path, {"metadata": {"labels": {"x": "y"}, "annotations": {"a": "b"},
                                         "finalizers": ["f/g"]}})
    kube.merge_patch(path + "/status", {"status": {"observedGeneration": 1}})
    assert kube.get(path)["metadata"]["generation"] == 1
    kube.merge_patch(path, {"spec": {"priority": 4}})
    assert kube.get(path)["metadata"]["generation"] == 2


# --- 5. patch types ---------------------------------------------------------------------------

def test_json_merge_patch_and_json_patch(kube: Kube) -> None:
    path = api_path(THINGS, "shop", "p1")
    kube.create(api_path(THINGS, "shop"), thing("p1", priority=1, hooks={"out": {"a": 1}}))
    merged = kube.merge_patch(path, {"spec": {"priority": None, "hooks": {"in": {"b": 2}}}})
    assert merged["spec"] == {"hooks": {"out": {"a": 1}, "in": {"b": 2}}}  # null deletes
    patched = kube.json_patch(path, [
        {"op": "add", "path": "/metadata/finalizers", "value": ["lwt.dev/finalizer"]},
        {"op": "remove", "path": "/spec/hooks/in"},
        {"op": "replace", "path": "/spec/hooks/out/a", "value": 5}])
    assert patched["spec"] == {"hooks": {"out": {"a": 5}}}
    assert patched["metadata"]["finalizers"] == ["lwt.dev/finalizer"]
    with pytest.raises(ApiError) as exc:
        kube.json_patch(path, [{"op": "remove", "path": "/spec/nothing"}])
    assert exc.value.status == 422
    # Strategic merge patch exists for built-ins only; custom resources answer 415.
    with pytest.raises(ApiError) as exc:
        kube.request("PATCH", path, {"spec": {}}, "application/strategic-merge-patch+json")
    assert exc.value.status == 415


def test_strategic_merge_patch_on_builtins_and_404_on_missing(kube: Kube) -> None:
    ds = {"metadata": {"name": "agent"}, "spec": {"template": {"spec": {"hostNetwork": True}}}}
    kube.create(api_path(DAEMONSETS, "lwt-system"), ds)
    patched = kube.request("PATCH", api_path(DAEMONSETS, "lwt-system", "agent"),
                           {"spec": {"minReadySeconds": 5}},
                           "application/strategic-merge-patch+json")
    assert patched["spec"]["minReadySeconds"] == 5
    assert patched["spec"]["template"]["spec"]["hostNetwork"] is True
    with pytest.raises(ApiError) as exc:
        kube.merge_patch(api_path(DAEMONSETS, "lwt-system", "nope"), {"spec": {}})
    assert exc.value.status == 404


# --- 6. deletion with finalizers -------------------------------------------------------------

def test_deletion_waits_for_finalizers(kube: Kube) -> None:
    path = api_path(THINGS, "shop", "p1")
    body = thing("p1")
    body["metadata"]["finalizers"] = ["lwt.dev/a", "lwt.dev/b"]
    version = kube.create(api_path(THINGS, "shop"), body)["metadata"]["resourceVersion"]
    deleting = kube.delete(path)
    assert deleting["metadata"]["deletionTimestamp"]
    assert deleting["metadata"]["generation"] == 2  # as apiserver's markAsDeleting does
    assert kube.get(path)["metadata"]["deletionTimestamp"] == deleting["metadata"][
        "deletionTimestamp"]
    kube.delete(path)  # a second delete changes nothing
    with pytest.raises(ApiError) as exc:
        kube.merge_patch(path, {"metadata": {"finalizers": ["lwt.dev/a", "lwt.dev/b", "new/c"]}})
    assert exc.value.status == 422  # no new finalizers once deletion started
    kube.merge_patch(path, {"metadata": {"finalizers": ["lwt.dev/b"]}})
    assert kube.get(path)["metadata"]["finalizers"] == ["lwt.dev/b"]
    kube.json_patch(path, [{"op": "remove", "path": "/metadata/finalizers/0"}])
    with pytest.raises(ApiError) as exc:
        kube.get(path)
    assert exc.value.status == 404
    events = events_since(kube, api_path(THINGS, "shop"), version)
    assert [e["type"] for e in events] == ["MODIFIED", "MODIFIED", "DELETED"]


def test_delete_without_finalizers_and_preconditions(kube: Kube) -> None:
    path = api_path(THINGS, "shop", "p1")
    kube.create(api_path(THINGS, "shop"), thing("p1"))
    with pytest.raises(ApiError) as exc:
        kube.delete(path, {"preconditions": {"uid": "not-the-uid"}})
    assert exc.value.status == 409
    kube.delete(path)
    with pytest.raises(ApiError) as exc:
        kube.delete(path)
    assert exc.value.status == 404
    # A re-created object is a new object: new uid, generation 1.
    again = kube.create(api_path(THINGS, "shop"), thing("p1"))
    assert again["metadata"]["generation"] == 1


# --- 7. watch resumption, expiry, timeouts, initial events ----------------------------------

def test_watch_resumes_from_a_resource_version(kube: Kube) -> None:
    kube.create(api_path(THINGS, "shop"), thing("p1"))
    middle = kube.merge_patch(api_path(THINGS, "shop", "p1"), {"spec": {"priority": 1}})
    kube.merge_patch(api_path(THINGS, "shop", "p1"), {"spec": {"priority": 2}})
    events = events_since(kube, api_path(THINGS), middle["metadata"]["resourceVersion"])
    assert [(e["type"], e["object"]["spec"]["priority"]) for e in events] == [("MODIFIED", 2)]
    # Without a version, the current state comes first as ADDED (what a relist would show).
    fresh = list(kube.watch(api_path(THINGS), timeoutSeconds="0.3"))
    assert [(e["type"], e["object"]["spec"]["priority"]) for e in fresh] == [("ADDED", 2)]


def test_watch_from_a_compacted_version_is_gone(k8s_api: EmulatedApiServer,
                                                kube: Kube) -> None:
    assert k8s_api.emulator is not None
    k8s_api.emulator.event_log_limit = 3
    first = kube.create(api_path(THINGS, "shop"), thing("p1"))
    for priority in range(5):
        kube.merge_patch(api_path(THINGS, "shop", "p1"), {"spec": {"priority": priority}})
    events = events_since(kube, api_path(THINGS), first["metadata"]["resourceVersion"])
    assert events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410


def test_watch_timeout_and_initial_events_bookmark(kube: Kube) -> None:
    kube.create(api_path(THINGS, "shop"), thing("p1"))
    started = time.monotonic()
    events = list(kube.watch(api_path(THINGS), timeoutSeconds="0.5", sendInitialEvents="true",
                             resourceVersionMatch="NotOlderThan", allowWatchBookmarks="true"))
    assert 0.4 < time.monotonic() - started < 3
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


# --- 8. list versions and pagination -----------------------------------------------------------

def test_list_has_a_resource_version_and_pages(kube: Kube) -> None:
    for i in range(5):
        kube.create(api_path(PODS, "shop"), pod(f"p{i}", "node-1"))
    first = kube.get(api_path(PODS), limit="2")
    assert int(first["metadata"]["resourceVersion"]) >= 5
    names = [i["metadata"]["name"] for i in first["items"]]
    token = first["metadata"]["continue"]
    while token:
        page = kube.get(api_path(PODS), limit="2", **{"continue": token})
        names += [i["metadata"]["name"] for i in page["items"]]
        token = page["metadata"]["continue"]
    assert names == [f"p{i}" for i in range(5)]


# --- 9. CRDs ---------------------------------------------------------------------------------

def test_crd_file_is_served_in_discovery(kube: Kube) -> None:
    resources = kube.get("/apis/lwt.dev/v1alpha1")["resources"]
    assert {r["name"] for r in resources} >= {"lwtroutepolicies", "lwtroutepolicies/status"}
    main = next(r for r in resources if r["name"] == "lwtroutepolicies")
    status = next(r for r in resources if r["name"] == "lwtroutepolicies/status")
    assert sorted(status["verbs"]) == ["get", "patch", "update"]
    assert "watch" in main["verbs"] and "deletecollection" in main["verbs"]
    assert main["kind"] == "LwtRoutePolicy" and main["namespaced"] is True
    assert "lrp" in main["shortNames"]
    if CRD_FILE.exists():  # the generated CRD, once lwt_policy writes it
        crd = yaml.safe_load(CRD_FILE.read_text())
        assert main["shortNames"] == crd["spec"]["names"]["shortNames"]


def test_posting_a_crd_registers_its_resource(kube: Kube) -> None:
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "widgets.example.com"},
           "spec": {"group": "example.com", "scope": "Cluster",
                    "names": {"plural": "widgets", "kind": "Widget"},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "selectableFields": [{"jsonPath": ".spec.color"}]}]}}
    kube.create(api_path("apiextensions.k8s.io/v1/customresourcedefinitions"), crd)
    kube.create(api_path("example.com/v1/widgets"),
                {"metadata": {"name": "w1"}, "spec": {"color": "red"}})
    kube.create(api_path("example.com/v1/widgets"),
                {"metadata": {"name": "w2"}, "spec": {"color": "blue"}})
    red = kube.get(api_path("example.com/v1/widgets"), fieldSelector="spec.color=red")
    assert [i["metadata"]["name"] for i in red["items"]] == ["w1"]
    with pytest.raises(ApiError) as exc:  # cluster-scoped: no namespaced URL
        kube.get(api_path("example.com/v1/widgets", "shop"))
    assert exc.value.status == 404


def test_namespace_objects(kube: Kube) -> None:
    """kmock's path parser takes /api/v1/namespaces/<name> for a namespace prefix (HTTP 500)."""
    version = kube.get("/api/v1/namespaces")["metadata"]["resourceVersion"]
    kube.create("/api/v1/namespaces", {"metadata": {"name": "shop"}})
    kube.merge_patch("/api/v1/namespaces/shop", {"metadata": {"labels": {"team": "a"}}})
    assert kube.get("/api/v1/namespaces/shop")["metadata"]["labels"] == {"team": "a"}
    assert [n["metadata"]["name"] for n in kube.get("/api/v1/namespaces",
                                                    labelSelector="team=a")["items"]] == ["shop"]
    kube.delete("/api/v1/namespaces/shop")
    events = events_since(kube, "/api/v1/namespaces", version)
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]


# --- structural schema of the CRD ----------------------------------------------------------------

def test_policies_are_pruned_and_defaulted_like_a_real_server(kube: Kube) -> None:
    body = valid_policy("p1")
    body["spec"]["unknownField"] = 1  # pruned (kubectl would warn; the server drops it)
    body["spec"]["hooks"]["in"]["config"] = {"anything": {"goes": 1}}  # config is typed too
    created = kube.create(api_path(POLICIES, "shop"), body)
    assert "unknownField" not in created["spec"]
    assert created["spec"]["failurePolicy"] == "FailOpen"  # the schema's defaults
    assert created["spec"]["priority"] == 100
    assert created["spec"]["hooks"]["in"]["config"] == {}
    # Pruning an unknown field away is no change: no new generation.
    again = kube.merge_patch(api_path(POLICIES, "shop", "p1"), {"spec": {"alsoUnknown": 2}})
    assert again["metadata"]["generation"] == 1
    # kubectl asks for fieldValidation=Strict: then unknown fields are refused.
    with pytest.raises(ApiError) as exc:
        kube.request("PATCH", api_path(POLICIES, "shop", "p1"), {"spec": {"alsoUnknown": 2}},
                     "application/merge-patch+json", params={"fieldValidation": "Strict"})
    assert exc.value.status == 400 and 'unknown field "spec.alsoUnknown"' in str(exc.value)


def test_invalid_policies_and_status_writes_are_refused(kube: Kube) -> None:
    bad = valid_policy("p1")
    bad["spec"]["failurePolicy"] = "Sometimes"
    bad["spec"]["hooks"]["xmit"] = {"program": {"builtin": "encap"}, "headroom": "a lot"}
    with pytest.raises(ApiError) as exc:
        kube.create(api_path(POLICIES, "shop"), bad)
    assert exc.value.status == 422 and exc.value.reason == "Invalid"
    assert 'spec.failurePolicy: Unsupported value: "Sometimes"' in str(exc.value)
    assert "spec.hooks.xmit.headroom" in str(exc.value)
    kube.create(api_path(POLICIES, "shop"), valid_policy("p1"))
    status = api_path(POLICIES, "shop", "p1", "status")
    # A writer that puts a string where the schema wants an integer: refused, as a real
    # server would; the status stays as it was.
    with pytest.raises(ApiError) as exc:
        kube.merge_patch(status, {"status": {"summary": {"attachedRoutes": "two"}}})
    assert exc.value.status == 422
    assert "status.summary.attachedRoutes" in str(exc.value)
    kube.merge_patch(status, {"status": {"summary": {"attachedRoutes": 2, "routes": 2}}})
    assert kube.get(status)["status"]["summary"]["attachedRoutes"] == 2


# --- 10. restarts and fault injection -----------------------------------------------------------

def test_restart_keeps_objects_and_versions(k8s_api: EmulatedApiServer, kube: Kube) -> None:
    created = kube.create(api_path(THINGS, "shop"), thing("p1"))
    port = k8s_api.port
    k8s_api.stop_listening()
    with pytest.raises(ApiError) as exc:
        kube.get(api_path(THINGS, "shop", "p1"))
    assert exc.value.status == 0  # unreachable
    k8s_api.start_listening()
    assert k8s_api.port == port
    assert kube.get(api_path(THINGS, "shop", "p1"))["metadata"]["uid"] == created["metadata"][
        "uid"]
    patched = kube.merge_patch(api_path(THINGS, "shop", "p1"), {"spec": {"priority": 1}})
    assert int(patched["metadata"]["resourceVersion"]) > int(created["metadata"][
        "resourceVersion"])


def test_kmock_reactions_inject_faults(k8s_api: EmulatedApiServer, kube: Kube) -> None:
    assert k8s_api.emulator is not None
    k8s_api.emulator["list", k8s_api.emulator.resource("v1/pods")] << 503
    with pytest.raises(ApiError) as exc:
        kube.get(api_path(PODS))
    assert exc.value.status == 503
    kube.create(api_path(PODS, "shop"), pod("a", "node-1"))  # other requests still work


# --- 11. the official client ------------------------------------------------------------------

def test_the_official_kubernetes_client_works(k8s_api: EmulatedApiServer) -> None:
    """What the agent does with the `kubernetes` package: list and watch its node's pods, read
    their IPs, patch its policy status entry, post an Event."""
    kubernetes = pytest.importorskip("kubernetes")
    client = kubernetes.config.new_client_from_config(config_file=str(k8s_api.kubeconfig))
    core = kubernetes.client.CoreV1Api(client)
    custom = kubernetes.client.CustomObjectsApi(client)
    core.create_namespaced_pod("shop", pod("a", "node-1", {"app": "web"}))
    core.patch_namespaced_pod_status("a", "shop", {"status": {
        "podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}], "phase": "Running"}})
    listed = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=node-1")
    assert [(p.metadata.name, p.status.pod_ip) for p in listed.items] == [("a", "10.0.0.5")]

    seen: list[tuple[str, str]] = []

    def watch() -> None:
        stream = kubernetes.watch.Watch().stream(
            core.list_pod_for_all_namespaces, field_selector="spec.nodeName=node-1",
            timeout_seconds=1, resource_version=listed.metadata.resource_version)
        seen.extend((event["type"], event["object"].metadata.name) for event in stream)

    watcher = threading.Thread(target=watch)
    watcher.start()
    time.sleep(0.2)
    core.create_namespaced_pod("shop", pod("b", "node-1"))
    core.create_namespaced_pod("shop", pod("c", "node-2"))
    core.delete_namespaced_pod("a", "shop")
    watcher.join(5)
    assert seen == [("ADDED", "b"), ("DELETED", "a")]

    custom.create_namespaced_custom_object("lwt.dev", "v1alpha1", "shop", "lwtroutepolicies",
                                           valid_policy("p1"))
    patched = custom.patch_namespaced_custom_object_status(
        "lwt.dev", "v1alpha1", "shop", "lwtroutepolicies", "p1",
        {"status": {"summary": {"routes": 1}}})
    assert patched["status"] == {"summary": {"routes": 1}}
    core.create_namespaced_event("shop", {
        "metadata": {"generateName": "p1-"}, "type": "Warning", "reason": "AttachFailed",
        "message": "m", "involvedObject": {"kind": "LwtRoutePolicy", "name": "p1",
                                           "namespace": "shop"}})
    events = core.list_namespaced_event("shop", field_selector="involvedObject.name=p1").items
    assert [e.reason for e in events] == ["AttachFailed"]


def test_object_requests_cost_does_not_grow_with_the_request_count(kube: Kube) -> None:
    """kmock matches each request by re-filtering its whole request log (2,000 pod creations:
    270 s). The agents' benchmarks create thousands of pods: requests must stay O(1)."""
    def create(count: int, offset: int) -> float:
        started = time.monotonic()
        for i in range(offset, offset + count):
            kube.create(api_path(PODS, "shop"), pod(f"p{i}", "node-1"))
        return time.monotonic() - started

    first = create(200, 0)
    create(800, 200)
    later = create(200, 1000)
    assert later < 3 * first + 0.5, (first, later)
    listed = kube.get(api_path(PODS), fieldSelector="spec.nodeName=node-1")["items"]
    assert len(listed) == 1200
