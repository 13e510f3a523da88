"""Where the upstream control-plane binaries are: scripts/k8s-binaries.sh pins and caches them.

The script is the one source of the versions and the cache layout; this module only asks it.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "k8s-binaries.sh"
NAMES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl", "helm")


class BinariesMissing(RuntimeError):
    """The control-plane binaries are not built yet."""


def bin_dir() -> Path:
    """The cache directory holding all five binaries; BinariesMissing says how to build them."""
    proc = subprocess.run([str(SCRIPT), "--bin-dir"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BinariesMissing(
            f"the Kubernetes binaries are not built: run {SCRIPT.relative_to(REPO)} "
            f"(or scripts/bootstrap.sh --test-tools) first; {proc.stderr.strip()}")
    return Path(proc.stdout.strip())
