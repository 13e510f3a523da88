"""Kubernetes-format inputs for standalone mode: v1 List, multi-document YAML, typed lists."""
from __future__ import annotations

import base64
import json
import shutil
import textwrap
from pathlib import Path

import pytest
from lwt_policy.errors import ManifestError
from lwt_policy.manifests import assume_scheduled_here, load_cluster_objects, read_documents
from lwt_policy.model import parse_policy

from tests.policy.conftest import ADMIN_NS, EXAMPLES

# What `kubectl get pods,configmaps -o yaml` prints (trimmed): one v1 List of mixed kinds.
KUBECTL_LIST = textwrap.dedent("""\
    apiVersion: v1
    items:
    - apiVersion: v1
      kind: Pod
      metadata:
        labels: {app: web}
        name: web-1
        namespace: shop
        resourceVersion: "1234"
        uid: 0b0c
      spec:
        containers: [{name: web, image: nginx}]
        nodeName: node-a
      status:
        phase: Running
        podIP: 10.244.1.7
        podIPs: [{ip: 10.244.1.7}, {ip: "fd00::7"}]
    - apiVersion: v1
      binaryData:
        f.o: {blob}
      kind: ConfigMap
      metadata: {name: prog, namespace: shop}
    - apiVersion: v1
      kind: Service
      metadata: {name: web, namespace: shop}
    kind: List
    metadata:
      resourceVersion: ""
    """)


def write(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def test_kubectl_list(tmp_path: Path) -> None:
    blob = base64.b64encode(b"\x7fELF\x00\x01").decode()
    objs = load_cluster_objects([write(tmp_path, "dump.yaml",
                                       KUBECTL_LIST.replace("{blob}", blob))])
    assert [p["metadata"]["name"] for p in objs.pods] == ["web-1"]
    assert objs.pods[0]["status"]["podIPs"][1]["ip"] == "fd00::7"
    assert [c["metadata"]["name"] for c in objs.configmaps] == ["prog"]
    assert objs.ignored == [(f"{tmp_path / 'dump.yaml'}, document 1, items[2]", "Service")]


def test_multi_document_yaml_and_examples(tmp_path: Path) -> None:
    nodes = write(tmp_path, "nodes.yaml", textwrap.dedent("""\
        ---
        apiVersion: v1
        kind: Node
        metadata: {name: node-a, labels: {zone: a}}
        spec: {podCIDRs: [10.244.1.0/24]}
        ---
        ---
        apiVersion: v1
        kind: NodeList
        items:
        - metadata: {name: node-b}
          spec: {podCIDRs: [10.244.2.0/24]}
        """))
    policies = tmp_path / "policies"
    shutil.copytree(EXAMPLES, policies)
    objs = load_cluster_objects([nodes, *sorted(policies.glob("*.yaml"))])
    assert [n["metadata"]["name"] for n in objs.nodes] == ["node-a", "node-b"]
    assert objs.nodes[1]["kind"] == "Node"  # typed-list items get their kind
    assert len(objs.policies) == len(list(EXAMPLES.glob("*.yaml")))
    for loc in objs.policies:
        parse_policy(loc.obj, admin_namespace=ADMIN_NS)
        assert loc.where.startswith(str(policies)) and "document 1" in loc.where


def test_json_input_and_default_namespace(tmp_path: Path) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {}, "status": {"phase": "Running", "podIP": "10.0.0.1"}}
    objs = load_cluster_objects([write(tmp_path, "pods.json", json.dumps(pod))])
    assert objs.pods[0]["metadata"]["namespace"] == "default"


def test_later_definition_replaces_earlier(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", "apiVersion: v1\nkind: Node\nmetadata: {name: n}\n"
                  "spec: {podCIDRs: [10.0.1.0/24]}\n")
    second = write(tmp_path, "b.yaml", "apiVersion: v1\nkind: Node\nmetadata: {name: n}\n"
                   "spec: {podCIDRs: [10.0.2.0/24]}\n")
    objs = load_cluster_objects([first, second, first, second])
    assert [n["spec"]["podCIDRs"] for n in objs.nodes] == [["10.0.2.0/24"]]


@pytest.mark.parametrize(("text", "where", "words"), [
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\nkind: [unclosed\n",
     "document 2", "invalid YAML (line"),
    ("- just\n- a list\n", "document 1", "expected a Kubernetes object"),
    ("apiVersion: v1\nmetadata: {name: a}\n", "document 1", "no kind"),
    ("apiVersion: v2\nkind: Pod\nmetadata: {name: a}\n", "document 1", "apiVersion v1"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {}\n", "document 1", "no metadata.name"),
    ("apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: a}"
     "\n- 42\n", "document 1, items[1]", "expected an object"),
    ("apiVersion: v1\nkind: List\nitems: {a: 1}\n", "document 1", "items must be a list"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\nbinaryData: {f.o: '%%%'}\n",
     "document 1", "binaryData['f.o'] is not valid base64"),
    ("apiVersion: lwt.dev/v1\nkind: LwtRoutePolicy\nmetadata: {name: a}\n", "document 1",
     "lwt.dev/v1alpha1"),
], ids=["yaml-syntax", "not-a-mapping", "no-kind", "bad-apiversion", "no-name",
        "list-item", "list-items-type", "bad-base64", "policy-version"])
def test_errors_name_file_and_document(tmp_path: Path, text: str, where: str,
                                       words: str) -> None:
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(ManifestError) as caught:
        load_cluster_objects([path])
    message = str(caught.value)
    assert message.startswith(f"{path}, {where}: "), message
    assert words in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as caught:
        read_documents(tmp_path / "nope.yaml")
    assert "cannot read the file" in str(caught.value)
    assert caught.value.path == str(tmp_path / "nope.yaml")


def test_empty_file_has_no_objects(tmp_path: Path) -> None:
    assert read_documents(write(tmp_path, "empty.yaml", "---\n# nothing\n")) == []


def test_assume_scheduled_here() -> None:
    pods = [{"metadata": {"name": "a"}, "spec": {}},
            {"metadata": {"name": "b"}, "spec": {"nodeName": "elsewhere"}},
            {"metadata": {"name": "c"}}]
    out = assume_scheduled_here(pods, "host-1")
    assert [p["spec"]["nodeName"] for p in out] == ["host-1", "elsewhere", "host-1"]
    assert "nodeName" not in pods[0]["spec"]  # inputs untouched
