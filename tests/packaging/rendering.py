"""Renders the chart the way a user does (scripts/helm.py) and indexes what came out."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from lwt_operator import cli as operator_cli
from lwt_operator.config import OperatorConfig
from lwt_operator.daemonset import build_daemonset

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "lwt-operator"
HELM_PY = REPO / "scripts" / "helm.py"
VALUES_FULL = Path(__file__).resolve().parent / "values-full.yaml"
RELEASE = "lwt"
NAMESPACE = "lwt-system"
AGENT_CONFIG_MOUNT = "/etc/lwt-operator/agent.yaml"

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

    def operator_config(self, tmp_dir: Path) -> OperatorConfig:
        """What the real operator makes of the chart: its own command-line parser fed the
        Deployment's args (agent.yaml written where the mount would put it) and env."""
        pod = self.one("Deployment")["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        agent_yaml = tmp_dir / "agent.yaml"
        agent_yaml.write_text(self.one("ConfigMap", "-agent-config")["data"]["agent.yaml"])
        args = [
            arg.replace(f"={AGENT_CONFIG_MOUNT}", f"={agent_yaml}") for arg in container["args"]
        ]
        assert args != container["args"], f"the operator is not given {AGENT_CONFIG_MOUNT}"
        env = {e["name"]: e for e in container["env"]}
        # POD_NAMESPACE comes from the downward API: the release namespace.
        assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
        previous = os.environ.get("POD_NAMESPACE")
        os.environ["POD_NAMESPACE"] = NAMESPACE
        try:
            parsed = operator_cli.build_parser().parse_args(args)
        finally:
            if previous is None:
                del os.environ["POD_NAMESPACE"]
            else:
                os.environ["POD_NAMESPACE"] = previous
        return operator_cli.config_from_args(parsed)

    def agent_daemonset(self, tmp_dir: Path) -> dict[str, Any]:
        """The agent DaemonSet exactly as the operator would create it from this release."""
        config = self.operator_config(tmp_dir)
        return build_daemonset(config.agent, name=config.daemonset_name,
                               namespace=config.namespace, admin_namespace=config.admin_namespace)


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
