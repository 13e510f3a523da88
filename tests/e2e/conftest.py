"""The end-to-end stand: the real control plane (session fixture `control_plane`), the chart
installed with helm, two nodes made of network namespaces whose kubelet the harness plays,
real agents and the real operator as processes with their ServiceAccounts' tokens.

Package-scoped: every test of tests/e2e shares one install (helm install costs ~20 s) and
cleans up the policies and pods it creates; the release is uninstalled after the last one.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.k8s.cluster import ControlPlane
from tests.k8s.stand import Stand, create_namespace, installed_stand


@pytest.fixture(scope="package")
def stand(control_plane: ControlPlane, bpffs: Path) -> Iterator[Stand]:
    with installed_stand(control_plane, bpffs, release="lwt", namespace="lwt-system",
                         values={"agent": {"configMapPrograms": True}}) as stand:
        create_namespace(control_plane, "shop", None)
        # The admin's opt-in to custom (ConfigMap) programs for this namespace.
        control_plane.kubectl("label", "namespace", "shop", "lwt.dev/custom-programs=allowed")
        try:
            yield stand
        finally:
            control_plane.kubectl("delete", "namespace", "shop", "--timeout=90s", check=False,
                                  timeout=120)
