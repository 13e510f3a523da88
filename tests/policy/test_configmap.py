"""configMap program sources: bytes from binaryData, typed errors naming the field."""
from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
from lwt_policy.configmap import index_configmaps, resolve_configmap_program
from lwt_policy.errors import ProgramSourceError
from lwt_policy.model import HookSpec, parse_policy

from tests.policy.conftest import base_policy

OBJECT = b"\x7fELF" + bytes(range(256)) * 4  # binary, not UTF-8: must travel as binaryData


def configmap(name: str = "prog", ns: str = "shop", binary: dict[str, bytes] | None = None,
              data: dict[str, str] | None = None) -> dict[str, Any]:
    cm: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {"name": name, "namespace": ns}}
    if binary is not None:
        cm["binaryData"] = {k: base64.b64encode(v).decode() for k, v in binary.items()}
    if data is not None:
        cm["data"] = data
    return cm


def hook(sha256: str | None = None, key: str = "f.o") -> HookSpec:
    obj = base_policy()
    program: dict[str, Any] = {"configMap": {"name": "prog", "key": key}, "section": "lwt_out"}
    if sha256:
        program["sha256"] = sha256
    obj["spec"]["hooks"] = {"out": {"program": program}}
    return parse_policy(obj).spec.hooks["out"]


def test_resolves_bytes() -> None:
    cms = [configmap(binary={"f.o": OBJECT})]
    assert resolve_configmap_program(hook(), cms) == OBJECT
    assert resolve_configmap_program(hook(), index_configmaps(cms)) == OBJECT


def test_sha256_checked() -> None:
    good = hashlib.sha256(OBJECT).hexdigest()
    cms = [configmap(binary={"f.o": OBJECT})]
    assert resolve_configmap_program(hook(sha256=good), cms) == OBJECT
    with pytest.raises(ProgramSourceError) as caught:
        resolve_configmap_program(hook(sha256="0" * 64), cms)
    assert caught.value.field == "spec.hooks.out.program.sha256"
    assert good in caught.value.message
    assert caught.value.problem.path == "spec.hooks.out.program.sha256"


@pytest.mark.parametrize(("cms", "field", "words"), [
    ([], "spec.hooks.out.program.configMap.name", "does not exist"),
    ([configmap(ns="other", binary={"f.o": OBJECT})],
     "spec.hooks.out.program.configMap.name", "does not exist"),
    ([configmap(binary={"g.o": OBJECT})], "spec.hooks.out.program.configMap.key", "g.o"),
    ([configmap(data={"f.o": "text"})], "spec.hooks.out.program.configMap.key", "under data"),
    ([{**configmap(), "binaryData": {"f.o": "!!not base64!!"}}],
     "spec.hooks.out.program.configMap.key", "base64"),
], ids=["missing", "other-namespace", "missing-key", "key-in-data", "bad-base64"])
def test_errors_name_the_field(cms: list[dict[str, Any]], field: str, words: str) -> None:
    with pytest.raises(ProgramSourceError) as caught:
        resolve_configmap_program(hook(), cms)
    assert caught.value.field == field
    assert words in str(caught.value)


def test_builtin_hook_is_a_programming_error() -> None:
    builtin = parse_policy(base_policy()).spec.hooks["out"]
    with pytest.raises(TypeError):
        resolve_configmap_program(builtin, [])
