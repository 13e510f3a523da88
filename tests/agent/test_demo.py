"""The README's demo runs to completion: every expectation it checks holds."""
from __future__ import annotations

import subprocess
import sys

from tests.agent.conftest import PREFIX
from tests.topology import leftover_namespaces


def test_demo_runs_to_completion_and_cleans_up() -> None:
    before = set(leftover_namespaces(PREFIX))
    proc = subprocess.run([sys.executable, "-m", "lwt_agent.demo", "--prefix", PREFIX],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for text in ("tcp/8080  DROPPED", "arrived encapsulated at the tunnel endpoint",
                 "samples arrived through the ring buffer", "no re-attach",
                 "every pod route is plain again", "All expectations held."):
        assert text in out, text
    assert "FAIL" not in out
    assert set(leftover_namespaces(PREFIX)) == before
