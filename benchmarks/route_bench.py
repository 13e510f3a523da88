"""Benchmark: attach, swap and detach of N routes vs `ip -batch` adding the same plain routes.

Not a test: prints rates and ratios measured side by side in one run. Needs root.

    .venv/bin/python benchmarks/route_bench.py [--routes 10000] [--rounds 5]

It builds its own network namespace (prefix lwtR), loads the two test programs of
bpf/build/testobj/route_out.o ONCE with the project's loader (each attached to every
route: never a program per route) and cleans everything up.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "node-agent"))

from lwt_agent.bpf import Hook, LoadedProgram, ObjectSpec  # noqa: E402
from lwt_agent.netns import Namespaces  # noqa: E402
from lwt_agent.route import ProgramRef, RouteEngine, labels  # noqa: E402

OBJECT = REPO / "bpf" / "build" / "testobj" / "route_out.o"


def sh(cmd: list[str], stdin: str | None = None) -> None:
    subprocess.run(cmd, input=stdin, text=True, check=True, capture_output=True)


def destinations(count: int) -> list[str]:
    base = int(ipaddress.IPv4Address("10.100.0.0"))
    return [str(ipaddress.IPv4Address(base + 1 + i)) for i in range(count)]


def ip_batch(netns: str, verb: str, dsts: list[str]) -> float:
    script = "".join(f"route {verb} {d}/32 dev h0 scope link\n" for d in dsts)
    start = time.perf_counter()
    sh(["ip", "-n", netns, "-batch", "-"], stdin=script)
    return time.perf_counter() - start


def program(prog: LoadedProgram) -> ProgramRef:
    return ProgramRef(prog.fd, labels.program_label("bench", "out", prog.tag, prog.id))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not OBJECT.exists():
        print(f"{OBJECT} missing: run `make -C bpf`", file=sys.stderr)
        return 2
    spec = ObjectSpec.from_file(OBJECT)
    # the namespace (and its routes) goes before the programs they hold
    with spec.load("lwt_out/drop_a", Hook.OUT) as loaded_a, \
            spec.load("lwt_out/drop_b", Hook.OUT) as loaded_b, \
            Namespaces(f"lwtR{uuid.uuid4().hex[:8]}") as nets:
        node = nets.add("bench")
        node.veth("h0", "p0")
        return _run(args, node.name, program(loaded_a), program(loaded_b))


def _run(args: argparse.Namespace, netns: str, prog_a: ProgramRef, prog_b: ProgramRef) -> int:
    dsts = destinations(args.routes)
    runs: dict[str, list[float]] = {}

    def keep(name: str, seconds: float) -> None:
        runs.setdefault(name, []).append(seconds)

    for _ in range(args.rounds):
        keep("ip -batch add", ip_batch(netns, "add", dsts))
        with RouteEngine(netns) as engine:
            start = time.perf_counter()
            result = engine.attach(dsts, "out", prog_a)
            keep("attach", time.perf_counter() - start)
            assert result.counts["attach"] == len(dsts), result.counts
            start = time.perf_counter()
            result = engine.attach(dsts, "out", prog_b)
            keep("swap", time.perf_counter() - start)
            assert result.counts["swap"] == len(dsts), result.counts
            start = time.perf_counter()
            result = engine.detach(dsts)
            keep("detach", time.perf_counter() - start)
            assert result.counts["detach"] == len(dsts), result.counts
        keep("ip -batch del", ip_batch(netns, "del", dsts))
    print(f"routes: {args.routes}, {args.rounds} rounds, kernel {os.uname().release}; "
          "ratio = rate / rate of `ip -batch` adding the same plain routes")
    for label, pick in (("best", min), ("median", statistics.median)):
        base = args.routes / pick(runs["ip -batch add"])
        print(f"-- {label} of {args.rounds}")
        for name, values in runs.items():
            seconds = pick(values)
            rate = args.routes / seconds
            print(f"{name:14s} {seconds * 1000:8.1f} ms {rate:10.0f} routes/s "
                  f"ratio {rate / base:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
