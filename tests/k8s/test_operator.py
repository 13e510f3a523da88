"""The operator against the emulated API, in one process: kopf runs in a thread.

The agents are simulated here: each writes its node's LwtNodeState (its entry for every policy)
with a JSON merge patch on /status, as the real agents do (the agents' own end-to-end suite
runs them for real on netns "nodes"); nothing is written into policies but by the operator.
"""
from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from lwt_kube import ApiError, Kube, api_path
from lwt_operator.config import OperatorConfig, Timings
from lwt_operator.settings import AgentSettings
from lwt_policy import contract
from lwt_policy.status import node_state_object

from tests.k8s.conftest import NODE_STATES, POLICIES
from tests.k8s.emulator import EmulatedApiServer
from tests.k8s.harness import RunningOperator, wait_for

REPO = Path(__file__).resolve().parents[2]
PEERING_CRD = REPO / "charts" / "lwt-operator" / "crds" / "kopf.dev_clusterkopfpeerings.yaml"
DAEMONSET = api_path("apps/v1/daemonsets", "lwt-system", "lwt-agent")
NODES = "v1/nodes"


def operator_config(api: EmulatedApiServer, **overrides: Any) -> OperatorConfig:
    options: dict[str, Any] = {
        "kubeconfig": api.kubeconfig,
        "agent": AgentSettings(image="registry.example/lwt-operator:test"),
        "finalizer_timeout": 3.0,
        "timings": Timings.fast(),
        **overrides,
    }
    return OperatorConfig(**options)


@pytest.fixture
def operator(k8s_api: EmulatedApiServer) -> Iterator[RunningOperator]:
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    running = RunningOperator(operator_config(k8s_api)).start()
    try:
        yield running
    finally:
        running.stop()


def add_node(kube: Kube, name: str, **labels: str) -> None:
    kube.create(api_path(NODES), {"metadata": {"name": name, "labels": {
        "kubernetes.io/os": "linux", "kubernetes.io/hostname": name, **labels}}})


def apply_example(kube: Kube, example: str = "deny-port.yaml") -> dict[str, Any]:
    obj = yaml.safe_load((REPO / "examples" / example).read_text())
    namespace = obj["metadata"].pop("namespace")
    return kube.create(api_path(POLICIES, namespace), obj)


def path_of(obj: dict[str, Any], subresource: str | None = None) -> str:
    meta = obj["metadata"]
    return api_path(POLICIES, meta["namespace"], meta["name"], subresource)


def report(kube: Kube, obj: dict[str, Any], node: str, **fields: Any) -> None:
    """What an agent writes: its node's LwtNodeState with this policy's entry (created when
    missing; the whole list of entries by JSON merge patch on /status)."""
    meta = obj["metadata"]
    try:
        current = kube.get(api_path(NODE_STATES, name=node))
    except ApiError as exc:
        if exc.status != 404:
            raise
        current = kube.create(api_path(NODE_STATES), node_state_object(node, None))
    entries = [e for e in (current.get("status") or {}).get("policies") or []
               if (e["namespace"], e["name"]) != (meta["namespace"], meta["name"])]
    entries.append({"namespace": meta["namespace"], "name": meta["name"], **fields})
    kube.merge_patch(api_path(NODE_STATES, name=node, subresource="status"),
                     {"status": {"policies": entries}})


def attached(generation: int, routes: int) -> dict[str, Any]:
    return {"observedGeneration": generation, "routes": routes, "attachedRoutes": routes,
            "lastError": None, "programs": {"out": {"id": 7, "tag": "0123456789abcdef"}}}


def condition(kube: Kube, obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    current = kube.get(path_of(obj))
    found = contract.find_condition(current, type_)
    return dict(found) if found else None


def wait_condition(kube: Kube, obj: dict[str, Any], type_: str, status: str,
                   reason: str | None = None, timeout: float = 10) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        found = condition(kube, obj, type_)
        if found and found["status"] == status and reason in (None, found["reason"]):
            return found
        return None

    return wait_for(probe, timeout, f"{type_}={status} {reason or ''} on "
                                    f"{obj['metadata']['name']}")


# --- the agent DaemonSet -------------------------------------------------------------------

def test_daemonset_is_created_repaired_and_recreated(operator: RunningOperator,
                                                     kube: Kube) -> None:
    created = wait_for(lambda: kube.get(DAEMONSET), what="the agent DaemonSet")
    pod = created["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.example/lwt-operator:test"
    assert pod["hostNetwork"] is True
    # Someone edits the DaemonSet by hand: the operator puts its spec back.
    kube.merge_patch(DAEMONSET, {"spec": {"template": {"spec": {"hostNetwork": False}}}})
    wait_for(lambda: kube.get(DAEMONSET)["spec"]["template"]["spec"]["hostNetwork"] is True,
             what="the drift repaired")
    # Someone deletes it: the operator creates it again.
    kube.delete(DAEMONSET)
    recreated = wait_for(lambda: kube.get(DAEMONSET), what="the DaemonSet re-created")
    assert recreated["metadata"]["uid"] != created["metadata"]["uid"]


# --- validation ----------------------------------------------------------------------------

def test_bad_policy_is_rejected_with_a_condition_and_an_event(operator: RunningOperator,
                                                              kube: Kube) -> None:
    obj = yaml.safe_load((REPO / "examples" / "deny-port.yaml").read_text())
    obj["metadata"]["name"] = "bad-port"
    # Valid for the API server (the CRD types config), refused by the operator's semantics.
    obj["spec"]["hooks"]["out"]["config"]["denySourceCIDRs"] = ["10.0.0.0/33"]
    bad = kube.create(api_path(POLICIES, "shop"), obj)
    ready = wait_condition(kube, bad, contract.READY, "False", contract.INVALID_SPEC)
    assert "spec.hooks.out.config.denySourceCIDRs[0]" in ready["message"]
    current = kube.get(path_of(bad))
    assert contract.is_rejected(current) and not contract.is_accepted(current)

    def warning_events() -> list[dict[str, Any]]:
        events = kube.get(api_path("v1/events", "shop"),
                          fieldSelector="involvedObject.name=bad-port")["items"]
        return [e for e in events if e.get("reason") == contract.INVALID_SPEC]

    event = wait_for(warning_events, what="the InvalidSpec event")[0]
    assert event["type"] == "Warning" and "denySourceCIDRs" in event["message"]
    time.sleep(1)  # the timer and later events judge it again: still one Event
    assert len(warning_events()) == 1

    # Fixing the spec: the new generation is accepted.
    fixed = kube.merge_patch(path_of(bad), {"spec": {"hooks": {"out": {"config": {
        "denySourceCIDRs": ["10.0.0.0/8"]}}}}})
    accepted = wait_condition(kube, bad, contract.ACCEPTED, "True")
    assert accepted["observedGeneration"] == fixed["metadata"]["generation"] == 2


def test_accepted_is_written_only_once_the_finalizer_is_there(
        k8s_api: EmulatedApiServer, operator: RunningOperator, kube: Kube) -> None:
    """Agents attach only to accepted policies; the finalizer must already guard them then."""
    policy = apply_example(kube)
    wait_condition(kube, policy, contract.ACCEPTED, "True")
    first_accepted = next(v for v in versions(k8s_api, policy) if contract.is_accepted(v))
    assert contract.FINALIZER in first_accepted["metadata"]["finalizers"]


# --- aggregation -------------------------------------------------------------------------------

def test_node_reports_become_ready_with_a_summary(operator: RunningOperator,
                                                  kube: Kube) -> None:
    add_node(kube, "node-a")
    add_node(kube, "node-b")
    policy = apply_example(kube)
    wait_condition(kube, policy, contract.ACCEPTED, "True")
    waiting = wait_condition(kube, policy, contract.READY, "False", contract.NODES_NOT_READY)
    assert "node-a: no report yet" in waiting["message"]

    report(kube, policy, "node-a", **attached(1, 3))
    wait_for(lambda: kube.get(path_of(policy))["status"]["summary"]["nodesReady"] == "1/2",
             what="1/2 ready")
    assert condition(kube, policy, contract.PROGRESSING)["status"] == "True"  # type: ignore

    report(kube, policy, "node-b", **attached(1, 2))
    ready = wait_condition(kube, policy, contract.READY, "True", contract.ALL_NODES_READY)
    assert ready["observedGeneration"] == 1
    status = kube.get(path_of(policy))["status"]
    assert status["summary"] == {"nodes": 2, "readyNodes": 2, "nodesReady": "2/2",
                                 "routes": 5, "attachedRoutes": 5}
    assert status["observedGeneration"] == 1
    assert "nodes" not in status and status["nodesNotReady"] == []  # O(1) in nodes

    # A spec change: the generation moves on and Ready follows it.
    kube.merge_patch(path_of(policy), {"spec": {"failurePolicy": "FailClosed"}})
    wait_condition(kube, policy, contract.PROGRESSING, "True", contract.ROLLING_OUT)
    report(kube, policy, "node-a", **attached(2, 3))
    report(kube, policy, "node-b", lastError={"message": "verifier rejected the program"},
           observedGeneration=2)
    degraded = wait_condition(kube, policy, contract.DEGRADED, "True", contract.NODE_ERRORS)
    assert "node-b: error: verifier rejected the program" in degraded["message"]
    report(kube, policy, "node-b", **attached(2, 2))
    wait_condition(kube, policy, contract.READY, "True")
    assert condition(kube, policy, contract.DEGRADED)["status"] == "False"  # type: ignore


def test_entries_of_deleted_nodes_stop_counting(operator: RunningOperator,
                                               kube: Kube) -> None:
    add_node(kube, "node-a")
    add_node(kube, "node-b")
    policy = apply_example(kube)
    report(kube, policy, "node-a", **attached(1, 1))
    report(kube, policy, "node-b", **attached(1, 1))
    wait_condition(kube, policy, contract.READY, "True")
    # (On a real cluster the garbage collector then deletes node-b's LwtNodeState.)
    kube.delete(api_path(NODES, name="node-b"))
    status = wait_for(lambda: (s := kube.get(path_of(policy))["status"])["summary"]["nodes"] == 1
                      and s, what="the summary without node-b")
    assert status["summary"]["nodesReady"] == "1/1"


# --- deletion --------------------------------------------------------------------------------

def test_finalizer_holds_until_every_node_detached(operator: RunningOperator,
                                                  kube: Kube) -> None:
    add_node(kube, "node-a")
    add_node(kube, "node-b")
    policy = apply_example(kube)
    wait_for(lambda: contract.FINALIZER in kube.get(path_of(policy))["metadata"].get(
        "finalizers", []), what="the finalizer")
    report(kube, policy, "node-a", **attached(1, 1))
    report(kube, policy, "node-b", **attached(1, 1))
    wait_condition(kube, policy, contract.READY, "True")

    kube.delete(path_of(policy))
    held = wait_condition(kube, policy, contract.READY, "False", contract.DELETING)
    assert "node-a" in held["message"] and "node-b" in held["message"]
    report(kube, policy, "node-a", detached=True, routes=0, attachedRoutes=0)
    # Past --finalizer-timeout (3 s here) the condition names the node still holding it.
    timed_out = wait_condition(kube, policy, contract.READY, "False",
                               contract.FINALIZER_TIMEOUT, timeout=10)
    assert "node-b" in timed_out["message"] and "node-a" not in timed_out["message"]
    assert kube.get(path_of(policy))["metadata"]["finalizers"] == [contract.FINALIZER]
    # One Warning Event says so; the handler's retries while waiting post none.
    events = wait_for(lambda: [e for e in kube.get(api_path("v1/events", "shop"))["items"]
                               if e["reason"] == contract.FINALIZER_TIMEOUT],
                      what="the FinalizerTimeout event")
    assert len(events) == 1 and "node-b" in events[0]["message"]
    assert not [e for e in kube.get(api_path("v1/events", "shop"))["items"]
                if "failed temporarily" in e["message"]]

    report(kube, policy, "node-b", detached=True, routes=0, attachedRoutes=0)

    def gone() -> bool:
        try:
            kube.get(path_of(policy))
        except ApiError as exc:
            return exc.status == 404
        return False

    wait_for(gone, what="the policy deleted")


def test_a_node_that_is_gone_does_not_hold_the_finalizer(operator: RunningOperator,
                                                         kube: Kube) -> None:
    add_node(kube, "node-a")
    policy = apply_example(kube)
    report(kube, policy, "node-a", **attached(1, 1))
    report(kube, policy, "node-z", **attached(1, 1))  # no Node object: does not count
    wait_condition(kube, policy, contract.READY, "True")
    kube.delete(path_of(policy))
    wait_condition(kube, policy, contract.READY, "False", contract.DELETING)
    kube.delete(api_path(NODES, name="node-a"))  # the last node goes away without detaching

    def gone() -> bool:
        try:
            kube.get(path_of(policy))
        except ApiError as exc:
            return exc.status == 404
        return False

    wait_for(gone, what="the policy deleted once its only node is gone")


# --- robustness ----------------------------------------------------------------------------

def test_converges_after_an_api_server_restart(k8s_api: EmulatedApiServer,
                                               operator: RunningOperator,
                                               kube: Kube) -> None:
    add_node(kube, "node-a")
    policy = apply_example(kube)
    wait_condition(kube, policy, contract.READY, "False", contract.NODES_NOT_READY)
    kube.create(api_path(NODE_STATES), node_state_object("node-a", None))
    k8s_api.stop_listening()
    # While the API is down nothing can be written; the emulator's store is like etcd: it stays.
    assert k8s_api.emulator is not None
    k8s_api.call(_write_entry_behind_the_apis_back(k8s_api, policy))
    time.sleep(3)  # longer than every request retry of the fast timings (1.1 s in total)
    k8s_api.start_listening()
    wait_condition(kube, policy, contract.READY, "True", timeout=20)
    kube.delete(DAEMONSET)
    wait_for(lambda: kube.get(DAEMONSET), timeout=20, what="the DaemonSet after the restart")


def test_starts_while_the_api_is_down(k8s_api: EmulatedApiServer, kube: Kube) -> None:
    """An operator pod that starts before the API answers keeps retrying and then works."""
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    add_node(kube, "node-a")
    policy = apply_example(kube)
    k8s_api.stop_listening()
    running = RunningOperator(operator_config(k8s_api))
    running._thread.start()  # not start(): it would wait for readiness, which needs the API
    try:
        time.sleep(1.5)  # longer than every request retry of the fast timings (1.1 s)
        k8s_api.start_listening()
        wait_for(lambda: kube.get(DAEMONSET), timeout=20, what="the DaemonSet")
        report(kube, policy, "node-a", **attached(1, 1))
        wait_condition(kube, policy, contract.READY, "True", timeout=20)
    finally:
        running.stop()


def _write_entry_behind_the_apis_back(api: EmulatedApiServer, policy: dict[str, Any]) -> Any:
    """A change committed while clients are disconnected: they must see it when they resume."""
    emulator = api.emulator
    assert emulator is not None
    key = (emulator.resource(NODE_STATES), None, "node-a")
    meta = policy["metadata"]

    async def write() -> None:
        async with emulator._lock:
            old = emulator._current(key)
            assert old is not None
            new = copy.deepcopy(old)
            new["status"] = {"policies": [{"namespace": meta["namespace"],
                                           "name": meta["name"], **attached(1, 4)}]}
            await emulator._commit(key, "MODIFIED", new, old)

    return write


def test_two_replicas_with_peering(k8s_api: EmulatedApiServer, kube: Kube) -> None:
    """kopf peering against the emulator: the higher-priority replica works, the other stands by
    and takes over when the first one stops.

    The replicas are told apart by their verdicts: the standby one has another admin namespace,
    so it would reject the pod-subnet policy that the active one accepts."""
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    k8s_api.call(_register_crd_file(k8s_api, PEERING_CRD))
    peering = api_path("kopf.dev/v1/clusterkopfpeerings", name="lwt-operator")
    kube.create(api_path("kopf.dev/v1/clusterkopfpeerings"),
                {"metadata": {"name": "lwt-operator"}})
    add_node(kube, "node-a")
    active = RunningOperator(operator_config(k8s_api, peering="lwt-operator", standalone=False,
                                             priority=100)).start()
    standby: RunningOperator | None = None
    try:
        wait_for(lambda: len(kube.get(peering).get("status") or {}) == 1, what="one peer")
        standby = RunningOperator(operator_config(
            k8s_api, peering="lwt-operator", standalone=False, priority=50,
            admin_namespace="not-lwt-system")).start()
        wait_for(lambda: len(kube.get(peering).get("status") or {}) == 2, what="two peers")
        policy = apply_example(kube, "admin-pod-subnets.yaml")
        wait_condition(kube, policy, contract.ACCEPTED, "True")
        kube.merge_patch(path_of(policy), {"spec": {"priority": 999}})  # another generation
        wait_for(lambda: contract.is_accepted(kube.get(path_of(policy))),
                 what="generation 2 accepted by the active replica")
        time.sleep(1)  # give a wrongly unpaused standby replica time to show itself
        assert not any(contract.is_rejected(version) for version in versions(k8s_api, policy))
        active.stop()
        # The standby replica takes over (kopf's peer lifetime bounds how soon) and judges with
        # its own admin namespace: the policy is now rejected.
        wait_condition(kube, policy, contract.ACCEPTED, "False", contract.INVALID_SPEC,
                       timeout=30)
    finally:
        if not active.stop_flag.is_set():
            active.stop()
        if standby is not None:
            standby.stop()


def versions(api: EmulatedApiServer, obj: dict[str, Any]) -> list[dict[str, Any]]:
    """Every stored version of an object (kmock keeps the history), oldest first."""
    emulator = api.emulator
    assert emulator is not None
    key = (emulator.resource(POLICIES), obj["metadata"]["namespace"], obj["metadata"]["name"])

    async def read() -> list[dict[str, Any]]:
        async with emulator._lock:
            return [copy.deepcopy(v.raw) for v in emulator.objects[key].history if v is not None]

    return api.call(read)


def _register_crd_file(api: EmulatedApiServer, path: Path) -> Any:
    emulator = api.emulator
    assert emulator is not None

    async def register() -> None:
        emulator.register_crd_file(path)

    return register
