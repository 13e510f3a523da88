"""The layers of docs/architecture.md, held: no import runs back up or across."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
KUBERNETES = ("kubernetes", "kopf", "lwt_kube")

# package directory -> module prefixes it must never import (at any depth, lazily or not)
RULES = {
    "node-agent/lwt_agent/bpf": ("lwt_policy", "lwt_agent.route", "lwt_agent.agent",
                                 "lwt_operator", "pyroute2", *KUBERNETES),
    "node-agent/lwt_agent/route": ("lwt_policy", "lwt_agent.agent", "lwt_operator",
                                   *KUBERNETES),
    "node-agent/lwt_policy": ("lwt_agent", "lwt_operator", "pyroute2", *KUBERNETES),
    "node-agent/lwt_kube": ("lwt_agent", "lwt_operator", "kopf", "pyroute2"),
    "operator/lwt_operator": ("lwt_agent", "pyroute2"),
}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("package", sorted(RULES))
def test_no_import_crosses_a_layer(package: str) -> None:
    forbidden = RULES[package]
    crossing = sorted(
        f"{path.relative_to(REPO)}: {name}"
        for path in (REPO / package).rglob("*.py")
        for name in imports(path)
        if any(name == f or name.startswith(f + ".") for f in forbidden))
    assert crossing == []
