"""Issue 12 item 1: who may run custom bytecode (program.configMap) is the cluster admin's
explicit choice, off by default, enforced by the operator and by every agent on its own.

Before: any tenant allowed to create an LwtRoutePolicy and a ConfigMap in its namespace had
its own object loaded on every node (the operator accepted it; the agent loaded it)."""
from __future__ import annotations

import base64
import time
from typing import Any

import pytest
from lwt_agent.agent.admission import PolicyView
from lwt_agent.agent.programs_gate import CustomProgramGate, ReferencedConfigMaps
from lwt_kube import Kube, api_path
from lwt_operator.daemonset import build_daemonset
from lwt_operator.errors import SettingsError
from lwt_operator.settings import AgentSettings
from lwt_operator.validation import judge
from lwt_policy import custom_programs
from lwt_policy.custom_programs import CustomProgramRule
from lwt_policy.model import parse_policy
from lwt_policy.status import NodeError

from tests.k8s.conftest import k8s_api, kube  # noqa: F401 (fixtures)

ALLOWED = {"lwt.dev/custom-programs": "allowed"}


def cm_policy(namespace: str, name: str = "own", configmap: str = "prog") -> dict[str, Any]:
    return {"apiVersion": "lwt.dev/v1alpha1", "kind": "LwtRoutePolicy",
            "metadata": {"name": name, "namespace": namespace, "generation": 1},
            "spec": {"podSelector": {}, "hooks": {"out": {
                "program": {"configMap": {"name": configmap, "key": "prog.o"},
                            "section": "lwt/out"}}}}}


def builtin_policy(namespace: str) -> dict[str, Any]:
    return {"apiVersion": "lwt.dev/v1alpha1", "kind": "LwtRoutePolicy",
            "metadata": {"name": "counters", "namespace": namespace, "generation": 1},
            "spec": {"podSelector": {}, "hooks": {"out": {"program": {"builtin": "counters"}}}}}


def test_the_operator_refuses_custom_programs_by_default() -> None:
    verdict = judge(cm_policy("tenant"), admin_namespace="lwt-system")
    assert not verdict.accepted
    assert [p.rule for p in verdict.problems] == [custom_programs.RULE]
    assert verdict.problems[0].path == "spec.hooks.out.program.configMap"
    assert "disabled in this cluster" in verdict.message
    # Built-ins are not affected.
    assert judge(builtin_policy("tenant"), admin_namespace="lwt-system").accepted


def test_the_operator_allows_them_only_in_labelled_namespaces() -> None:
    rule = AgentSettings(configMapPrograms=True).custom_programs
    assert rule.enabled and rule.namespace_selector == "lwt.dev/custom-programs=allowed"
    assert judge(cm_policy("lab"), admin_namespace="lwt-system", custom_programs=rule,
                 namespace_labels=ALLOWED).accepted
    refused = judge(cm_policy("tenant"), admin_namespace="lwt-system", custom_programs=rule,
                    namespace_labels={"team": "a"})
    assert not refused.accepted
    assert "kubectl label namespace tenant lwt.dev/custom-programs=allowed" in refused.message
    # The admin's choice of selector, and the future cluster-scoped kind (no namespace).
    custom = CustomProgramRule(True, "tier=platform,bpf")
    assert custom.allowed("x", {"tier": "platform", "bpf": ""})
    assert not custom.allowed("x", {"tier": "platform"})
    assert custom.allowed(None, None) and not CustomProgramRule().allowed(None, None)


def test_settings_reach_the_agents_and_bad_selectors_are_refused() -> None:
    def env(settings: AgentSettings) -> dict[str, str]:
        manifest = build_daemonset(settings, name="a", namespace="n", admin_namespace="n")
        container = manifest["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e.get("value") for e in container["env"]}

    assert env(AgentSettings())[custom_programs.ENV] == ""
    assert env(AgentSettings(configMapPrograms=True))[custom_programs.ENV] == \
        "lwt.dev/custom-programs=allowed"
    assert CustomProgramRule.from_env({custom_programs.ENV: ""}) == CustomProgramRule()
    with pytest.raises(SettingsError, match="configMapProgramNamespaceSelector"):
        AgentSettings.from_mapping({"configMapPrograms": True,
                                    "configMapProgramNamespaceSelector": "Bad Key=x"})


def _view(obj: dict[str, Any]) -> PolicyView:
    policy = parse_policy(obj)
    return PolicyView(policy.ref, policy, 1)


def _wait(probe: Any, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := probe():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out: {probe}")


def test_the_agent_refuses_on_its_own_and_watches_only_referenced_configmaps(
        kube: Kube) -> None:  # noqa: F811
    """The agent's own gate, over the emulated API: the operator's verdict is not trusted."""
    for name, labels in (("lab", ALLOWED), ("tenant", {"team": "a"})):
        kube.create(api_path("v1/namespaces"), {"apiVersion": "v1", "kind": "Namespace",
                                                "metadata": {"name": name, "labels": labels}})
    blob = base64.b64encode(b"\x7fELF-not-really").decode()
    for namespace, name in (("lab", "prog"), ("lab", "unrelated"), ("tenant", "prog")):
        kube.create(api_path("v1/configmaps", namespace), {
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
            "binaryData": {"prog.o": blob}, "data": {"notes": "x" * 1000}})
    views = [_view(cm_policy("lab")), _view(cm_policy("tenant")),
             _view(builtin_policy("tenant"))]

    # Off (no $LWT_CUSTOM_PROGRAMS): every configMap policy is refused, built-ins pass.
    off = CustomProgramGate(CustomProgramRule(), kube, lambda: None)
    assert off.informers == []
    gated = off.apply(views)
    assert [v.policy is None for v in gated] == [True, True, False]
    assert isinstance(gated[0].error, NodeError) and "disabled" in gated[0].error.message

    gate = CustomProgramGate(CustomProgramRule(True), kube, lambda: None)
    for informer in gate.informers:
        informer.start()
    configmaps = ReferencedConfigMaps(kube, lambda: None)
    try:
        _wait(lambda: gate.allowed_namespaces())
        assert set(gate.allowed_namespaces()) == {"lab"}  # only what the selector matches
        gated = gate.apply(views)
        assert [v.policy is None for v in gated] == [False, True, False]
        assert "only in namespaces labelled" in gated[1].error.message
        configmaps.follow(gated)
        assert configmaps.wait_synced(10)
        held = configmaps.snapshot()
        assert [(c["metadata"]["namespace"], c["metadata"]["name"]) for c in held] == \
            [("lab", "prog")]
        assert held[0]["binaryData"] == {"prog.o": blob} and held[0]["data"] == {"notes": ""}
        configmaps.follow([])  # no longer referenced: no longer watched
        assert configmaps.snapshot() == []
    finally:
        configmaps.stop()
        for informer in gate.informers:
            informer.stop()


def test_the_running_operator_follows_namespace_labels(k8s_api, kube: Kube) -> None:  # noqa: F811
    """The real operator (kopf, namespaces index) against the emulated API: refused until an
    admin labels the namespace, accepted after, refused again when the label goes."""
    from lwt_policy import contract

    from tests.k8s.harness import RunningOperator
    from tests.k8s.test_operator import operator_config, path_of, wait_condition

    kube.create(api_path("v1/namespaces"), {"apiVersion": "v1", "kind": "Namespace",
                                            "metadata": {"name": "lab"}})
    config = operator_config(k8s_api, agent=AgentSettings(image="registry.example/x:1",
                                                          configMapPrograms=True))
    running = RunningOperator(config).start()
    try:
        obj = cm_policy("lab")
        del obj["metadata"]["generation"]
        created = kube.create(api_path("lwt.dev/v1alpha1/lwtroutepolicies", "lab"), obj)
        refused = wait_condition(kube, created, contract.ACCEPTED, "False", timeout=60)
        assert "lwt.dev/custom-programs=allowed" in refused["message"]
        kube.merge_patch(api_path("v1/namespaces", None, "lab"),
                         {"metadata": {"labels": ALLOWED}})
        wait_condition(kube, created, contract.ACCEPTED, "True", timeout=60)
        kube.merge_patch(api_path("v1/namespaces", None, "lab"),
                         {"metadata": {"labels": {"lwt.dev/custom-programs": None}}})
        wait_condition(kube, created, contract.ACCEPTED, "False", timeout=60)
        assert contract.is_rejected(kube.get(path_of(created)))
    finally:
        running.stop()


def test_cluster_policies_are_the_admins_own_choice() -> None:
    """A ClusterLwtRoutePolicy (cluster-scoped, cluster admins only) may run a custom program
    whenever the feature is on; never while it is off."""
    obj = {**cm_policy("unused"), "kind": "ClusterLwtRoutePolicy",
           "metadata": {"name": "platform"}}
    assert custom_programs.custom_program_problems(obj, CustomProgramRule(True), None) == []
    (problem,) = custom_programs.custom_program_problems(obj, CustomProgramRule(), None)
    assert "disabled in this cluster" in problem.message
