"""Fixtures of the agent's kernel tests (netns prefix lwtA)."""
from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.harness import AgentProcess
from tests.topology import Node, build_node

PREFIX = "lwtA"


@pytest.fixture
def node() -> Iterator[Node]:
    with build_node(PREFIX, pods=3) as built:
        yield built


@pytest.fixture
def pin_dir(bpffs: Path) -> Iterator[Path]:
    path = bpffs / f"agent-{uuid.uuid4().hex[:8]}"
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def agent(tmp_path: Path, node: Node, pin_dir: Path) -> Iterator[AgentProcess]:
    """An agent (not started) whose files live in tmp_path; stopped (detaching) at the end."""
    process = AgentProcess(tmp_path, node, pin_dir)
    try:
        yield process
    finally:
        process.close()
