"""Security scan of the rendered chart with checkov, run from its own virtualenv."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .rendering import REPO, VALUE_SETS, render

CHECKOV_VENV = REPO / ".venv-checkov"
CHECKOV = CHECKOV_VENV / "bin" / "checkov"
BOOTSTRAP = Path(__file__).resolve().parent / "bootstrap-checkov.sh"
INSTALL_DOC = REPO / "docs" / "install.md"


@pytest.fixture(scope="module")
def checkov() -> Path:
    result = subprocess.run(
        ["bash", str(BOOTSTRAP)], capture_output=True, text=True, check=False, timeout=900
    )
    assert result.returncode == 0, f"{BOOTSTRAP} failed:\n{result.stdout}\n{result.stderr}"
    return CHECKOV


def scan(checkov: Path, manifest: Path, skip: list[str] | None = None) -> dict[str, Any]:
    # --skip-download: no calls to the vendor's platform (offline, and nothing leaves here).
    # --skip-check turns the listed findings into "skipped" entries, checked against the docs.
    extra = ["--skip-check", ",".join(skip)] if skip else []
    result = subprocess.run(
        [str(checkov), "--file", str(manifest), "--framework", "kubernetes", "--output", "json",
         "--skip-download", *extra],
        capture_output=True, text=True, check=False, timeout=600, cwd=manifest.parent,
    )
    assert result.returncode in (0, 1), f"checkov crashed:\n{result.stderr[-3000:]}"
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    (kubernetes,) = [r for r in reports if r.get("check_type") == "kubernetes"]
    kubernetes["exit_code"] = result.returncode
    return kubernetes


def accepted_findings() -> dict[str, tuple[str, str]]:
    """docs/install.md's table of accepted checkov findings: check id -> (objects, reason)."""
    text = INSTALL_DOC.read_text()
    section = text.split("## Accepted security-scan findings", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(
        r"^\|\s*`(CKV2?_K8S_\d+)`\s*\|\s*([^|]*?)\s*\|\s*(\S.*?)\s*\|\s*$", section, re.M
    )
    assert rows, "docs/install.md lists no accepted findings"
    return {check: (objects, reason) for check, objects, reason in rows}


def assert_clean(report: dict[str, Any], documented_for: str) -> None:
    failed = [
        f"{c['check_id']} {c['check_name']} ({c['resource']})"
        for c in report["results"]["failed_checks"]
    ]
    assert not failed, "checkov findings:\n" + "\n".join(failed)
    assert report["exit_code"] == 0
    documented = accepted_findings()
    for skipped in report["results"]["skipped_checks"]:
        check = skipped["check_id"]
        assert check in documented and documented_for in documented[check][0], (
            f"{check} is skipped for the {documented_for} but docs/install.md "
            "('Accepted security-scan findings') gives no reason for it there"
        )


@pytest.mark.slow
@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_rendered_chart_passes_checkov(checkov: Path, value_set: str, tmp_path: Path) -> None:
    manifest = tmp_path / f"{value_set}.yaml"
    manifest.write_text(render(value_set).text)
    report = scan(checkov, manifest)
    assert report["summary"]["passed"] > 100  # it did scan the manifests
    assert_clean(report, "operator Deployment")


@pytest.mark.slow
@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_agent_daemonset_passes_checkov(checkov: Path, value_set: str, tmp_path: Path) -> None:
    # The operator, not the chart, writes the DaemonSet, so checkov.io annotations cannot
    # carry the accepted findings: they come from the docs' table instead.
    rendered = render(value_set)
    daemonset = rendered.agent_daemonset(tmp_path)
    manifest = tmp_path / "agent-daemonset.yaml"
    manifest.write_text(yaml.safe_dump(daemonset))
    image = rendered.agent_settings()
    accepted = [
        check for check, (objects, _reason) in accepted_findings().items()
        if "agent DaemonSet" in objects
        # Conditional ones, as in the chart: only while no digest / no Always policy is set.
        and not (check == "CKV_K8S_43" and "@sha256:" in image["image"])
        and not (check == "CKV_K8S_15" and image["imagePullPolicy"] == "Always")
    ]
    report = scan(checkov, manifest, skip=accepted)
    assert report["summary"]["passed"] > 50
    assert_clean(report, "agent DaemonSet")


@pytest.mark.slow
def test_checkov_flags_a_privileged_pod(checkov: Path, tmp_path: Path) -> None:
    # The scan above only means something if checkov refuses what we promise to avoid.
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bad, namespace: x}\n"
        "spec:\n  hostNetwork: true\n  containers:\n  - name: c\n    image: busybox\n"
        "    securityContext: {privileged: true, capabilities: {add: [SYS_ADMIN]}}\n"
    )
    report = scan(checkov, manifest)
    failed = {c["check_id"] for c in report["results"]["failed_checks"]}
    assert {"CKV_K8S_16", "CKV_K8S_19", "CKV_K8S_39"} <= failed
