"""Tenants' roles on a real API server (issue 16 item 5).

The chart's `<release>-edit` / `<release>-view` ClusterRoles carry the aggregate-to-admin/edit/
view labels; the real controller manager's aggregation controller folds them into Kubernetes'
built-in `admin`, `edit` and `view` roles. A user made editor (or viewer) of one namespace by a
RoleBinding to the built-in role then may exactly what these tests say, as the API server's
RBAC authorizer decides it (kubectl with that user's token, no admin credentials).
"""
from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from lwt_policy import cluster_schema, schema

from tests.agent.harness import wait_for
from tests.k8s.cluster import ControlPlane
from tests.k8s.stand import CHART, CRDS, create_namespace

TEMPLATE = "templates/tenant-rbac.yaml"


@dataclass
class Tenants:
    cp: ControlPlane
    home: str  # the namespace the users are editor/viewer of
    other: str  # a namespace they have no role in
    editor: Path  # kubeconfigs holding only the user's token
    viewer: Path
    roles: list[str]  # the chart's tenant ClusterRoles, as rendered


def _policy(namespace: str, name: str) -> dict[str, object]:
    return {"apiVersion": schema.API_VERSION, "kind": schema.KIND,
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                     "hooks": {"in": {"program": {"builtin": "counters"}}}}}


def _user(cp: ControlPlane, namespace: str, name: str, role: str) -> Path:
    """A ServiceAccount bound to the built-in ClusterRole `role` in `namespace` only."""
    cp.kubectl("create", "serviceaccount", name, "-n", namespace)
    cp.kubectl("create", "rolebinding", f"{name}-{role}", "-n", namespace,
               f"--clusterrole={role}", f"--serviceaccount={namespace}:{name}")
    return cp.kubeconfig_for(f"{namespace}-{name}", cp.token(namespace, name))


def _aggregated(cp: ControlPlane, role: str, verb: str) -> bool:
    rules = cp.kubectl_json("get", "clusterrole", role).get("rules") or []
    return any(schema.PLURAL in r.get("resources", []) and verb in r.get("verbs", [])
               for r in rules)


@pytest.fixture(scope="module")
def tenants(control_plane: ControlPlane) -> Iterator[Tenants]:
    cp = control_plane
    suffix = uuid.uuid4().hex[:6]
    release, home, other = f"rb{suffix}", f"lwt-rb-{suffix}-x", f"lwt-rb-{suffix}-y"
    cp.kubectl("apply", "--server-side", "-f", str(CRDS))
    cp.kubectl("wait", "--for=condition=Established", "--timeout=60s",
               f"crd/{schema.CRD_NAME}", f"crd/{cluster_schema.CRD_NAME}")
    rendered = cp.helm("template", release, str(CHART), "--namespace", home,
                       "--kube-version", cp.server_version.lstrip("v"),
                       "--show-only", TEMPLATE).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    try:
        create_namespace(cp, home, None)
        create_namespace(cp, other, None)
        cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
        # The aggregation controller has to copy the rules into the built-in roles first.
        wait_for(lambda: _aggregated(cp, "edit", "create") and _aggregated(cp, "admin", "create")
                 and _aggregated(cp, "view", "list"), 30,
                 "the chart's tenant rules aggregated into admin/edit/view")
        yield Tenants(cp, home, other, _user(cp, home, "alice", "edit"),
                      _user(cp, home, "bob", "view"),
                      [d["metadata"]["name"] for d in docs if d["kind"] == "ClusterRole"])
    finally:
        cp.kubectl("delete", "-f", "-", "--ignore-not-found", "--wait=false",
                   input=yaml.safe_dump_all(docs), check=False)
        cp.kubectl("delete", "namespace", home, other, "--wait=false", check=False)


def _create(t: Tenants, kubeconfig: Path, body: dict[str, object]) -> tuple[bool, str]:
    proc = t.cp.kubectl("create", "-f", "-", kubeconfig=kubeconfig, input=json.dumps(body),
                        check=False)
    return proc.returncode == 0, proc.stderr


def test_chart_roles_carry_the_aggregation_labels(tenants: Tenants) -> None:
    names = sorted(tenants.roles)
    assert [n.rsplit("-", 1)[1] for n in names] == ["edit", "view"]
    edit, view = (tenants.cp.kubectl_json("get", "clusterrole", n) for n in names)
    labels = "rbac.authorization.k8s.io/aggregate-to-"
    assert {k for k, v in edit["metadata"]["labels"].items() if k.startswith(labels)
            and v == "true"} == {labels + "admin", labels + "edit"}
    assert {k for k, v in view["metadata"]["labels"].items() if k.startswith(labels)
            and v == "true"} == {labels + "view"}


def test_namespace_editor_manages_policies_of_their_namespace_only(tenants: Tenants) -> None:
    ok, err = _create(tenants, tenants.editor, _policy(tenants.home, "alice-web"))
    assert ok, err
    tenants.cp.kubectl("patch", schema.PLURAL, "alice-web", "-n", tenants.home, "--type=merge",
                       "-p", '{"spec":{"priority":50}}', kubeconfig=tenants.editor)
    ok, err = _create(tenants, tenants.editor, _policy(tenants.other, "alice-elsewhere"))
    assert not ok and "Forbidden" in err and tenants.other in err, err
    # The operator's status is not theirs to write.
    proc = tenants.cp.kubectl(
        "patch", schema.PLURAL, "alice-web", "-n", tenants.home, "--subresource=status",
        "--type=merge", "-p", '{"status":{"observedGeneration":1}}',
        kubeconfig=tenants.editor, check=False)
    assert proc.returncode != 0 and "Forbidden" in proc.stderr, proc.stderr
    tenants.cp.kubectl("delete", schema.PLURAL, "alice-web", "-n", tenants.home,
                       kubeconfig=tenants.editor)


def test_only_cluster_admins_create_cluster_policies(tenants: Tenants) -> None:
    body = {"apiVersion": schema.API_VERSION, "kind": cluster_schema.KIND,
            "metadata": {"name": f"{tenants.home}-platform"},
            "spec": {"podSelector": {}, "hooks": {"in": {"program": {"builtin": "counters"}}}}}
    for user in (tenants.editor, tenants.viewer):
        ok, err = _create(tenants, user, body)
        assert not ok and "Forbidden" in err and cluster_schema.PLURAL in err, err
    # The built-in admin role (what namespace owners get) has no rule for the cluster kind.
    for role in ("admin", "edit", "view"):
        rules = tenants.cp.kubectl_json("get", "clusterrole", role).get("rules") or []
        assert not any(cluster_schema.PLURAL in r.get("resources", []) for r in rules), role
    # The API server itself accepts the object (the kind is served) from a cluster admin.
    tenants.cp.kubectl("create", "-f", "-", input=json.dumps(body))
    tenants.cp.kubectl("delete", cluster_schema.PLURAL, body["metadata"]["name"])


def test_namespace_viewer_reads_but_cannot_write(tenants: Tenants) -> None:
    tenants.cp.kubectl("create", "-f", "-",
                       input=json.dumps(_policy(tenants.home, "admin-made")))
    try:
        got = tenants.cp.kubectl_json("get", schema.PLURAL, "admin-made", "-n", tenants.home,
                                      kubeconfig=tenants.viewer)
        assert got["metadata"]["name"] == "admin-made"
        ok, err = _create(tenants, tenants.viewer, _policy(tenants.home, "bob-web"))
        assert not ok and "Forbidden" in err, err
        proc = tenants.cp.kubectl("get", schema.PLURAL, "-n", tenants.other,
                                  kubeconfig=tenants.viewer, check=False)
        assert proc.returncode != 0 and "Forbidden" in proc.stderr, proc.stderr
    finally:
        tenants.cp.kubectl("delete", schema.PLURAL, "admin-made", "-n", tenants.home,
                           "--ignore-not-found", check=False)
