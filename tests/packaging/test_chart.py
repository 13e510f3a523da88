"""The Helm chart: lint, render, schema-validate, and hold it to its least-privilege promises."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from .rendering import (
    CHART,
    NAMESPACE,
    REPO,
    VALUE_SETS,
    VALUES_FULL,
    Rendered,
    render,
    run_helm_py,
)

INSTALL_DOC = REPO / "docs" / "install.md"
TOP_LEVEL_CRD = REPO / "crds" / "lwt.dev_lwtroutepolicies.yaml"
CHART_CRD = CHART / "crds" / "lwt.dev_lwtroutepolicies.yaml"
KUBERNETES_VERSION = kubernetes_validate.utils.latest_version()

# Kinds no Kubernetes release schema knows, with the CRD that defines each. Those the chart
# ships are validated against its own crds/; the ServiceMonitor's CRD belongs to
# prometheus-operator and is not available offline (see docs/install.md).
CUSTOM_KINDS = {"ClusterKopfPeering": "clusterkopfpeerings.kopf.dev", "ServiceMonitor": None}

STANDARD_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/component",
    "helm.sh/chart",
)

value_sets = pytest.mark.parametrize("value_set", list(VALUE_SETS))


@value_sets
def test_lint_strict_passes(value_set: str) -> None:
    args = ["lint", "--strict", str(CHART)]
    if VALUE_SETS[value_set] is not None:
        args += ["-f", str(VALUE_SETS[value_set])]
    result = run_helm_py(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no failures" in result.stdout


def test_lint_strict_fails_on_values_the_schema_refuses(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("agent:\n  capabilities: [CAP_SYS_ADMIN]\nreplicas: 3\n")
    result = run_helm_py("lint", "--strict", str(CHART), "-f", str(bad))
    assert result.returncode == 1
    assert "/agent/capabilities/0" in result.stdout
    assert "'replicas' not allowed" in result.stdout


@value_sets
def test_template_renders_every_expected_kind(value_set: str) -> None:
    rendered = render(value_set)
    kinds = sorted({doc["kind"] for doc in rendered.documents})
    expected = {
        "ClusterKopfPeering", "ClusterRole", "ClusterRoleBinding", "ConfigMap",
        "CustomResourceDefinition", "Deployment", "NetworkPolicy", "PodDisruptionBudget", "Role",
        "RoleBinding", "Service", "ServiceAccount",
        "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
    }
    if value_set == "full":
        expected.add("ServiceMonitor")
    assert set(kinds) == expected
    # The chart never renders the agent DaemonSet: the operator owns it (agent.yaml).
    assert not rendered.of_kind("DaemonSet")


@value_sets
def test_every_manifest_passes_kubernetes_validate(value_set: str) -> None:
    rendered = render(value_set)
    crds = {doc["metadata"]["name"]: doc for doc in rendered.of_kind("CustomResourceDefinition")}
    checked_custom = 0
    for doc in rendered.documents:
        if doc["kind"] in CUSTOM_KINDS:
            crd_name = CUSTOM_KINDS[doc["kind"]]
            with pytest.raises(kubernetes_validate.utils.SchemaNotFoundError):
                kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            if crd_name is not None:
                schema = crds[crd_name]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
                jsonschema.validate(doc, schema)
                checked_custom += 1
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    assert checked_custom == len(rendered.of_kind("ClusterKopfPeering"))


def test_kubernetes_validate_catches_a_broken_manifest() -> None:
    # The validation above is only worth something if a wrong field is refused.
    deployment = yaml.safe_load(yaml.safe_dump(render("default").one("Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsNonRot"] = True
    with pytest.raises(kubernetes_validate.utils.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_chart_crd_is_the_generated_crd_not_a_copy() -> None:
    # One source: the chart's CRD is a symlink to the generated file at the top level...
    assert CHART_CRD.is_symlink(), f"{CHART_CRD} must be a symlink to {TOP_LEVEL_CRD}"
    assert CHART_CRD.resolve() == TOP_LEVEL_CRD.resolve()
    # ...that Helm follows when it loads the chart, and packages as file contents.
    with helm.Chart.load(CHART) as chart:
        loaded = {crd["name"]: crd["data"] for crd in chart.crds}
    assert loaded["crds/lwt.dev_lwtroutepolicies.yaml"] == TOP_LEVEL_CRD.read_text()


def test_packaged_chart_carries_the_crd_contents(tmp_path: Path) -> None:
    # `helm package` (what a chart repository or OCI registry receives) must hold the file,
    # not a dangling link.
    archive = helm.package(CHART, destination=tmp_path)
    with helm.Chart.load(archive) as packaged:
        loaded = {crd["name"]: crd["data"] for crd in packaged.crds}
    assert loaded["crds/lwt.dev_lwtroutepolicies.yaml"] == TOP_LEVEL_CRD.read_text()


def _rules(rendered: Rendered, kinds: tuple[str, ...]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (doc["metadata"]["name"], rule)
        for doc in rendered.documents
        if doc["kind"] in kinds
        for rule in doc.get("rules", [])
    ]


@value_sets
def test_rbac_has_no_wildcards(value_set: str) -> None:
    rules = _rules(render(value_set), ("ClusterRole", "Role"))
    assert rules
    for role, rule in rules:
        for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            for item in rule.get(field, []):
                assert "*" not in item, f"{role}: wildcard in {field}: {rule}"


# Kubernetes' bootstrap ClusterRole the agents are bound to for secure metrics
# (templates/metrics-rbac.yaml): it may ask who a token is and what it may do, nothing else.
AUTH_DELEGATOR = {"rules": [
    {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
    {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"],
     "verbs": ["create"]}]}


def _permissions_of(rendered: Rendered, service_account: str) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) granted to a ServiceAccount through every binding."""
    roles = {
        (doc["kind"], doc["metadata"]["name"]): doc
        for doc in rendered.documents
        if doc["kind"] in ("ClusterRole", "Role")
    }
    roles[("ClusterRole", "system:auth-delegator")] = AUTH_DELEGATOR
    granted: set[tuple[str, str, str]] = set()
    for binding in rendered.documents:
        if binding["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        subjects = binding.get("subjects", [])
        if not any(
            s["kind"] == "ServiceAccount"
            and s["name"] == service_account
            and s["namespace"] == NAMESPACE
            for s in subjects
        ):
            continue
        role = roles[(binding["roleRef"]["kind"], binding["roleRef"]["name"])]
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        granted.add((group, resource, verb))
    return granted


@value_sets
def test_agent_writes_only_its_node_state_and_events(value_set: str) -> None:
    rendered = render(value_set)
    agent_sa = rendered.agent_settings()["serviceAccountName"]
    granted = _permissions_of(rendered, agent_sa)
    assert granted, "no RBAC bound to the agent's ServiceAccount"
    assert not any(resource.startswith("secrets") for _, resource, _ in granted)
    writes = {g for g in granted if g[2] not in ("get", "list", "watch")}
    # Its own LwtNodeState only (which one: the chart's ValidatingAdmissionPolicy, tested on a
    # real API server in tests/k8s/test_node_restriction.py); nothing of any policy.
    reviews = ({("authentication.k8s.io", "tokenreviews", "create"),
                ("authorization.k8s.io", "subjectaccessreviews", "create")}
               if rendered.agent_settings()["metricsAuth"] == "kubernetes" else set())
    assert writes == {("lwt.dev", "lwtnodestates", "create"),
                      ("lwt.dev", "lwtnodestates/status", "patch"), ("", "events", "create"),
                      *reviews}
    assert not {g for g in granted if g[1].startswith("lwtroutepolicies/")}


@value_sets
def test_node_restriction_policy_binds_the_agent_service_account(value_set: str) -> None:
    rendered = render(value_set)
    agent_sa = rendered.agent_settings()["serviceAccountName"]
    (policy,) = [d for d in rendered.documents if d["kind"] == "ValidatingAdmissionPolicy"]
    (binding,) = [d for d in rendered.documents
                  if d["kind"] == "ValidatingAdmissionPolicyBinding"]
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    (condition,) = policy["spec"]["matchConditions"]
    assert f":{agent_sa}'" in condition["expression"]
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["lwtnodestates", "lwtnodestates/status"]


@value_sets
def test_agent_reads_configmaps_only_when_enabled(value_set: str) -> None:
    rendered = render(value_set)
    agent_sa = rendered.agent_settings()["serviceAccountName"]
    reads_configmaps = ("", "configmaps", "get") in _permissions_of(rendered, agent_sa)
    enabled = yaml.safe_load(VALUES_FULL.read_text())["agent"]["configMapPrograms"]
    assert reads_configmaps == (enabled if value_set == "full" else False)


@value_sets
def test_operator_manages_daemonsets_only_in_its_namespace(value_set: str) -> None:
    rendered = render(value_set)
    deployment = rendered.one("Deployment")
    operator_sa = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    granted = _permissions_of(rendered, operator_sa)
    assert ("apps", "daemonsets", "create") in granted
    assert not any(resource.startswith("secrets") for _, resource, _ in granted)
    for binding in rendered.of_kind("ClusterRoleBinding"):
        if binding["roleRef"]["name"] == "system:auth-delegator":
            continue  # Kubernetes' own (AUTH_DELEGATOR): token and access reviews only
        role = rendered.one("ClusterRole", binding["roleRef"]["name"])
        assert not any("daemonsets" in rule["resources"] for rule in role["rules"])


def documented_capabilities() -> set[str]:
    """The capability table of docs/install.md: `| CAP_X | why |` rows under its heading."""
    text = INSTALL_DOC.read_text()
    section = text.split("## Agent capabilities", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\|\s*`CAP_([A-Z_]+)`\s*\|\s*(\S.*?)\s*\|\s*$", section, re.MULTILINE)
    assert rows, "docs/install.md has no capability table under '## Agent capabilities'"
    return {name for name, _why in rows}


@value_sets
def test_agent_capabilities_are_exactly_the_documented_set(value_set: str) -> None:
    settings = render(value_set).agent_settings()
    documented = documented_capabilities()
    assert set(settings["capabilities"]) == documented == {"BPF", "NET_ADMIN"}
    assert len(settings["capabilities"]) == len(set(settings["capabilities"]))


@value_sets
def test_agent_settings_carry_every_contract_key(value_set: str) -> None:
    settings = render(value_set).agent_settings()
    contract = {
        "image", "imagePullPolicy", "serviceAccountName", "tolerations", "nodeSelector",
        "affinity", "resources", "updateStrategy", "priorityClassName", "metricsPort",
        "bpffsPath", "capabilities", "logLevel",
    }
    assert contract <= set(settings)
    assert set(settings) - contract == {"podLabels", "imagePullSecrets", "configMapPrograms",
                                        "configMapProgramNamespaceSelector",
                                        "encapAllowedRemotes", "metricsAuth"}


@value_sets
def test_metrics_service_selects_the_agent_pods(value_set: str) -> None:
    rendered = render(value_set)
    service = rendered.one("Service", "-agent-metrics")
    settings = rendered.agent_settings()
    assert service["spec"]["selector"] == settings["podLabels"]
    assert service["spec"]["ports"][0]["port"] == settings["metricsPort"]
    for monitor in rendered.of_kind("ServiceMonitor"):
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"][
            "labels"
        ].items()
        assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]


@value_sets
def test_operator_pod_is_locked_down(value_set: str) -> None:
    deployment = render(value_set).one("Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == (3 if value_set == "full" else 2)
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not pod.get("hostNetwork") and not pod.get("hostPID")
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert not context.get("privileged")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] == "health"
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert "--agent-config=/etc/lwt-operator/agent.yaml" in container["args"]


@value_sets
def test_every_object_has_the_standard_labels(value_set: str) -> None:
    rendered = render(value_set)
    for doc in rendered.documents:
        if doc["kind"] == "CustomResourceDefinition":
            continue  # crds/ are not templated: Helm installs them as they are
        labels = doc["metadata"].get("labels", {})
        missing = [label for label in STANDARD_LABELS if label not in labels]
        assert not missing, f"{doc['kind']} {doc['metadata']['name']} lacks {missing}"


def test_full_values_exercise_every_top_level_key() -> None:
    # values-full.yaml is meant to switch everything on: a key the schema allows but the
    # file leaves out is a feature nobody renders.
    with helm.Chart.load(CHART) as chart:
        schema = chart.schema
    assert schema is not None
    full = yaml.safe_load(VALUES_FULL.read_text())
    untested = set(schema["properties"]) - set(full) - {"global", "nameOverride"}
    assert not untested, f"values-full.yaml leaves out {sorted(untested)}"


@value_sets
def test_the_operator_accepts_the_charts_args_and_agent_settings(
    value_set: str, tmp_path: Path
) -> None:
    rendered = render(value_set)
    config = rendered.operator_config(tmp_path)
    deployment = rendered.one("Deployment")
    assert config.namespace == NAMESPACE
    assert config.daemonset_name.endswith("-agent")
    assert config.standalone is False and config.peering == rendered.one(
        "ClusterKopfPeering")["metadata"]["name"]
    health = deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]
    assert config.health_port == health["containerPort"]
    assert list(config.agent.capabilities) == rendered.agent_settings()["capabilities"]


@value_sets
def test_agent_daemonset_the_operator_builds_is_valid_and_least_privilege(
    value_set: str, tmp_path: Path
) -> None:
    rendered = render(value_set)
    daemonset = rendered.agent_daemonset(tmp_path)
    kubernetes_validate.validate(daemonset, KUBERNETES_VERSION, strict=True)
    settings = rendered.agent_settings()
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["serviceAccountName"] == settings["serviceAccountName"]
    assert not pod.get("hostPID") and not pod.get("hostIPC")
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert not context.get("privileged")
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert set(context["capabilities"]["add"]) == documented_capabilities()
    # The only host path is the agent's own directory of the bpffs (not the whole bpffs).
    host_paths = [v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v]
    assert host_paths == [settings["bpffsPath"].rstrip("/") + "/lwt-operator"]
    # The metrics Service selects exactly these pods, on the port they listen on.
    service = rendered.one("Service", "-agent-metrics")
    pod_labels = daemonset["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert container["ports"][0]["containerPort"] == service["spec"]["ports"][0]["targetPort"]


@value_sets
def test_encap_allowlist_reaches_the_agent_environment(value_set: str) -> None:
    """chart agent.encapAllowedRemotes -> the operator's agent settings -> the DaemonSet's
    LWT_ENCAP_ALLOWED_REMOTES, which `lwt-agent run` reads; empty by default (encap refused)."""
    from lwt_operator.daemonset import build_daemonset
    from lwt_operator.settings import AgentSettings
    from lwt_policy.program_config import ENCAP_REMOTES_ENV, parse_allowed_remotes

    settings = render(value_set).agent_settings()
    expected = (yaml.safe_load(VALUES_FULL.read_text())["agent"]["encapAllowedRemotes"]
                if value_set == "full" else [])
    assert settings["encapAllowedRemotes"] == expected
    manifest = build_daemonset(AgentSettings.from_mapping(settings), name="lwt-agent",
                               namespace="lwt-system", admin_namespace="lwt-system")
    env = {e["name"]: e.get("value")
           for e in manifest["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert [str(n) for n in parse_allowed_remotes(env[ENCAP_REMOTES_ENV])] == expected


def test_a_bad_encap_allowlist_entry_is_refused_by_the_operator() -> None:
    from lwt_operator.errors import SettingsError
    from lwt_operator.settings import AgentSettings

    with pytest.raises(SettingsError, match=r"encapAllowedRemotes.*'10\.0\.0\.0/33'"):
        AgentSettings.from_mapping({"encapAllowedRemotes": ["10.0.0.0/33"]})
    with pytest.raises(SettingsError, match="one per list item"):
        AgentSettings.from_mapping({"encapAllowedRemotes": ["10.0.0.0/8,10.1.0.0/16"]})
