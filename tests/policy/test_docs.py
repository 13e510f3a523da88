"""docs/policies.md documents every field and every rule the code enforces."""
from __future__ import annotations

import re

from lwt_policy import schema

from tests.policy.conftest import REPO

DOC = (REPO / "docs" / "policies.md").read_text()
SEMANTIC_RULES = ("depth-limit", "size-limit", "identity", "label-selector-syntax",
                  "pod-subnets-admin-only", "builtin-exists", "builtin-hook",
                  "builtin-config-schema", "builtin-config", "fail-closed-supported")


def _semantic_rules_in_code() -> set[str]:
    source = "".join((REPO / "node-agent" / "lwt_policy" / name).read_text()
                     for name in ("model.py", "selectors.py"))
    # The rule tag is the last argument of each Problem(...): "word-word".
    return set(re.findall(r'\s"([a-z]+(?:-[a-z0-9]+)+)",?\s*\)', source)) | {"identity"}


def test_every_cel_rule_is_documented() -> None:
    for rule in schema.ALL_CEL_RULES:
        assert f"`{rule.name}`" in DOC, rule.name
    # The per-builtin config rules are generated from the catalogue: documented as patterns.
    for prefix in ("config-fields", "config-required"):
        assert f"`{prefix}-<builtin>`" in DOC, prefix
    for rule in schema.builtin_config_rules():
        assert rule.name.startswith(("config-fields-", "config-required-")), rule.name
    assert "`builtin-hook-<builtin>-<hook>`" in DOC
    for rule in schema.builtin_hook_rules():
        assert rule.name.startswith("builtin-hook-"), rule.name


def test_every_semantic_rule_is_documented() -> None:
    assert _semantic_rules_in_code() == set(SEMANTIC_RULES)
    for name in SEMANTIC_RULES:
        assert f"`{name}`" in DOC, name


def test_every_spec_and_hook_field_is_documented() -> None:
    spec = schema.spec_schema()["properties"]
    hook = spec["hooks"]["properties"]["xmit"]["properties"]
    program = hook["program"]["properties"]
    for name in [*spec, *hook, *program, *program["configMap"]["properties"]]:
        assert f"`{name}`" in DOC, name
    for default in (f"`{schema.DEFAULT_FAILURE_POLICY}`", f"`{schema.DEFAULT_PRIORITY}`"):
        assert default in DOC


def test_every_status_field_is_documented() -> None:
    node = schema.node_status_schema()["properties"]
    summary = schema.status_schema()["properties"]["summary"]["properties"]
    for name in [*node, *summary]:
        assert re.search(rf"\b{name}\b", DOC), name
