"""Session fixtures of the real control plane (registered in tests/conftest.py)."""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.k8s.cluster import ControlPlane

STARTED = pytest.StashKey[str]()


@pytest.fixture(scope="session")
def control_plane(request: pytest.FixtureRequest) -> Iterator[ControlPlane]:
    """etcd + kube-apiserver + kube-controller-manager on 127.0.0.1, one per test session
    (starting one takes seconds; tests share it and clean up what they create). Its directory
    (certificates, etcd data, logs) is removed at the end, also after a failure."""
    workdir = Path(tempfile.mkdtemp(prefix="lwt-cluster-"))
    try:
        with ControlPlane.started(workdir) as cp:
            request.config.stash[STARTED] = (
                f"control plane: Kubernetes {cp.server_version} (etcd, kube-apiserver, "
                f"kube-controller-manager from {cp.bins}) started in "
                f"{cp.startup_seconds:.1f} s")
            yield cp
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    started = config.stash.get(STARTED, None)
    if started:
        terminalreporter.write_line(started)
