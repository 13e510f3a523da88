"""Renders the chart the way a user does (scripts/helm.py) and indexes what came out."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "lwt-operator"
HELM_PY = REPO / "scripts" / "helm.py"
VALUES_FULL = Path(__file__).resolve().parent / "values-full.yaml"
RELEASE = "lwt"
NAMESPACE = "lwt-system"

# The value sets every chart test runs with: the defaults and everything switched on.
VALUE_SETS: dict[str, Path | None] = {"default": None, "full": VALUES_FULL}


def run_helm_py(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HELM_PY), *args], capture_output=True, text=True, check=False
    )


@dataclass(frozen=True)
class Rendered:
    """One `helm template --include-crds` of the chart."""

    text: str
    documents: tuple[dict[str, Any], ...]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.documents if doc["kind"] == kind]

    def one(self, kind: str, name_suffix: str = "") -> dict[str, Any]:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"].endswith(name_suffix)]
        assert len(found) == 1, f"expected one {kind} named *{name_suffix}, got {len(found)}"
        return found[0]

    def agent_settings(self) -> dict[str, Any]:
        """The agent.yaml the operator reads (the ConfigMap the chart gives it)."""
        config_map = self.one("ConfigMap", "-agent-config")
        settings: dict[str, Any] = yaml.safe_load(config_map["data"]["agent.yaml"])
        return settings


@cache
def render(value_set: str) -> Rendered:
    values = VALUE_SETS[value_set]
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--include-crds"]
    if values is not None:
        args += ["-f", str(values)]
    result = run_helm_py(*args)
    assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
    documents = tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)
    return Rendered(text=result.stdout, documents=documents)
