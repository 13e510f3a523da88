"""Fixtures of the route-engine kernel tests (netns prefix lwtR)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.route.programs import TestPrograms, load_test_programs
from tests.topology import Node, build_node

PREFIX = "lwtR"


@pytest.fixture(scope="session")
def programs(bpffs: Path, bpf_objects: Path) -> Iterator[TestPrograms]:
    if not (bpf_objects / "testobj" / "route_out.o").exists():
        raise RuntimeError("bpf/build/testobj/route_out.o missing: run `make -C bpf`")
    loaded = load_test_programs(bpffs, bpf_objects)
    try:
        yield loaded
    finally:
        for prog in loaded.loaded:
            prog.close()


@pytest.fixture
def node() -> Iterator[Node]:
    """Calico-style node: /32 and /128 routes per pod on caliN."""
    with build_node(PREFIX, pods=2) as built:
        yield built


@pytest.fixture
def bridge_node() -> Iterator[Node]:
    """Bridge-CNI node: pods on br0, only the subnet route in the host."""
    with build_node(PREFIX, pods=2, bridge=True) as built:
        yield built
