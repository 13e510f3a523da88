"""The operator (kopf + the DaemonSet keeper, in a thread, fast timings) against the real API
server: what tests/k8s/test_operator.py shows on the emulator, where a real server can show it.

Agents are played by the tests (JSON merge patches of `status.nodes.<node>`, as the real
agents write them); the real agents run in tests/e2e. Each test works in namespaces of its own
and with Node objects of its own names, deletes them at the end, and runs the operator with
cluster-admin credentials (the chart's identities are tested in tests/packaging).
"""
from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from lwt_kube import ApiError, Kube, api_path, load_configuration
from lwt_operator.config import OperatorConfig, Timings
from lwt_operator.settings import AgentSettings
from lwt_policy import contract
from lwt_policy.status import node_state_object

from tests.k8s.cluster import ControlPlane
from tests.k8s.harness import RunningOperator, wait_for
from tests.k8s.stand import apply_crds, create_namespace

REPO = Path(__file__).resolve().parents[2]
PEERING_CRD = REPO / "charts" / "lwt-operator" / "crds" / "kopf.dev_clusterkopfpeerings.yaml"
POLICIES = "lwt.dev/v1alpha1/lwtroutepolicies"
NODE_STATES = "lwt.dev/v1alpha1/lwtnodestates"


@dataclass
class Case:
    """One test's corner of the shared cluster."""

    cp: ControlPlane
    kube: Kube
    ns: str  # the policies' namespace
    system: str  # the operator's (DaemonSet) namespace
    nodes: list[str] = field(default_factory=list)
    states: list[str] = field(default_factory=list)  # LwtNodeStates of no Node
    operators: list[RunningOperator] = field(default_factory=list)

    def config(self, **overrides: Any) -> OperatorConfig:
        options: dict[str, Any] = {
            "kubeconfig": self.cp.kubeconfig, "namespace": self.system,
            "admin_namespace": self.system,
            "agent": AgentSettings(image="registry.example/lwt-operator:test"),
            "finalizer_timeout": 3.0, "timings": Timings.fast(), **overrides}
        return OperatorConfig(**options)

    def start_operator(self, **overrides: Any) -> RunningOperator:
        running = RunningOperator(self.config(**overrides)).start(timeout=60)
        self.operators.append(running)
        return running

    @property
    def daemonset(self) -> str:
        return api_path("apps/v1/daemonsets", self.system, "lwt-agent")

    def add_node(self, suffix: str) -> str:
        name = f"{self.ns}-{suffix}"
        self.kube.create(api_path("v1/nodes"), {"metadata": {"name": name, "labels": {
            "kubernetes.io/os": "linux", "kubernetes.io/hostname": name}}})
        self.nodes.append(name)
        return name

    def apply_example(self, example: str = "deny-port.yaml", **spec: Any) -> dict[str, Any]:
        obj = yaml.safe_load((REPO / "examples" / example).read_text())
        obj["metadata"]["namespace"] = self.ns
        obj["spec"].update(spec)
        return self.kube.create(api_path(POLICIES, self.ns), obj)  # type: ignore[no-any-return]

    def path(self, obj: dict[str, Any], sub: str | None = None) -> str:
        return api_path(POLICIES, self.ns, obj["metadata"]["name"], sub)

    def report(self, obj: dict[str, Any], node: str, **fields: Any) -> None:
        """What an agent writes: its node's LwtNodeState with this policy's entry (created
        when missing, owned by its Node; the whole list of entries by merge patch)."""
        meta = obj["metadata"]
        try:
            current = self.kube.get(api_path(NODE_STATES, name=node))
        except ApiError as exc:
            if exc.status != 404:
                raise
            uid = self.kube.get(api_path("v1/nodes", name=node))["metadata"]["uid"] \
                if node in self.nodes else None
            current = self.kube.create(api_path(NODE_STATES), node_state_object(node, uid))
            self.states.append(node)
        entries = [e for e in (current.get("status") or {}).get("policies") or []
                   if (e["namespace"], e["name"]) != (meta["namespace"], meta["name"])]
        entries.append({"namespace": meta["namespace"], "name": meta["name"], **fields})
        self.kube.merge_patch(api_path(NODE_STATES, name=node, subresource="status"),
                              {"status": {"policies": entries}})

    def condition(self, obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
        found = contract.find_condition(self.kube.get(self.path(obj)), type_)
        return dict(found) if found else None

    def wait_condition(self, obj: dict[str, Any], type_: str, status: str,
                       reason: str | None = None, timeout: float = 20) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            found = self.condition(obj, type_)
            if found and found["status"] == status and reason in (None, found["reason"]):
                return found
            return None
        return wait_for(probe, timeout, f"{type_}={status} {reason or ''} on "
                                        f"{obj['metadata']['name']}")

    def gone(self, obj: dict[str, Any]) -> bool:
        try:
            self.kube.get(self.path(obj))
        except ApiError as exc:
            return exc.status == 404
        return False

    def events(self, reason: str) -> list[dict[str, Any]]:
        items = self.kube.get(api_path("v1/events", self.ns))["items"]
        return [e for e in items if e.get("reason") == reason]


def attached(generation: int, routes: int) -> dict[str, Any]:
    return {"observedGeneration": generation, "routes": routes, "attachedRoutes": routes,
            "lastError": None, "programs": {"out": {"id": 7, "tag": "0123456789abcdef"}}}


@pytest.fixture(scope="module")
def crds(control_plane: ControlPlane) -> ControlPlane:
    apply_crds(control_plane)
    control_plane.kubectl("apply", "--server-side", "-f", str(PEERING_CRD))
    return control_plane


@pytest.fixture
def case(crds: ControlPlane) -> Iterator[Case]:
    tag = uuid.uuid4().hex[:6]
    kube = Kube(load_configuration(crds.kubeconfig))
    current = Case(crds, kube, f"op-{tag}", f"op-{tag}-system")
    create_namespace(crds, current.ns, None)
    create_namespace(crds, current.system, None)
    try:
        yield current
    finally:
        # Nodes first: with them gone no finalizer waits for a report; then the policies,
        # while an operator still runs to release its finalizer.
        for node in current.nodes:
            crds.kubectl("delete", "node", node, "--wait=false", check=False)
        for node in current.states:
            crds.kubectl("delete", "lwtnodestate", node, "--wait=false", check=False)
        crds.kubectl("delete", "lrp", "--all", "-n", current.ns, "--timeout=30s",
                     check=False)
        for running in current.operators:
            if not running.stop_flag.is_set():
                running.stop()
        crds.kubectl("delete", "namespace", current.ns, current.system, "--wait=false",
                     check=False)
        kube.close()


def test_daemonset_is_created_repaired_and_recreated(case: Case) -> None:
    case.start_operator()
    created = wait_for(lambda: case.kube.get(case.daemonset), 20, "the agent DaemonSet")
    pod = created["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.example/lwt-operator:test"
    assert pod["hostNetwork"] is True
    # The real server fills in dozens of defaults; none of them counts as drift: the operator
    # does not rewrite what it just created.
    time.sleep(2)
    assert case.kube.get(case.daemonset)["metadata"]["generation"] == 1
    case.kube.merge_patch(case.daemonset,
                          {"spec": {"template": {"spec": {"hostNetwork": False}}}})
    wait_for(lambda: case.kube.get(case.daemonset)["spec"]["template"]["spec"]["hostNetwork"]
             is True, 20, "the drift repaired")
    case.kube.delete(case.daemonset)
    recreated = wait_for(lambda: case.kube.get(case.daemonset), 20, "the DaemonSet re-created")
    assert recreated["metadata"]["uid"] != created["metadata"]["uid"]


def test_the_daemonset_follows_its_owner_deployment(case: Case) -> None:
    deployment = case.kube.create(api_path("apps/v1/deployments", case.system), {
        "metadata": {"name": "lwt-operator"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "op"}},
                 "template": {"metadata": {"labels": {"app": "op"}},
                              "spec": {"containers": [{"name": "op", "image": "op"}]}}}})
    case.start_operator(owner_deployment="lwt-operator")
    ds = wait_for(lambda: case.kube.get(case.daemonset), 20, "the agent DaemonSet")
    assert ds["metadata"]["ownerReferences"] == [{
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "lwt-operator",
        "uid": deployment["metadata"]["uid"]}]
    # Deleting the owner: the garbage collector removes the DaemonSet, and the operator
    # (still running here, as during an uninstall) does not bring it back.
    case.kube.delete(api_path("apps/v1/deployments", case.system, "lwt-operator"))

    def collected() -> bool:
        try:
            case.kube.get(case.daemonset)
        except ApiError as exc:
            return exc.status == 404
        return False
    wait_for(collected, 30, "the DaemonSet garbage-collected")
    time.sleep(2)  # several resyncs of the keeper
    assert collected()


def test_bad_policy_is_rejected_with_a_condition_and_one_event(case: Case) -> None:
    case.start_operator()
    # A prefix length the CRD cannot judge (the API server refuses unknown built-ins itself).
    bad = case.apply_example(hooks={"out": {"program": {"builtin": "port-filter"},
                                            "config": {"denySourceCIDRs": ["10.0.0.0/33"]}}})
    ready = case.wait_condition(bad, contract.READY, "False", contract.INVALID_SPEC)
    assert "spec.hooks.out.config.denySourceCIDRs[0]" in ready["message"]
    current = case.kube.get(case.path(bad))
    assert contract.is_rejected(current) and not contract.is_accepted(current)
    event = wait_for(lambda: case.events(contract.INVALID_SPEC), 20, "the InvalidSpec event")[0]
    assert event["type"] == "Warning"
    time.sleep(1.5)  # the timer and later events judge it again: still one Event
    assert len(case.events(contract.INVALID_SPEC)) == 1
    fixed = case.kube.merge_patch(case.path(bad), {"spec": {"hooks": {"out": {
        "program": {"builtin": "port-filter"},
        "config": {"denyTCPPorts": [8080], "denySourceCIDRs": None}}}}})
    accepted = case.wait_condition(bad, contract.ACCEPTED, "True")
    assert accepted["observedGeneration"] == fixed["metadata"]["generation"] == 2


def test_accepted_is_written_only_once_the_finalizer_is_there(case: Case) -> None:
    """Agents attach only to accepted policies; the finalizer must already guard them then.
    Every version of the object is read from a watch opened before it is created."""
    versions: list[dict[str, Any]] = []
    stop = threading.Event()

    def record() -> None:
        watcher = Kube(load_configuration(case.cp.kubeconfig))
        try:
            for event in watcher.watch(api_path(POLICIES, case.ns), timeout=20):
                versions.append(event["object"])
                if stop.is_set():
                    return
        finally:
            watcher.close()
    thread = threading.Thread(target=record, daemon=True)
    thread.start()
    time.sleep(0.5)
    case.start_operator()
    policy = case.apply_example()
    case.wait_condition(policy, contract.ACCEPTED, "True")
    time.sleep(0.5)
    stop.set()
    first = next(v for v in versions if contract.is_accepted(v))
    assert contract.FINALIZER in first["metadata"]["finalizers"]


def test_node_reports_aggregate_into_ready_progressing_degraded(case: Case) -> None:
    case.start_operator()
    a, b = case.add_node("a"), case.add_node("b")
    policy = case.apply_example()
    case.wait_condition(policy, contract.ACCEPTED, "True")
    waiting = case.wait_condition(policy, contract.READY, "False", contract.NODES_NOT_READY)
    assert f"{a}: no report yet" in waiting["message"]
    case.report(policy, a, **attached(1, 3))
    wait_for(lambda: case.kube.get(case.path(policy))["status"]["summary"]["nodesReady"]
             == "1/2", 20, "1/2 ready")
    case.report(policy, b, **attached(1, 2))
    case.wait_condition(policy, contract.READY, "True", contract.ALL_NODES_READY)
    status = case.kube.get(case.path(policy))["status"]
    assert status["summary"] == {"nodes": 2, "readyNodes": 2, "nodesReady": "2/2",
                                 "routes": 5, "attachedRoutes": 5}
    case.kube.merge_patch(case.path(policy), {"spec": {"failurePolicy": "FailClosed"}})
    case.wait_condition(policy, contract.PROGRESSING, "True", contract.ROLLING_OUT)
    case.report(policy, a, **attached(2, 3))
    case.report(policy, b, lastError={"message": "verifier rejected the program"},
                observedGeneration=2)
    degraded = case.wait_condition(policy, contract.DEGRADED, "True", contract.NODE_ERRORS)
    assert f"{b}: error: verifier rejected the program" in degraded["message"]
    case.report(policy, b, **attached(2, 2))
    case.wait_condition(policy, contract.READY, "True")
    # A deleted Node no longer counts (and its LwtNodeState goes with it: garbage collector).
    case.kube.delete(api_path("v1/nodes", name=b))
    wait_for(lambda: case.kube.get(case.path(policy))["status"]["summary"]["nodesReady"]
             == "1/1", 30, f"{b} no longer counted")
    wait_for(lambda: b not in {s["metadata"]["name"] for s in
                               case.kube.get(api_path(NODE_STATES))["items"]}, 60,
             f"{b}'s LwtNodeState garbage-collected")


def test_finalizer_holds_until_every_node_detached(case: Case) -> None:
    case.start_operator()
    a, b = case.add_node("a"), case.add_node("b")
    policy = case.apply_example()
    case.report(policy, a, **attached(1, 1))
    case.report(policy, b, **attached(1, 1))
    case.wait_condition(policy, contract.READY, "True")
    case.kube.delete(case.path(policy))
    held = case.wait_condition(policy, contract.READY, "False", contract.DELETING)
    assert a in held["message"] and b in held["message"]
    case.report(policy, a, detached=True, routes=0, attachedRoutes=0)
    timed_out = case.wait_condition(policy, contract.READY, "False",
                                    contract.FINALIZER_TIMEOUT, timeout=20)
    assert b in timed_out["message"] and a not in timed_out["message"]
    events = wait_for(lambda: case.events(contract.FINALIZER_TIMEOUT), 20,
                      "the FinalizerTimeout event")
    assert len(events) == 1 and b in events[0]["message"]
    # A node that goes away does not hold it either.
    case.kube.delete(api_path("v1/nodes", name=b))
    wait_for(lambda: case.gone(policy), 30, "the policy deleted")


def test_converges_after_an_api_server_restart(case: Case) -> None:
    """The API server stops (watches break, requests fail for longer than every retry) and
    starts again on the same etcd: the operator resumes and converges."""
    case.start_operator()
    a = case.add_node("a")
    policy = case.apply_example()
    case.wait_condition(policy, contract.READY, "False", contract.NODES_NOT_READY)
    case.cp.stop_apiserver()
    try:
        time.sleep(2)
    finally:
        case.cp.start_apiserver()
    case.report(policy, a, **attached(1, 4))
    case.wait_condition(policy, contract.READY, "True", timeout=60)
    case.kube.delete(case.daemonset)
    wait_for(lambda: case.kube.get(case.daemonset), 30, "the DaemonSet after the restart")


def test_starts_while_the_api_is_down(case: Case) -> None:
    a = case.add_node("a")
    policy = case.apply_example()
    case.cp.stop_apiserver()
    running = RunningOperator(case.config())
    case.operators.append(running)
    running._thread.start()  # not start(): it would wait for readiness, which needs the API
    try:
        time.sleep(1.5)  # longer than every request retry of the fast timings
    finally:
        case.cp.start_apiserver()
    wait_for(lambda: case.kube.get(case.daemonset), 60, "the DaemonSet")
    case.report(policy, a, **attached(1, 1))
    case.wait_condition(policy, contract.READY, "True", timeout=60)


def test_two_replicas_with_peering(case: Case) -> None:
    """kopf peering on the real server: the higher-priority replica works, the other stands
    by (another admin namespace, so it would reject the pod-subnet policy) and takes over."""
    name = f"{case.ns}-peering"
    peering = api_path("kopf.dev/v1/clusterkopfpeerings", name=name)
    case.kube.create(api_path("kopf.dev/v1/clusterkopfpeerings"), {
        "apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}})
    try:
        case.add_node("a")
        active = case.start_operator(peering=name, standalone=False, priority=100)
        wait_for(lambda: len(case.kube.get(peering).get("status") or {}) == 1, 20, "one peer")
        case.start_operator(peering=name, standalone=False, priority=50,
                            admin_namespace="not-lwt-system")
        wait_for(lambda: len(case.kube.get(peering).get("status") or {}) == 2, 20, "two peers")
        obj = yaml.safe_load((REPO / "examples" / "admin-pod-subnets.yaml").read_text())
        obj["metadata"]["namespace"] = case.system
        case.kube.create(api_path(POLICIES, case.system), obj)
        path = api_path(POLICIES, case.system, obj["metadata"]["name"])
        wait_for(lambda: contract.is_accepted(case.kube.get(path)), 20, "accepted")
        time.sleep(1)
        assert not contract.is_rejected(case.kube.get(path))
        active.stop()
        wait_for(lambda: contract.is_rejected(case.kube.get(path)), 40,
                 "the standby replica took over (and rejects with its admin namespace)")
    finally:
        case.cp.kubectl("delete", "lrp", "--all", "-n", case.system, "--timeout=30s",
                        check=False)
        case.cp.kubectl("delete", "clusterkopfpeering", name, check=False)
