"""`python -m benchmarks [--quick] [--out DIR]`: the datapath and control-plane benchmarks.

Writes DIR/bench-<UTC time>.json (and DIR/latest.json), a report DIR/performance.md with
its plots, and for a full run also docs/performance.md (use --docs/--no-docs to choose).
Exit status: 0 when every scenario ran, 1 when any could not run at all, 2 on bad usage.
Timings never decide the exit status: benchmarks report, they do not assert.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from benchmarks import (
    agent_bench,
    cluster_bench,
    control_plane,
    machine,
    mounts,
    report,
    shell,
    startup_bench,
)
from benchmarks.build import Helpers, build_helpers
from benchmarks.datapath import run_datapath
from benchmarks.errors import BenchError
from benchmarks.lwt import LwtPrograms, RouteAttacher
from benchmarks.results import DatapathResults, Failure
from benchmarks.scenarios import Context
from benchmarks.settings import FULL, MODES, QUICK, TINY, Settings, with_overrides
from benchmarks.topology import BenchNode, reap_stale
from benchmarks.traffic import DENIED_TCP_PORT, KINDS, TrafficServers

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "benchmarks" / "results"
DOCS_PAGE = REPO / "docs" / "performance.md"
SCRATCH_PREFIX = "lwtX-bench-"  # + pid: a later run removes what a killed one left
EXIT_FAILED_SCENARIO = 1
EXIT_USAGE = 2

log = logging.getLogger("benchmarks")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Datapath and control-plane benchmarks of lwt-operator against the plain "
        "route, tc BPF, iptables and nftables, on a node built from network namespaces. "
        "Needs root.",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", dest="mode", const=QUICK.mode,
                      help="fewer rounds, 1 s measurements, one traffic path (< 5 min)")
    mode.add_argument("--tiny", action="store_const", dest="mode", const=TINY.mode,
                      help="about a minute: proves every part of the harness works (the smoke "
                      "test); its figures mean nothing")
    p.set_defaults(mode=FULL.mode)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help=f"directory for the JSON result and report (default {DEFAULT_OUT})")
    docs = p.add_mutually_exclusive_group()
    docs.add_argument("--docs", dest="docs", action="store_true", default=None,
                      help="also write docs/performance.md and its plots (default: full runs)")
    docs.add_argument("--no-docs", dest="docs", action="store_false",
                      help="write only into --out")
    p.add_argument("--rounds", type=int, help="override the number of rounds")
    p.add_argument("--seconds", type=float, help="override the length of each measurement")
    p.add_argument("--only", action="append", default=[], metavar="SCENARIO",
                   help="run only this scenario (repeatable; plain always runs), e.g. "
                   "port-filter/out, iptables")
    p.add_argument("--metric", action="append", default=[], choices=sorted(KINDS),
                   help="measure only this kind of traffic (repeatable; default all)")
    p.add_argument("--skip-datapath", action="store_true", help="no traffic measurements")
    p.add_argument("--skip-control-plane", action="store_true",
                   help="no route engine / `ip route … encap bpf obj` rates")
    p.add_argument("--skip-agent", action="store_true",
                   help="skip the standalone agent's figures (--skip-cluster: the API emulator's)")
    p.add_argument("--scale-nodes", default="", metavar="N,N",
                   help="also run benchmarks/scale_bench.py (simulated agents and the real "
                   "operator on a real API server) for these node counts, e.g. 100,1000; "
                   "off by default (minutes per count)")
    p.add_argument("--skip-startup", action="store_true",
                   help="no agent start-up measurements (standalone cold start at 10,000 "
                        "pods, cluster mode on a large node; each against a same-run "
                        "baseline)")
    p.add_argument("--skip-cluster", action="store_true",
                   help="skip the policy change and create trials through the API emulator")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


class Interrupted(BaseException):
    """SIGTERM/SIGHUP turned into an exception so every `finally` cleans up."""


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    if os.geteuid() != 0:
        log.error("the benchmark needs root (network namespaces, CAP_BPF, CAP_NET_ADMIN)")
        return EXIT_USAGE
    if args.rounds is not None and args.rounds < 1:
        log.error("--rounds must be at least 1")
        return EXIT_USAGE
    settings = with_overrides(MODES[args.mode], rounds=args.rounds, seconds=args.seconds,
                              only=tuple(args.only), kinds=tuple(args.metric))
    write_docs = args.docs if args.docs is not None else settings.mode == FULL.mode
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupted)

    command = "python -m benchmarks " + shlex.join(argv if argv is not None else sys.argv[1:])
    started = dt.datetime.now(dt.UTC)
    document: dict[str, Any] = {
        "command": command.strip(),
        "settings": settings.__dict__,
        "started": started.isoformat(timespec="seconds"),
        "commit": _source_commit(),
        "machine": machine.facts(),
        "load_average_start": machine.load_average(),
    }
    datapath = DatapathResults()
    try:
        _run_all(args, settings, document, datapath)
    except (KeyboardInterrupt, Interrupted):
        log.error("interrupted: everything the run created has been removed; no result written")
        return 130
    except BenchError as e:
        datapath.failures.append(Failure("setup", 0, "harness", str(e)))
        log.error("%s", e)
    document["datapath"] = datapath.to_json()
    document["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    document["load_average_end"] = machine.load_average()
    failures = [*datapath.failures, *control_plane.failures(document.get("control_plane")),
                *agent_bench.failures(document.get("agent")),
                *cluster_bench.failures(document.get("cluster")),
                *startup_bench.failures(document.get("startup"))]

    path = _write_json(args.out, document, started)
    log.info("results: %s", path)
    report.write(document, args.out / "performance.md")
    log.info("report: %s", args.out / "performance.md")
    if write_docs:
        report.write(document, DOCS_PAGE)
        log.info("docs page: %s", DOCS_PAGE)
    if failures:
        log.error("%d scenario(s) could not run:", len(failures))
        for f in failures:
            log.error("  %s", f)
        return EXIT_FAILED_SCENARIO
    return 0


def _run_all(args: argparse.Namespace, settings: Settings, document: dict[str, Any],
             datapath: DatapathResults) -> None:
    """Every phase, sharing one scratch directory (helpers, a bpffs, agent files) that is
    removed at the end whatever happens."""
    mounts.enter_private_mount_namespace()
    stale = reap_stale() + _reap_scratch()
    if stale:
        log.info("removed what an earlier, killed run left: %s", ", ".join(stale))
    scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-"))
    bpffs = scratch / "bpffs"
    mounted = False
    try:
        helpers = build_helpers(scratch)
        bpffs.mkdir()
        shell.run(["mount", "-t", "bpf", "bpf", str(bpffs)])
        mounted = True
        phases: list[tuple[str, bool, Callable[[], Any]]] = [
            ("datapath", args.skip_datapath,
             lambda: _run_datapath(settings, helpers, bpffs, datapath)),
            ("control_plane", args.skip_control_plane,
             lambda: control_plane.run(settings, log.info)),
            ("agent", args.skip_agent,
             lambda: agent_bench.run(settings, scratch, log.info)),
            ("cluster", args.skip_cluster,
             lambda: cluster_bench.run(settings, scratch, log.info)),
            # --only names datapath scenarios: the user asked for those alone
            ("startup", args.skip_startup or bool(settings.only),
             lambda: startup_bench.run(settings, scratch, log.info)),
            ("scale", not args.scale_nodes,
             lambda: _run_scale(args.scale_nodes, scratch)),
        ]
        for name, skipped, phase in phases:
            started = time.monotonic()
            result = {"skipped": True} if skipped else phase()
            if name != "datapath":
                document[name] = result
            document[f"{name}_seconds"] = round(time.monotonic() - started, 1)
    finally:
        shell.stop_all()
        if mounted:
            shell.run(["umount", "-l", str(bpffs)], check=False)
        shutil.rmtree(scratch, ignore_errors=True)


def _run_scale(nodes: str, scratch: Path) -> list[dict[str, Any]]:
    """benchmarks/scale_bench.py in a child process (it starts its own control planes)."""
    out = scratch / "scale.json"
    proc = shell.run([sys.executable, "-m", "benchmarks.scale_bench", "--nodes", nodes,
                      "--json", str(out)], check=False, timeout=3600)
    if not out.exists():
        return [{"error": f"scale_bench exited {proc.returncode}: {proc.stderr[-500:]}"}]
    return list(json.loads(out.read_text()))


def _source_commit() -> str:
    """The commit measured: `git rev-parse HEAD`, or $LWT_BENCH_COMMIT for a run from an
    exported snapshot of the tree (no .git there)."""
    env = os.environ.get("LWT_BENCH_COMMIT")
    if env:
        return env
    proc = shell.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], check=False)
    dirty = shell.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                      check=False)
    if proc.returncode != 0:
        return "unknown"
    return proc.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def _reap_scratch() -> list[str]:
    """Scratch directories of earlier runs that were killed (their pid is gone)."""
    removed = []
    for path in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"):
        pid = path.name[len(SCRATCH_PREFIX):].split("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
    return removed


def _run_datapath(settings: Settings, helpers: Helpers, bpffs: Path,
                  results: DatapathResults) -> None:
    node: BenchNode | None = None
    programs = LwtPrograms({"port-filter": {"denyTCPPorts": [DENIED_TCP_PORT]}})
    attacher: RouteAttacher | None = None
    try:
        node = BenchNode()
        attacher = RouteAttacher(node.host)
        servers = TrafficServers(node, helpers.tcp_rr)
        ctx = Context(node, programs, attacher, bpffs, helpers.tc_port_filter, helpers.tcp_rr,
                      helpers.lwt_noop)
        run_datapath(ctx, servers, settings, results, log.info)
    finally:
        # Namespaces first: their routes hold the programs; then our own program fds.
        if attacher is not None:
            attacher.close()
        if node is not None:
            node.close()
        programs.close()


def _write_json(out: Path, document: dict[str, Any], started: dt.datetime) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    text = json.dumps(document, indent=1, default=str)
    path.write_text(text)
    (out / "latest.json").write_text(text)
    return path
