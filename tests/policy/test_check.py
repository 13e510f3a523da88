"""`python -m lwt_policy.check`: offline validation of policy files, one refusal per policy."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from lwt_policy.check import check_policies, main
from lwt_policy.manifests import load_cluster_objects

from tests.policy.conftest import ADMIN_NS, EXAMPLES, REPO

BAD = """\
apiVersion: lwt.dev/v1alpha1
kind: LwtRoutePolicy
metadata: {name: bad, namespace: shop}
spec:
  podSelector: {}
  hooks: {out: {program: {builtin: no-such-program}}}
---
apiVersion: lwt.dev/v1alpha1
kind: LwtRoutePolicy
metadata: {name: good, namespace: shop}
spec:
  podSelector: {}
  hooks: {in: {program: {builtin: counters}}}
"""


def test_invalid_policy_is_refused_alone(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(BAD)
    checked = check_policies(load_cluster_objects([path]).policies, ADMIN_NS)
    assert [p.name for p in checked.policies] == ["good"]
    (refusal,) = checked.refused
    assert refusal.location.document == 1
    text = str(refusal)
    assert text.startswith(f"{path}, document 1: LwtRoutePolicy shop/bad is invalid:")
    assert "spec.hooks.out.program.builtin: unsupported value 'no-such-program'" in text


def test_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*map(str, sorted(EXAMPLES.glob("*.yaml"))),
                 "--admin-namespace", ADMIN_NS]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    assert main([str(bad)]) == 1
    unreadable = tmp_path / "broken.yaml"
    unreadable.write_text("kind: [\n")
    assert main([str(unreadable)]) == 2
    assert "broken.yaml, document 1: invalid YAML" in capsys.readouterr().err


def test_runs_as_a_module() -> None:
    proc = subprocess.run([sys.executable, "-m", "lwt_policy.check",
                           str(EXAMPLES / "deny-port.yaml")],
                          capture_output=True, text=True, cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "shop/web-deny-debug-ports: valid" in proc.stdout
