"""`lwt-agent run` refuses bad usage and unusable setups with a message that says what to do."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.agent.harness import REPO


def _run(*args: str, verbose: bool = False) -> subprocess.CompletedProcess[str]:
    flags = ["-v"] if verbose else []
    return subprocess.run([sys.executable, "-m", "lwt_agent.cli", *flags, "run", *args],
                          cwd=REPO,
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})


def test_cluster_mode_needs_a_node_name() -> None:
    proc = _run("--kubeconfig", "/nonexistent")
    assert proc.returncode == 2 and "--node-name" in proc.stderr


def test_standalone_options_need_a_policy_file() -> None:
    proc = _run("--pods-file", "pods.yaml")
    assert proc.returncode == 2 and "need --policy-file" in proc.stderr


def test_pin_dir_must_be_on_bpffs(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("")
    proc = _run("--policy-file", str(policy), "--pin-dir", str(tmp_path / "pins"))
    assert proc.returncode == 1 and "is not on a bpffs" in proc.stderr


def test_unreadable_input_at_start_is_refused_and_touches_nothing(
        tmp_path: Path, bpffs: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("kind: [unclosed\n")
    proc = _run("--policy-file", str(policy), "--pin-dir", str(bpffs / "cli-test"),
                verbose=True)
    assert proc.returncode == 2, proc.stderr
    assert "p.yaml" in proc.stderr and "invalid YAML" in proc.stderr
    assert "nothing reconciled" in proc.stderr and "detached" not in proc.stderr


def test_cluster_mode_without_credentials_says_how_to_give_them(tmp_path: Path,
                                                                 bpffs: Path) -> None:
    missing = tmp_path / "kubeconfig"
    missing.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config"}))
    proc = _run("--kubeconfig", str(missing), "--node-name", "n", "--pin-dir",
                str(bpffs / "cli-test2"))
    assert proc.returncode == 1, proc.stderr
    assert "--kubeconfig" in proc.stderr
