"""Hostile documents in files: refused naming the field, in bounded time (no kernel)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from lwt_policy.errors import ManifestError
from lwt_policy.manifests import load_cluster_objects, read_documents
from lwt_policy.model import validate_policy
from lwt_policy.objectmeta import dns_label_error, dns_subdomain_error

HEAD = "apiVersion: lwt.dev/v1alpha1\nkind: LwtRoutePolicy\n"
SPEC = "spec:\n  podSelector: {}\n  hooks: {out: {program: {builtin: counters}}}\n"


def _refusal(tmp_path: Path, text: str) -> str:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ManifestError) as caught:
        load_cluster_objects([path])
    return str(caught.value)


@pytest.mark.parametrize(("text", "says"), [
    (HEAD + "metadata: {name: a}\nspec: {1: x}\n", "spec: key 1 is not a string"),
    (HEAD + "metadata: {name: a}\nspec: {~: x}\n", "spec: key None is not a string"),
    (HEAD + "metadata: {name: a, labels: {true: x}}\n", "labels: key True is not a string"),
    (HEAD + "metadata: {name: a}\nspec: {[a]: x}\n", "spec: key ('a',) is not a string"),
    (HEAD + "metadata: {name: a, name: b}\n", "duplicate mapping key: 'name'"),
    (HEAD + "metadata: {name: a, namespace: 5}\n", "metadata.namespace: must be a string"),
    (HEAD + "metadata: {name: a, namespace: {x: 1}}\n", "metadata.namespace"),
    (HEAD + "metadata: {name: a, namespace: [x]}\n", "metadata.namespace"),
    (HEAD + "metadata: {name: 5}\n", "metadata.name: must be a string"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: Web_1}\n", "metadata.name"),
])
def test_malformed_documents_are_refused_naming_the_field(tmp_path: Path, text: str,
                                                          says: str) -> None:
    assert says in _refusal(tmp_path, text)


def test_alias_bomb_is_refused_before_anything_expands_it(tmp_path: Path) -> None:
    lines = [HEAD + "metadata: {name: bomb}", SPEC.rstrip("\n"),
             "  x0: &x0 [a, a, a, a, a, a, a, a, a]"]
    for level in range(1, 10):
        lines.append(f"  x{level}: &x{level} [" + ", ".join([f"*x{level - 1}"] * 9) + "]")
    started = time.process_time()
    message = _refusal(tmp_path, "\n".join(lines) + "\n")
    assert "alias replay limit exceeded" in message
    assert time.process_time() - started < 5  # 9**10 values if expanded: never finishes


def test_modest_aliases_still_work(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    hooks = "{out: {program: {builtin: counters}}}"
    path.write_text(
        "apiVersion: v1\nkind: List\nitems:\n"
        f"- {{apiVersion: lwt.dev/v1alpha1, kind: LwtRoutePolicy, metadata: {{name: a, labels: "
        f"&l {{app: web}}}}, spec: &s {{podSelector: {{}}, hooks: {hooks}}}}}\n"
        f"- {{apiVersion: lwt.dev/v1alpha1, kind: LwtRoutePolicy, metadata: {{name: b, labels: "
        f"*l}}, spec: *s}}\n")
    policies = [loc.obj for loc in load_cluster_objects([path]).policies]
    assert [p["metadata"]["labels"] for p in policies] == [{"app": "web"}, {"app": "web"}]
    assert policies[0]["spec"] == policies[1]["spec"]


def test_documents_are_numbered_from_one(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("---\nkind: X\n---\nkind: Y\na: [1\n")
    with pytest.raises(ManifestError) as caught:
        read_documents(path)
    assert caught.value.document == 2


def _policy(**meta: Any) -> dict[str, Any]:
    return {"apiVersion": "lwt.dev/v1alpha1", "kind": "LwtRoutePolicy",
            "metadata": {"name": "p", "namespace": "shop", **meta},
            "spec": {"podSelector": {}, "hooks": {"out": {"program": {"builtin": "counters"}}}}}


@pytest.mark.parametrize(("meta", "field"), [
    ({"name": "wéb"}, "metadata.name"),
    ({"name": "shop/team-a/web"}, "metadata.name"),
    ({"name": "team-a/web"}, "metadata.name"),
    ({"name": "Web"}, "metadata.name"),
    ({"name": "web\n"}, "metadata.name"),
    ({"name": "a" * 254}, "metadata.name"),
    ({"namespace": "2024-01-01T00:00:00Z"}, "metadata.namespace"),
    ({"namespace": "a.b"}, "metadata.namespace"),
    ({"namespace": "a" * 64}, "metadata.namespace"),
    ({"generation": "abc"}, "metadata.generation"),
    ({"generation": -1}, "metadata.generation"),
    ({"generation": True}, "metadata.generation"),
    ({"deletionTimestamp": 5}, "metadata.deletionTimestamp"),
    ({"deletionTimestamp": "yesterday"}, "metadata.deletionTimestamp"),
    ({"uid": {"a": 1}}, "metadata.uid"),
    ({"labels": {"app": "wéb"}}, "metadata.labels.app"),
    ({"labels": {"bad key!": "x"}}, "metadata.labels.bad key!"),
    ({"annotations": {"a": 1}}, "metadata.annotations.a"),
    ({"finalizers": [1]}, "metadata.finalizers"),
])
def test_policy_metadata_is_checked_as_the_api_server_would(meta: dict[str, Any],
                                                            field: str) -> None:
    problems = validate_policy(_policy(**meta))
    assert {p.path for p in problems} == {field}, problems


def test_valid_names() -> None:
    assert validate_policy(_policy(name="web.counters-1", generation=3,
                                   deletionTimestamp="2026-01-01T00:00:00Z")) == []
    assert dns_subdomain_error("a" * 253) is None and dns_label_error("a" * 63) is None
