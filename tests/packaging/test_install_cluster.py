"""Installing as users do, on the real control plane: `kubectl apply --server-side -f crds/`,
`helm install` of the chart, `helm upgrade` with changed values, `helm uninstall`; the
identities the chart gives the operator and the agents (their own ServiceAccount tokens under
the chart's RBAC) and the Pod Security level docs/install.md names.

The tests of this module share one release and run in order: uninstall is the last.
"""
from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from tests.agent.harness import wait_for
from tests.k8s.cluster import ControlPlane
from tests.k8s.stand import (
    POD_SECURITY_LEVEL,
    Stand,
    create_namespace,
    diagnose,
    installed_stand,
)

RELEASE, NAMESPACE = "pkg", "lwt-pkg"


@pytest.fixture(scope="module")
def stand(control_plane: ControlPlane, bpffs: Path) -> Iterator[Stand]:
    with installed_stand(control_plane, bpffs, release=RELEASE, namespace=NAMESPACE,
                         pods_per_node=(1, 1), prefix="lwtP",
                         values={"operator": {"replicas": 1, "peering": {"name": "lwt-pkg"},
                                              "extraArgs": ["--resync=3"]}}) as stand:
        yield stand


def _json(stand: Stand, *args: str) -> Any:
    return stand.cp.kubectl_json(*args)


def test_install_creates_what_the_docs_list(stand: Stand) -> None:
    crd = _json(stand, "get", "crd", "lwtroutepolicies.lwt.dev", "--show-managed-fields")
    # Applied server-side by kubectl (the server itself manages only the CRD's status).
    assert {m["manager"] for m in crd["metadata"]["managedFields"]
            if m["operation"] == "Apply"} == {"kubectl"}
    status = json.loads(stand.helm("status", RELEASE, "-n", NAMESPACE, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"

    operator = _json(stand, "get", "deployment", "-n", NAMESPACE, stand.fullname)
    ds = _json(stand, "get", "daemonset", "-n", NAMESPACE, stand.daemonset)
    # The operator-made DaemonSet belongs to the operator's Deployment: uninstall removes it.
    assert ds["metadata"]["ownerReferences"] == [{
        "apiVersion": "apps/v1", "kind": "Deployment", "name": stand.fullname,
        "uid": operator["metadata"]["uid"]}]
    pod_spec = ds["spec"]["template"]["spec"]
    assert pod_spec["serviceAccountName"] == f"{stand.fullname}-agent"
    assert pod_spec["containers"][0]["securityContext"]["capabilities"] == {
        "add": ["BPF", "NET_ADMIN"], "drop": ["ALL"]}
    # The real DaemonSet controller made one pod per node; the server defaulted the template
    # (what the emulator never did): e.g. restartPolicy, schedulerName, protocol.
    assert pod_spec["restartPolicy"] == "Always"
    assert pod_spec["schedulerName"] == "default-scheduler"
    assert ds["status"]["desiredNumberScheduled"] == 2
    wait_for(lambda: _json(stand, "get", "daemonset", "-n", NAMESPACE, stand.daemonset)
             ["status"].get("numberReady") == 2, 30, "numberReady 2")
    for pod in stand.agent_pods():
        (owner,) = pod["metadata"]["ownerReferences"]
        assert owner["kind"] == "DaemonSet" and owner["controller"] is True
    peering = _json(stand, "get", "clusterkopfpeering", "lwt-pkg")
    assert peering["metadata"]["name"] == "lwt-pkg"


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))  # type: ignore[no-any-return]


def _forbidden(stand: Stand, kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    proc = stand.cp.kubectl(*args, kubeconfig=kubeconfig, input=stdin, check=False)
    assert proc.returncode != 0, f"kubectl {' '.join(args)} was allowed: {proc.stdout}"
    assert "Forbidden" in proc.stderr or "forbidden" in proc.stderr, proc.stderr
    return proc.stderr


def test_agents_and_operator_run_with_their_own_tokens(stand: Stand) -> None:
    # What the harness's kubelet gave each running program: a token only, of its own SA.
    for pod in [*stand.agent_pods(), *_json(stand, "get", "pods", "-n", NAMESPACE, "-l",
                                            "app.kubernetes.io/component=operator")["items"]]:
        container = stand.kubelet.container(NAMESPACE, pod["metadata"]["name"])
        config = yaml.safe_load(Path(container.env["KUBECONFIG"]).read_text())
        (user,) = config["users"]
        assert set(user["user"]) == {"token"}
        claims = _claims(user["user"]["token"])
        assert claims["sub"] == (f"system:serviceaccount:{NAMESPACE}:"
                                 f"{pod['spec']['serviceAccountName']}")
        assert claims["kubernetes.io"]["pod"]["uid"] == pod["metadata"]["uid"]
        # Bound to the pod, the token names the node it runs on.
        assert claims["kubernetes.io"]["node"]["name"] == pod["spec"]["nodeName"]


def test_rbac_refuses_what_docs_install_md_promises(stand: Stand) -> None:
    agent_pod = stand.agent_pods()[0]
    agent = stand.sa_kubeconfig(f"{stand.fullname}-agent", agent_pod)
    operator = stand.sa_kubeconfig(stand.fullname)
    create_namespace(stand.cp, "rbac-probe", None)
    try:
        policy = {"apiVersion": "lwt.dev/v1alpha1", "kind": "LwtRoutePolicy",
                  "metadata": {"name": "p", "namespace": "rbac-probe"},
                  "spec": {"podSelector": {"matchLabels": {"app": "x"}},
                           "hooks": {"out": {"program": {"builtin": "counters"}}}}}
        stand.apply([policy])
        pod = json.dumps({"apiVersion": "v1", "kind": "Pod",
                          "metadata": {"name": "x", "namespace": "rbac-probe"},
                          "spec": {"containers": [{"name": "x", "image": "x"}]}})
        # The agent: reads policies, pods, nodes; writes only its own node's LwtNodeState (the
        # chart's ValidatingAdmissionPolicy: tests/k8s/test_node_restriction.py); no Secrets.
        assert stand.cp.kubectl("get", "lrp", "-A", kubeconfig=agent).returncode == 0
        own = agent_pod["spec"]["nodeName"]
        other = next(n for n in stand.nodes if n != own)
        # (not kubectl patch: it GETs the status subresource first, which the agent may not)
        as_agent = kubernetes.config.new_client_from_config(config_file=str(agent))
        try:
            kubernetes.client.CustomObjectsApi(as_agent).patch_cluster_custom_object_status(
                "lwt.dev", "v1alpha1", "lwtnodestates", own, {"status": {}})
        finally:
            as_agent.close()
        _forbidden(stand, agent, "patch", "lns", other, "--subresource=status",
                   "--type=merge", "-p", '{"status":{}}')
        _forbidden(stand, agent, "patch", "lrp", "p", "-n", "rbac-probe",
                   "--subresource=status", "--type=merge", "-p", '{"status":{}}')
        _forbidden(stand, agent, "get", "secrets", "-A")
        _forbidden(stand, agent, "get", "secret", "any", "-n", NAMESPACE)
        _forbidden(stand, agent, "patch", "lrp", "p", "-n", "rbac-probe", "--type=merge",
                   "-p", '{"spec":{"priority":5}}')
        _forbidden(stand, agent, "create", "-f", "-", stdin=pod)
        _forbidden(stand, agent, "delete", "lrp", "p", "-n", "rbac-probe")
        _forbidden(stand, agent, "get", "configmaps", "-n", "rbac-probe")  # configMapPrograms off
        # The operator: policies and their status, its DaemonSet in its namespace only.
        stand.cp.kubectl("get", "daemonset", stand.daemonset, "-n", NAMESPACE,
                         kubeconfig=operator)
        _forbidden(stand, operator, "get", "secrets", "-A")
        _forbidden(stand, operator, "create", "-f", "-", stdin=pod)
        _forbidden(stand, operator, "get", "daemonsets", "-n", "rbac-probe")
        _forbidden(stand, operator, "delete", "node", "node-a")
        _forbidden(stand, operator, "get", "deployment", "-n", NAMESPACE, "other")
    finally:
        stand.cp.kubectl("delete", "lrp", "p", "-n", "rbac-probe", "--wait=false",
                         check=False)
        stand.cp.kubectl("patch", "lrp", "p", "-n", "rbac-probe", "--type=json", "-p",
                         '[{"op":"remove","path":"/metadata/finalizers"}]', check=False)
        stand.cp.kubectl("delete", "namespace", "rbac-probe", "--wait=false", check=False)


def _pod_from_template(ds: dict[str, Any], namespace: str) -> str:
    template = ds["spec"]["template"]
    return json.dumps({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": "psa-probe", "namespace": namespace,
                                    "labels": template["metadata"].get("labels", {})},
                       "spec": {**template["spec"], "nodeName": "node-a"}})


def test_pod_security_levels(stand: Stand) -> None:
    ds = _json(stand, "get", "daemonset", "-n", NAMESPACE, stand.daemonset)
    operator = _json(stand, "get", "deployment", "-n", NAMESPACE, stand.fullname)
    try:
        for level in ("privileged", "baseline", "restricted"):
            create_namespace(stand.cp, f"psa-{level}", level)
        for level in ("privileged", "baseline", "restricted"):
            ns = f"psa-{level}"
            stand.cp.kubectl("create", "serviceaccount", "-n", ns,
                             ds["spec"]["template"]["spec"]["serviceAccountName"])
            agent = stand.cp.kubectl("create", "--dry-run=server", "-f", "-",
                                     input=_pod_from_template(ds, ns), check=False)
            if level == POD_SECURITY_LEVEL:
                assert agent.returncode == 0, agent.stderr
            else:
                assert agent.returncode != 0
                assert f'violates PodSecurity "{level}:latest"' in agent.stderr, agent.stderr
                assert "hostNetwork" in agent.stderr and "hostPath" in agent.stderr
        # The operator's pods pass even "restricted".
        ns = "psa-restricted"
        stand.cp.kubectl("create", "serviceaccount", "-n", ns,
                         operator["spec"]["template"]["spec"]["serviceAccountName"])
        proc = stand.cp.kubectl("create", "--dry-run=server", "-f", "-",
                                input=_pod_from_template(operator, ns), check=False)
        assert proc.returncode == 0, proc.stderr
    finally:
        for level in ("privileged", "baseline", "restricted"):
            stand.cp.kubectl("delete", "namespace", f"psa-{level}", "--wait=false",
                             check=False)


def test_helm_upgrade_rolls_the_operator_and_the_agents(stand: Stand) -> None:
    old_operator = {p["metadata"]["uid"] for p in _json(
        stand, "get", "pods", "-n", NAMESPACE, "-l",
        "app.kubernetes.io/component=operator")["items"]}
    old_agents = {p["metadata"]["uid"] for p in stand.agent_pods()}
    ds_generation = _json(stand, "get", "daemonset", "-n", NAMESPACE,
                          stand.daemonset)["metadata"]["generation"]
    values = stand.values_file({"operator": {"replicas": 1, "peering": {"name": "lwt-pkg"},
                                             "extraArgs": ["--resync=3"]},
                                "agent": {"logLevel": "debug"}})
    stand.helm("upgrade", RELEASE, str(Path(__file__).resolve().parents[2] / "charts" /
                                       "lwt-operator"), "-n", NAMESPACE, "--values",
               str(values), "--wait", "--timeout", "180s")

    def rolled() -> dict[str, Any] | None:
        ds = _json(stand, "get", "daemonset", "-n", NAMESPACE, stand.daemonset)
        env = {e["name"]: e.get("value") for e in
               ds["spec"]["template"]["spec"]["containers"][0]["env"]}
        status = ds.get("status") or {}
        if (env.get("LWT_LOG_LEVEL") == "debug"
                and status.get("observedGeneration") == ds["metadata"]["generation"]
                and status.get("updatedNumberScheduled") == 2
                and status.get("numberReady") == 2):
            return ds
        return None
    try:
        ds = wait_for(rolled, 120, "the agent DaemonSet rolled to logLevel debug")
    except AssertionError:
        print(diagnose(stand))
        print(json.dumps(_json(stand, "get", "daemonset", "-n", NAMESPACE,
                               stand.daemonset).get("status"), indent=1))
        raise
    assert ds["metadata"]["generation"] > ds_generation
    new_operator = {p["metadata"]["uid"] for p in _json(
        stand, "get", "pods", "-n", NAMESPACE, "-l",
        "app.kubernetes.io/component=operator")["items"]}
    assert new_operator and not new_operator & old_operator
    agents = stand.wait_agents(timeout=120)
    assert not {p["metadata"]["uid"] for p in agents.values()} & old_agents


def test_helm_uninstall_leaves_nothing_of_ours(stand: Stand) -> None:
    stand.helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout", "120s")

    def leftovers() -> list[str]:
        names = stand.cp.kubectl(
            "get", "all,configmaps,serviceaccounts,roles,rolebindings,"
            "poddisruptionbudgets,networkpolicies", "-n", NAMESPACE, "-o", "name").stdout
        ours = [n for n in names.split() if "kube-root-ca" not in n
                and n != "serviceaccount/default"]
        cluster = stand.cp.kubectl("get", "clusterroles,clusterrolebindings,"
                                   "clusterkopfpeerings", "-o", "name").stdout
        ours += [n for n in cluster.split() if RELEASE in n.split("/")[1]]
        return ours
    # The DaemonSet and its pods go through the garbage collector (ownerReferences).
    seen: list[list[str]] = []
    wait_for(lambda: seen.append(leftovers()) or seen[-1] == [], 90,
             f"nothing of the release left; still there: {seen[-1:]}")
    # CRDs stay (Helm never deletes CRDs: deleting one deletes every policy of every user).
    stand.cp.kubectl("get", "crd", "lwtroutepolicies.lwt.dev")
