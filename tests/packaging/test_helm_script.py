"""scripts/helm.py itself: exit codes, values merging and the order of its output."""
from __future__ import annotations

from pathlib import Path

import yaml

from .rendering import CHART, render, run_helm_py


def test_template_output_is_in_install_order() -> None:
    kinds = [doc["kind"] for doc in render("full").documents]
    # CRDs (--include-crds) first, objects needing them last, dependencies before users.
    assert kinds[:2] == ["CustomResourceDefinition", "CustomResourceDefinition"]
    assert kinds.index("ServiceAccount") < kinds.index("Deployment")
    assert kinds.index("ConfigMap") < kinds.index("Deployment")
    assert kinds.index("ClusterRole") < kinds.index("ClusterRoleBinding")
    assert kinds[-2:] == sorted(["ClusterKopfPeering", "ServiceMonitor"])


def test_template_without_include_crds_leaves_crds_out() -> None:
    result = run_helm_py("template", "x", str(CHART))
    assert result.returncode == 0, result.stderr
    kinds = {doc["kind"] for doc in yaml.safe_load_all(result.stdout) if doc}
    assert "CustomResourceDefinition" not in kinds and "Deployment" in kinds
    assert "NOTES.txt" not in result.stdout


def test_later_values_files_win_key_by_key(tmp_path: Path) -> None:
    first = tmp_path / "a.yaml"
    first.write_text("operator:\n  replicas: 3\n  logLevel: debug\n")
    second = tmp_path / "b.yaml"
    second.write_text("operator:\n  replicas: 4\n")
    result = run_helm_py("template", "x", str(CHART), "-f", str(first), "-f", str(second))
    assert result.returncode == 0, result.stderr
    documents = [d for d in yaml.safe_load_all(result.stdout) if d]
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] == 4
    assert "--log-level=debug" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    missing_values = run_helm_py("template", "x", str(CHART), "-f", str(tmp_path / "nope.yaml"))
    assert missing_values.returncode == 2
    assert "cannot read values file" in missing_values.stderr
    missing_chart = run_helm_py("lint", "--strict", str(tmp_path / "no-chart"))
    assert missing_chart.returncode == 1
    assert "Chart.yaml" in missing_chart.stdout
    bad_name = run_helm_py("template", "Not_A_Release", str(CHART))
    assert bad_name.returncode == 2


def test_render_errors_exit_1(tmp_path: Path) -> None:
    # A template `fail`: the ServiceMonitor needs the metrics Service.
    values = tmp_path / "v.yaml"
    values.write_text("metrics:\n  service: {enabled: false}\n  serviceMonitor: {enabled: true}\n")
    result = run_helm_py("template", "x", str(CHART), "-f", str(values))
    assert result.returncode == 1
    assert "needs metrics.service.enabled" in result.stderr


def test_replicas_without_peering_are_refused(tmp_path: Path) -> None:
    values = tmp_path / "v.yaml"
    values.write_text("operator:\n  replicas: 2\n  peering: {enabled: false, name: x}\n")
    result = run_helm_py("template", "x", str(CHART), "-f", str(values))
    assert result.returncode == 1
    assert "needs operator.peering.enabled" in result.stderr
    values.write_text("operator:\n  replicas: 1\n  peering: {enabled: false, name: x}\n")
    single = run_helm_py("template", "x", str(CHART), "-f", str(values))
    assert single.returncode == 0, single.stderr
    documents = [d for d in yaml.safe_load_all(single.stdout) if d]
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    assert "--standalone" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not [d for d in documents if d["kind"] in ("ClusterKopfPeering", "PodDisruptionBudget")]


def test_rbac_and_service_accounts_can_be_brought_by_the_user(tmp_path: Path) -> None:
    values = tmp_path / "v.yaml"
    values.write_text("rbac: {create: false}\noperator:\n  serviceAccount: {create: false}\n"
                      "agent:\n  serviceAccount: {create: false}\n")
    refused = run_helm_py("template", "x", str(CHART), "-f", str(values))
    assert refused.returncode == 1
    assert "serviceAccount.name is required" in refused.stderr
    values.write_text("rbac: {create: false}\n"
                      "operator:\n  serviceAccount: {create: false, name: my-operator}\n"
                      "agent:\n  serviceAccount: {create: false, name: my-agent}\n")
    result = run_helm_py("template", "x", str(CHART), "-f", str(values))
    assert result.returncode == 0, result.stderr
    documents = [d for d in yaml.safe_load_all(result.stdout) if d]
    kinds = {d["kind"] for d in documents}
    assert not kinds & {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role"}
    (config_map,) = [d for d in documents if d["kind"] == "ConfigMap"]
    assert "serviceAccountName: my-agent" in config_map["data"]["agent.yaml"]
