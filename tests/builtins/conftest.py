"""Fixtures of the built-in program tests: fresh objects, a namespace node, an attacher."""
from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from lwt_policy.catalogue import CATALOGUE, builtin_object_dir

from .netns import Node, build_node
from .programs import IprouteAttacher, LoaderAttacher, make_attacher

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def builtin_objects() -> Path:
    """Builds (incrementally) exactly the built-in objects, so these tests always run
    against the current C sources."""
    targets = [f"build/{p.object}" for p in CATALOGUE.values()]
    proc = subprocess.run(["make", "-C", str(REPO / "bpf"), *targets],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"building the built-ins failed:\n{proc.stdout}\n{proc.stderr}")
    directory = builtin_object_dir()
    for program in CATALOGUE.values():
        assert (directory / program.object).is_file(), directory / program.object
    return directory


@pytest.fixture
def node() -> Iterator[Node]:
    built = build_node()
    try:
        yield built
    finally:
        built.close()


@pytest.fixture
def attacher(bpffs: Path, builtin_objects: Path
             ) -> Iterator[IprouteAttacher | LoaderAttacher]:
    """Loads/attaches built-ins with pins private to this test (cleaned up after it).
    Must be torn down after `node` (declare `node` first) so routes go before pins."""
    att = make_attacher(bpffs / f"lwtB-{secrets.token_hex(4)}")
    try:
        yield att
    finally:
        att.close()
