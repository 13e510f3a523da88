"""Refusal at `kubectl apply` on the real API server (issue 15), and the offline validator
(`lwt-agent validate`) giving the server's verdicts.

- The catalogue's facts are in the CRD: `program.builtin` is an enum and every built-in a
  hook cannot run is a CEL rule on that hook; the server refuses both naming the field.
- Every invalid policy of tests/policy/test_validation.py goes through `lwt-agent validate
  --json` (one run, the real command) and through the server (`kubectl apply --server-side
  --dry-run=server`): the validator refuses every one (exit 2); exactly those it attributes to
  the API server are refused there, with the problem's field path in the server's message;
  the others (attributed to the operator) are accepted by the server, and the operator's
  judge (the same `policy_problems`) refuses them with the same problems.
"""
from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from lwt_operator.validation import judge
from lwt_policy import schema
from lwt_policy.custom_programs import CustomProgramRule

from tests.k8s.cluster import ControlPlane
from tests.k8s.policy_cases import as_sent, case_namespaces
from tests.policy.conftest import ADMIN_NS, base_policy
from tests.policy.test_validation import CASES

NAMESPACES = {"shop": "adm-shop", ADMIN_NS: "adm-admin"}


@pytest.fixture(scope="module")
def server(control_plane: ControlPlane) -> Iterator[ControlPlane]:
    with case_namespaces(control_plane, NAMESPACES):
        yield control_plane


def _as_sent(obj: dict[str, Any]) -> dict[str, Any]:
    return as_sent(obj, NAMESPACES)


def _apply(cp: ControlPlane, obj: dict[str, Any], *extra: str) -> tuple[bool, str]:
    proc = cp.kubectl("apply", *extra, "-f", "-", input=yaml.safe_dump(obj), check=False)
    return proc.returncode == 0, proc.stderr.strip()


def _policy(name: str, hooks: dict[str, Any]) -> dict[str, Any]:
    obj = _as_sent(base_policy())
    obj["metadata"]["name"] = name
    obj["spec"]["hooks"] = hooks
    return obj


def test_an_unknown_builtin_is_refused_at_apply_naming_the_field(server: ControlPlane) -> None:
    ok, message = _apply(server, _policy("unknown", {"out": {"program": {
        "builtin": "firewall"}}}))
    assert not ok
    assert 'spec.hooks.out.program.builtin: Unsupported value: "firewall"' in message, message
    for name in schema.builtin_names():
        assert f'"{name}"' in message, message  # the server lists what is supported


def test_each_builtin_on_a_hook_it_cannot_run_is_refused_at_apply(
        server: ControlPlane) -> None:
    rules = schema.builtin_hook_rules()
    assert [r.name for r in rules] == ["builtin-hook-encap-out"]  # what the catalogue says now
    for rule in rules:
        _, builtin, hook = rule.name.rsplit("-", 2)
        ok, message = _apply(server, _policy(f"{builtin}-{hook}", {hook: {
            "program": {"builtin": builtin},
            "config": {"remote": "192.0.2.1", "source": "192.0.2.2"}}}))
        assert not ok
        assert f"spec.hooks.{hook}.program.builtin" in message, message
        assert rule.message in message, message
    # The same built-in on a hook it runs on is stored.
    ok, message = _apply(server, _policy("encap-xmit", {"xmit": {
        "program": {"builtin": "encap"},
        "config": {"remote": "192.0.2.1", "source": "192.0.2.2"}}}))
    assert ok, message
    server.kubectl("delete", "lwtroutepolicy", "-n", NAMESPACES["shop"], "encap-xmit")


def _validate(files: list[Path], *extra: str) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "lwt_agent.cli", "validate", "--json",
         "--admin-namespace", NAMESPACES[ADMIN_NS], *extra, *map(str, files)],
        capture_output=True, text=True, timeout=120, check=False)
    return proc.returncode, json.loads(proc.stdout)


def test_validate_gives_the_verdicts_of_the_server_and_the_operator(
        server: ControlPlane, tmp_path: Path) -> None:
    cases = []
    for name, mutate, rule, path in CASES:
        obj = base_policy()
        mutate(obj)
        file = tmp_path / f"case-{len(cases)}.yaml"
        sent = _as_sent(obj)
        file.write_text(yaml.safe_dump(sent))
        cases.append((name, sent, rule, path, file))
    valid = tmp_path / "valid.yaml"
    valid.write_text(yaml.safe_dump(_as_sent(base_policy())))

    code, report = _validate([valid])
    assert code == 0 and report["valid"], report
    assert _apply(server, _as_sent(base_policy()), "--server-side", "--dry-run=server")[0]

    # The cases of ConfigMap programs are about their fields: custom programs allowed (as
    # an admin who turned them on for every namespace).
    code, report = _validate([file for *_, file in cases], "--allow-custom-programs")
    everywhere = CustomProgramRule(True, "kubernetes.io/metadata.name")
    assert code == 2
    by_file = {entry["file"]: entry for entry in report["files"]}
    disagreements = []
    for name, sent, rule, path, file in cases:
        entry = by_file[str(file)]
        accepted, message = _apply(server, sent, "--server-side", "--dry-run=server")
        if not entry["policies"]:  # refused as a file: not an object of our API
            assert rule == "identity" and entry["error"], (name, entry)
            if accepted:
                disagreements.append((name, entry["error"], "accepted"))
            continue
        (policy,) = entry["policies"]
        problems = policy["problems"]
        assert not policy["valid"] and [(p["rule"], p["path"]) for p in problems] == [
            (rule, path)], (name, problems)
        (problem,) = problems
        if problem["refusedBy"] == "api-server":
            if accepted or (path and path not in message and rule != "identity"):
                disagreements.append((name, problem, message))
        else:
            namespace = sent["metadata"].get("namespace", "default")
            verdict = judge(sent, admin_namespace=NAMESPACES[ADMIN_NS],
                            custom_programs=everywhere,
                            namespace_labels={"kubernetes.io/metadata.name": namespace})
            if not accepted or [(p.rule, p.path) for p in verdict.problems] != [(rule, path)]:
                disagreements.append((name, problem, message or "accepted"))
    assert not disagreements, json.dumps(disagreements, indent=1)


def test_validate_refuses_a_file_without_policies(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    code, report = _validate([empty])
    assert code == 2
    assert report["files"][0]["error"] == "no LwtRoutePolicy in this file"
