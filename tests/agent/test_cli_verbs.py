"""The `lwt-agent` verbs as a new user meets them: exit codes (README's table), --config
checked before loading, `cleanup`, NoTargets, bpffs mounted when missing, -v/--version/help.

Real processes against a topology node (real routes, real bpf(2)); bpffs only in the suite's
private mount namespace or in a mount namespace of the command's own (unshare -m).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.agent.harness import (
    REPO,
    AgentProcess,
    builtin_hook,
    encap_labels,
    pod_objects,
    policy,
    write_docs,
)
from tests.topology import Node

WEB = {"app": "web"}


def _cli(*args: str, env: dict[str, str] | None = None,
         prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, sys.executable, "-m", "lwt_agent.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def _files(tmp_path: Path, node: Node, policies: list[dict[str, Any]],
           node_name: str | None = None) -> list[str]:
    pods = pod_objects(node, [WEB] * len(node.pods))
    if node_name is not None:
        for pod in pods:
            pod["spec"]["nodeName"] = node_name
    write_docs(tmp_path / "p.yaml", policies)
    write_docs(tmp_path / "pods.yaml", pods)
    return ["--policy-file", str(tmp_path / "p.yaml"), "--pods-file", str(tmp_path / "pods.yaml")]


COUNT = policy("count", {"in": builtin_hook("counters")}, selector={"matchLabels": WEB})


# --- attach --config ---------------------------------------------------------------------

def test_attach_checks_config_before_loading_and_names_the_field() -> None:
    # A missing netns would fail at the first kernel step: the config error comes first.
    done = _cli("attach", "--dst", "10.213.9.9", "--hook", "out", "--builtin", "port-filter",
                "--config", '{"denyTcpPorts": [9]}', "--netns", "lwt-no-such-ns", "--json")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    result = json.loads(done.stdout)  # --json stays JSON
    message = result["error"]["message"]
    assert result["ok"] is False and "config.denyTcpPorts" in message
    assert "denyTCPPorts" in message and "denyUDPPorts" in message  # the allowed keys
    bad = _cli("attach", "--dst", "10.213.9.9", "--hook", "out", "--builtin", "port-filter",
               "--config", '{"denyTCPPorts": [9]')
    assert bad.returncode == 2 and "--config is not valid JSON" in bad.stderr


# --- exit codes (README: 0 ok, 1 refused by the kernel or the cluster, 2 bad usage/input) --

@pytest.mark.parametrize(("args", "code"), [
    (["inspect", "/nonexistent.o"], 2),
    (["load", "/nonexistent.o", "--hook", "out", "--section", "x"], 2),
    (["attach", "--dst", "not-an-ip", "--hook", "out", "--builtin", "counters"], 2),
    (["attach", "--dst", "10.1.1.1", "--hook", "in", "--builtin", "encap"], 2),
    (["detach", "--dst", "not-an-ip"], 2),
    (["status", "--table", "x"], 2),
    (["cleanup", "--policy", "no-slash"], 2),
    (["run", "--pods-file", "x"], 2),
    (["run", "--policy-file", "/nonexistent.yaml", "--pin-dir", "/tmp"], 1),  # not bpffs
    (["nope"], 2),
])
def test_usage_errors_exit_as_the_readme_says(args: list[str], code: int) -> None:
    done = _cli(*args)
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr


def test_exit_codes_against_a_node(tmp_path: Path, node: Node, pin_dir: Path,
                                   bpf_objects: Path) -> None:
    pod = node.pods[0].ipv4
    ns = ["--netns", node.host]
    assert _cli("inspect", str(bpf_objects / "counters.o")).returncode == 0
    assert _cli("status", *ns).returncode == 0
    assert _cli("attach", "--dst", pod, "--hook", "in", "--builtin", "counters",
                *ns).returncode == 0
    # the kernel refuses: the verifier rejects a packet write on `in`
    refused = _cli("attach", "--dst", pod, "--hook", "in", "--object",
                   str(bpf_objects / "testobj" / "out_write.o"), "--section", "lwt_write", *ns)
    assert refused.returncode == 1, refused.stderr
    assert _cli("detach", "--dst", pod, *ns).returncode == 0
    files = _files(tmp_path, node, [COUNT])
    once = ["run", "--once", *files, "--node-name", "n", *ns, "--pin-dir", str(pin_dir)]
    assert _cli(*once).returncode == 0
    write_docs(tmp_path / "p.yaml", [policy("bad", {"in": builtin_hook("nope")})])
    invalid = _cli(*once)
    assert invalid.returncode == 2 and "spec.hooks.in.program.builtin" in invalid.stderr
    assert _cli("cleanup", *ns, "--pin-dir", str(pin_dir)).returncode == 0


# --- cleanup -------------------------------------------------------------------------------

def _pins(pin_dir: Path) -> list[Path]:
    return sorted(p for p in pin_dir.rglob("*") if p.is_file() or p.is_symlink())


def test_cleanup_removes_what_once_and_detach_left(tmp_path: Path, node: Node,
                                                   pin_dir: Path) -> None:
    ns = ["--netns", node.host]
    other = policy("other", {"out": builtin_hook("counters")}, selector={"matchLabels": WEB})
    files = _files(tmp_path, node, [COUNT, other])
    done = _cli("run", "--once", *files, "--node-name", "n", *ns, "--pin-dir", str(pin_dir))
    assert done.returncode == 0, done.stderr
    assert all(encap_labels(node).values()) and _pins(pin_dir)  # --once keeps everything
    assert _cli("detach", "--dst", node.pods[0].ipv4, *ns).returncode == 0
    assert _pins(pin_dir)  # detach leaves the pins
    one = _cli("cleanup", "--policy", "shop/other", *ns, "--pin-dir", str(pin_dir), "--json")
    assert one.returncode == 0, one.stderr
    result = json.loads(one.stdout)
    assert result["owners"] == ["shop/other"] and result["pins"]
    assert not list(pin_dir.glob("shop/other/*/*")) and list(pin_dir.glob("shop/count/*/*"))
    assert all("lwt/shop/other/" not in text for text in encap_labels(node).values())
    everything = _cli("cleanup", *ns, "--pin-dir", str(pin_dir))
    assert everything.returncode == 0, everything.stderr
    assert all(text == "" for text in encap_labels(node).values())
    assert _pins(pin_dir) == []
    again = _cli("cleanup", *ns, "--pin-dir", str(pin_dir))
    assert again.returncode == 0 and "none found" in again.stdout


# --- zero targets ----------------------------------------------------------------------------

def test_zero_targets_has_its_own_reason_and_says_where_the_pods_are(
        tmp_path: Path, node: Node, pin_dir: Path) -> None:
    files = _files(tmp_path, node, [COUNT], node_name="b3-h")
    done = _cli("run", "--once", *files, "--node-name", "node-a", "--netns", node.host,
                "--pin-dir", str(pin_dir))
    assert done.returncode == 0, done.stderr
    doc = next(d for d in yaml.safe_load_all(done.stdout) if d)
    ready = next(c for c in doc["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "NoTargets", ready
    assert f"{len(node.pods)} pod(s)" in done.stderr and "b3-h" in done.stderr
    assert "--node-name" in done.stderr


# --- bpffs ---------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("unshare") is None, reason="util-linux unshare missing")
def test_default_pin_root_gets_a_bpffs_mounted_when_missing(tmp_path: Path, node: Node) -> None:
    root = tmp_path / "no-bpffs-here"  # a plain directory, as /sys/fs/bpf on such a host
    root.mkdir()
    files = _files(tmp_path, node, [COUNT])
    script = ("\"$@\" && findmnt -n -o FSTYPE --target " + str(root / "lwt-operator"))
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
         sys.executable, "-m", "lwt_agent.cli", "run", "--once", *files, "--node-name", "n",
         "--netns", node.host],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "LWT_BPFFS": str(root)})
    assert done.returncode == 0, done.stderr
    assert "mounted one there" in done.stderr and str(root) in done.stderr
    assert done.stdout.strip().splitlines()[-1] == "bpf"
    assert all(encap_labels(node).values())
    # the mount lived in that namespace only: here the directory is plain again
    assert not (root / "lwt-operator").exists()
    assert _cli("cleanup", "--netns", node.host, "--pin-dir", str(tmp_path)).returncode == 0


# --- rough edges ---------------------------------------------------------------------------

def test_verbosity_after_the_verb_version_and_help_texts() -> None:
    verbose = _cli("run", "-v", "--pods-file", "x")
    assert verbose.returncode == 2 and "unrecognized arguments" not in verbose.stderr
    for prog in ("lwt_agent.cli", "lwt_operator.cli"):
        shown = subprocess.run([sys.executable, "-m", prog, "--version"], cwd=REPO,
                               capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0 and "0." in shown.stdout, shown
    for verb, option in (("attach", "--hook"), ("detach", "--netns"), ("status", "--netns")):
        text = " ".join(_cli(verb, "--help").stdout.split())
        after = text.split(f"{option} ", 2)[-1]
        assert "network namespace" in after or "hook" in after, (verb, after[:80])
    operator = subprocess.run([sys.executable, "-m", "lwt_operator.cli", "--help"], cwd=REPO,
                              capture_output=True, text=True, timeout=60).stdout
    assert "log verbosity" in " ".join(operator.split())


def test_sigterm_is_a_normal_stop_logged_at_info(agent: AgentProcess, node: Node) -> None:
    write_docs(agent.pods, pod_objects(node, [WEB]))
    write_docs(agent.policies, [COUNT])
    agent.start()
    agent.wait_ready("shop/count")
    assert agent.signal(signal.SIGTERM) == 0
    line = next(x for x in agent.log().splitlines() if "SIGTERM received" in x)
    assert " INFO " in line, line
