"""The policy status as GitOps tools read it: kstatus' rules (Flux) and the Argo CD health
check Lua of docs/install.md, run with Lua (lupa), over statuses the operator computes.

No kstatus implementation is on PyPI, so `kstatus` below is its rules as written in
sigs.k8s.io/cli-utils/pkg/kstatus (README "Status" and the generic checks of status.go), for
a custom resource: deletion -> Terminating; status.observedGeneration != metadata.generation
-> InProgress; Reconciling=True -> InProgress; Stalled=True -> Failed; else Current.
"""
from __future__ import annotations

import copy
import datetime
import re
from pathlib import Path
from typing import Any

import lupa
import pytest
from lwt_operator.aggregate import NodeInfo, desired_status, status_patch
from lwt_operator.settings import AgentSettings
from lwt_operator.validation import Verdict
from lwt_policy import contract
from lwt_policy.errors import Problem
from lwt_policy.status import policy_status

REPO = Path(__file__).resolve().parents[2]
NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
LINUX = {"kubernetes.io/os": "linux"}
NODES = {"n1": NodeInfo(LINUX), "n2": NodeInfo(LINUX)}


def kstatus(obj: dict[str, Any]) -> str:
    meta, status = obj["metadata"], obj.get("status") or {}
    if meta.get("deletionTimestamp"):
        return "Terminating"
    generation = meta.get("generation")
    if generation is not None and status.get("observedGeneration") != generation:
        return "InProgress"
    conditions = {c["type"]: c for c in status.get("conditions") or ()}
    if conditions.get("Reconciling", {}).get("status") == "True":
        return "InProgress"
    if conditions.get("Stalled", {}).get("status") == "True":
        return "Failed"
    return "Current"


def argocd_lua() -> str:
    text = (REPO / "docs" / "install.md").read_text()
    (block,) = re.findall(r"```lua\n(.*?)```", text, re.S)
    return block


def argocd_health(obj: dict[str, Any]) -> str:
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    check = lua.eval(f"function(obj) {argocd_lua()} end")

    def to_lua(value: Any) -> Any:
        if isinstance(value, dict):
            return lua.table_from({k: to_lua(v) for k, v in value.items()})
        if isinstance(value, list):
            return lua.table_from([to_lua(v) for v in value])
        return value
    return str(check(to_lua(obj))["status"])


def entry(generation: int = 2, **extra: Any) -> dict[str, Any]:
    return {"observedGeneration": generation, "routes": 3, "attachedRoutes": 3,
            "lastError": None, **extra}


def stored(entries: dict[str, Any], verdict: Verdict | None = None, nodes: Any = None,
           **meta: Any) -> dict[str, Any]:
    """The policy as the operator leaves it after one reconcile (generation 2)."""
    obj: dict[str, Any] = {"metadata": {"name": "p", "namespace": "shop", "generation": 2,
                                        **meta}, "spec": {}, "status": {}}
    desired = desired_status(obj, verdict or Verdict(2, ()), NODES if nodes is None else nodes,
                             AgentSettings(), entries=entries, now=NOW, finalizer_timeout=60)
    obj["status"] = {k: v for k, v in status_patch(obj, desired, NOW).items()
                     if v is not None}
    return obj


INVALID = Verdict(2, (Problem("spec.hooks.out.config.denySourceCIDRs[0]", "bad prefix",
                              "builtin-config"),))
SCENARIOS = {
    "ready": (stored({"n1": entry(), "n2": entry()}), "Current", "Healthy"),
    "rolling out": (stored({"n1": entry(), "n2": entry(generation=1)}),
                    "InProgress", "Progressing"),
    "no report yet": (stored({}), "InProgress", "Progressing"),
    "rejected spec": (stored({}, INVALID), "Failed", "Degraded"),
    "a node error": (stored({"n1": entry(), "n2": entry(lastError={"message": "verifier"})}),
                     "Failed", "Degraded"),
    "no matching node": (stored({}, nodes={}), "Failed", "Degraded"),
    "deleting": (stored({"n1": entry()}, deletionTimestamp="2026-01-01T11:59:59Z"),
                 "Terminating", "Progressing"),
}


@pytest.mark.parametrize(("obj", "flux", "argocd"), SCENARIOS.values(), ids=SCENARIOS)
def test_gitops_tools_read_the_status_as_meant(obj: dict[str, Any], flux: str,
                                               argocd: str) -> None:
    assert kstatus(obj) == flux
    assert argocd_health(obj) == argocd
    conditions = {c["type"]: c for c in obj["status"]["conditions"]}
    assert not (conditions["Reconciling"]["status"] == conditions["Stalled"]["status"] == "True")
    assert all(c["observedGeneration"] == 2 for c in conditions.values())


def test_a_new_spec_is_in_progress_until_the_operator_judged_it() -> None:
    obj, _, _ = SCENARIOS["ready"]
    edited = copy.deepcopy(obj)
    edited["metadata"]["generation"] = 3  # the user changed the spec; no reconcile yet
    assert kstatus(edited) == "InProgress"
    assert argocd_health(edited) == "Progressing"
    assert kstatus({"metadata": {"generation": 1}}) == "InProgress"
    assert argocd_health({"metadata": {"generation": 1}}) == "Progressing"


def test_standalone_status_carries_the_same_conditions() -> None:
    status = policy_status({"n1": entry()}, 2, NOW)
    assert {c["type"] for c in status["conditions"]} == {
        contract.READY, contract.RECONCILING, contract.STALLED}
    assert kstatus({"metadata": {"generation": 2}, "status": status}) == "Current"
