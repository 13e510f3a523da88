"""Smoke test of the benchmark harness: `python -m benchmarks --tiny` on the real kernel.

It proves the harness still builds its node, loads and attaches our programs, sets up every
alternative, measures, writes its JSON and report, and cleans up. It asserts no timing:
benchmarks report, they do not assert (docs/performance.md has the real figures).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.kernel, pytest.mark.slow]


def _our_namespaces() -> set[str]:
    run_netns = Path("/run/netns")
    return {p.name for p in run_netns.iterdir() if p.name.startswith("lwtX-")} \
        if run_netns.is_dir() else set()


@pytest.mark.timeout(240)
def test_tiny_run_measures_every_scenario_and_cleans_up(tmp_path: Path) -> None:
    before = _our_namespaces()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--tiny", "--no-docs", "--out", str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=230, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    doc = json.loads((tmp_path / "latest.json").read_text())
    assert doc["datapath"]["failures"] == []
    measured = {(m["phase"], m["scenario"]) for m in doc["datapath"]["measurements"]}
    for scenario in ("plain", "port-filter/out", "tc-bpf", "iptables", "nftables"):
        assert ("hooks", scenario) in measured, scenario
    for scenario in ("plain", "port-filter/out", "iptables"):
        assert ("scale", scenario) in measured, scenario
    kinds = {(m["scenario"], m["kind"]) for m in doc["datapath"]["measurements"]}
    assert {k for _s, k in kinds} == {"tcp", "udp", "rr"}
    for m in doc["datapath"]["measurements"]:
        assert m["values"] and all(v > 0 for v in m["values"].values()), m
    ratios = [s for s in doc["datapath"]["summary"] if s["scenario"] == "port-filter/out"]
    assert ratios and all(s["ratio_median"] > 0 for s in ratios)
    engine = doc["control_plane"]["route_engine"]
    assert engine and all("rows" in r for r in engine), engine
    assert doc["control_plane"]["obj_per_route"].get("programs_loaded", 0) > 0

    agent = doc["agent"]["runs"]
    assert agent and all("rss_mb" in r and r["enforcement"]["deny"]["n"] > 0 for r in agent)
    assert doc["cluster"]["enforcement"]["allow"]["n"] > 0, doc["cluster"]
    create = doc["cluster"]["create"]
    assert create and all(c["enforced"]["n"] > 0 and len(c["rss_mb"]) == 2 for c in create), \
        create

    page = (tmp_path / "performance.md").read_text()
    assert "## Datapath" in page and doc["machine"]["kernel"] in page
    # everything the run created is gone (namespaces of parallel runs may exist: compare)
    assert _our_namespaces() <= before


def test_a_scenario_that_cannot_run_fails_the_run(tmp_path: Path) -> None:
    """A program that cannot be loaded must make the run exit non-zero (issue 7)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), LWT_BPF_DIR=str(tmp_path / "no-objects"))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--tiny", "--no-docs", "--out", str(tmp_path),
         "--only", "port-filter/out", "--skip-control-plane", "--skip-agent",
         "--skip-cluster"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 1, proc.stderr[-4000:]
    doc = json.loads((tmp_path / "latest.json").read_text())
    failed = {f["scenario"] for f in doc["datapath"]["failures"]}
    assert "port-filter/out" in failed
    assert "make -C bpf" in proc.stderr
