"""The suite's own isolation: bpffs mounts made by tests never reach the host."""
import os
from pathlib import Path

import pytest

from tests.conftest import ORIGINAL_MNT_NS


def test_runs_in_private_mount_namespace(pytestconfig: pytest.Config) -> None:
    assert os.readlink("/proc/self/ns/mnt") != pytestconfig.stash[ORIGINAL_MNT_NS]


def test_bpffs_fixture_is_a_bpffs(bpffs: Path) -> None:
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    assert any(line.split()[1] == str(bpffs) and line.split()[2] == "bpf" for line in mounts)
