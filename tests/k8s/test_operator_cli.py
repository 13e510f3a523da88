"""The `lwt-operator` console script as a process, against the emulated API."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import yaml
from lwt_kube import Kube, api_path
from lwt_policy import contract

from tests.k8s.conftest import POLICIES
from tests.k8s.emulator import EmulatedApiServer
from tests.k8s.harness import wait_for

REPO = Path(__file__).resolve().parents[2]
OPERATOR = Path(sys.executable).parent / "lwt-operator"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_help_and_usage_errors(tmp_path: Path) -> None:
    shown = subprocess.run([OPERATOR, "--help"], capture_output=True, text=True, check=True)
    for flag in ("--kubeconfig", "--agent-config", "--namespace", "--admin-namespace",
                 "--finalizer-timeout", "--peering", "--standalone"):
        assert flag in shown.stdout
    bad = tmp_path / "agent.yaml"
    bad.write_text("metricsPort: 99999\n")
    refused = subprocess.run([OPERATOR, "--agent-config", bad], capture_output=True, text=True)
    assert refused.returncode == 2
    assert "metricsPort must be a port number" in refused.stderr


def test_runs_from_kubeconfig_env_and_stops_on_sigterm(k8s_api: EmulatedApiServer,
                                                       kube: Kube,
                                                       tmp_path: Path) -> None:
    agent = tmp_path / "agent.yaml"
    agent.write_text(yaml.safe_dump({"image": "registry.example/lwt:cli", "metricsPort": 9555}))
    env = {**os.environ, "KUBECONFIG": str(k8s_api.kubeconfig)}
    health_port = free_port()
    process = subprocess.Popen(
        [OPERATOR, "--agent-config", agent, "--namespace", "lwt-test", "--resync", "1",
         "--log-level", "warning", "--health-port", str(health_port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        ds = wait_for(lambda: kube.get(api_path("apps/v1/daemonsets", "lwt-test", "lwt-agent")),
                      timeout=20, what="the DaemonSet from the operator process")
        container = ds["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == "registry.example/lwt:cli"
        assert container["ports"][0]["containerPort"] == 9555
        policy = yaml.safe_load((REPO / "examples" / "deny-port.yaml").read_text())
        kube.create(api_path(POLICIES, "shop"), policy)
        wait_for(lambda: contract.is_accepted(kube.get(api_path(
            POLICIES, "shop", policy["metadata"]["name"]))), timeout=20, what="Accepted")
        health = urllib.request.urlopen(f"http://127.0.0.1:{health_port}/healthz", timeout=5)
        assert health.status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output


def test_peering_replicas_get_distinct_priorities_by_default() -> None:
    from lwt_operator.cli import build_parser, config_from_args

    def priority(*argv: str) -> int:
        return config_from_args(build_parser().parse_args(list(argv))).priority

    assert priority() == 0 and priority("--standalone") == 0
    assert priority("--peering", "p", "--priority", "7") == 7
    drawn = {priority("--peering", "p") for _ in range(5)}
    assert len(drawn) > 1 and 0 not in drawn  # same top priority would pause every replica
