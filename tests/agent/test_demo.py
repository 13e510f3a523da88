"""The README's demo runs to completion: every expectation it checks holds."""
from __future__ import annotations

import subprocess
import sys
import uuid

from tests.topology import leftover_namespaces


def test_demo_runs_to_completion_and_cleans_up() -> None:
    # a prefix of its own: other runs on this machine (lwtA...) come and go meanwhile
    prefix = f"lwtD{uuid.uuid4().hex[:4]}"
    proc = subprocess.run([sys.executable, "-m", "lwt_agent.demo", "--prefix", prefix],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert f"host netns {prefix}" in out  # the prefix was used, so the check below means it
    for text in ("tcp/8080  DROPPED", "arrived encapsulated at the tunnel endpoint",
                 "samples arrived through the ring buffer", "no re-attach",
                 "every pod route is plain again", "All expectations held."):
        assert text in out, text
    assert "FAIL" not in out
    assert leftover_namespaces(prefix) == []
