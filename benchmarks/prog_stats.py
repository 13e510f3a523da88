"""Each LWT program's own run time, from the kernel's BPF statistics.

With statistics enabled (bpf(BPF_ENABLE_STATS): on while the returned fd is open, for every
program on the machine) the kernel adds each run's duration to the program's run_time_ns and
counts run_cnt. Around one UDP burst to the measured pod, (Δrun_time_ns / Δrun_cnt) is the
mean time of one run of the program on the hook, timing overhead included. The overhead is
the same for every program, so the run time of the same hook's lwt-noop is subtracted: what
remains is the program's own work, measured where it runs rather than inferred from CPU-time
ratios. Statistics are on only during the bursts: they cost every program on the machine two
clock reads per run, and would otherwise tax the ratio measurements.
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import os
import platform
import statistics
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from benchmarks import shell
from benchmarks.errors import BenchError
from benchmarks.scenarios import Context, OurProgram, Scenario
from benchmarks.traffic import TrafficServers, measure

BPF_ENABLE_STATS = 32
BPF_STATS_RUN_TIME = 0
_SYSCALL_NR = {"x86_64": 321, "aarch64": 280}


@contextlib.contextmanager
def stats_enabled() -> Iterator[None]:
    nr = _SYSCALL_NR.get(platform.machine())
    if nr is None:
        raise BenchError(f"bpf(2) number unknown for {platform.machine()}")
    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.create_string_buffer(BPF_STATS_RUN_TIME.to_bytes(4, "little"), 16)
    fd = libc.syscall(nr, BPF_ENABLE_STATS, attr, 16)
    if fd < 0:
        err = ctypes.get_errno()
        raise BenchError(f"bpf(BPF_ENABLE_STATS) failed: errno {err} (needs CAP_SYS_ADMIN)")
    try:
        yield
    finally:
        os.close(fd)


def run_counters(prog_id: int) -> tuple[int, int]:
    """(run_time_ns, run_cnt) of a loaded program."""
    out = shell.run(["bpftool", "prog", "show", "id", str(prog_id), "--json"]).stdout
    info = json.loads(out)
    return int(info.get("run_time_ns", 0)), int(info.get("run_cnt", 0))


@dataclass
class RunTime:
    scenario: str
    round: int
    ns_per_run: float
    runs: int


def measure_run_times(scenarios: Sequence[Scenario], ctx: Context, servers: TrafficServers,
                      seconds: float, rounds: int, progress: Callable[[str], None]
                      ) -> list[RunTime]:
    """Per round, each LWT scenario attached alone: one UDP burst on client-to-pod."""
    shell.require_tools("bpftool")
    lwt = [s for s in scenarios if isinstance(s, OurProgram)]
    path = ctx.node.path("client-to-pod")
    out: list[RunTime] = []
    for rnd in range(rounds):
        shift = rnd % len(lwt) if lwt else 0
        for scenario in [*lwt[shift:], *lwt[:shift]]:
            try:
                scenario.setup(ctx)
                prog = scenario.program(ctx)
                with stats_enabled():
                    before = run_counters(prog.prog_id)
                    measure("udp", path, servers, seconds)
                    after = run_counters(prog.prog_id)
            except BenchError as e:
                progress(f"run time of {scenario.name}: {e}")
                continue
            finally:
                with contextlib.suppress(BenchError):
                    scenario.teardown(ctx)
            runs = after[1] - before[1]
            if runs <= 0:
                progress(f"run time of {scenario.name}: the program never ran during the burst")
                continue
            out.append(RunTime(scenario.name, rnd, (after[0] - before[0]) / runs, runs))
        progress(f"program run times: round {rnd + 1}/{rounds} done")
    return out


def own_work(run_times: Sequence[dict]) -> dict[str, dict[str, float]]:
    """scenario -> {"run_ns": median run time, "own_ns": median over rounds of (run time -
    lwt-noop's on the same hook in the same round), "own_min", "own_max", "rounds"}."""
    by = {(r["scenario"], r["round"]): r["ns_per_run"] for r in run_times}
    names = sorted({r["scenario"] for r in run_times})
    out: dict[str, dict[str, float]] = {}
    for name in names:
        hook = name.rsplit("/", 1)[-1]
        rounds = sorted(rnd for (n, rnd) in by if n == name)
        runs = [by[(name, rnd)] for rnd in rounds]
        own = [by[(name, rnd)] - by[(f"lwt-noop/{hook}", rnd)] for rnd in rounds
               if (f"lwt-noop/{hook}", rnd) in by]
        entry = {"run_ns": statistics.median(runs), "rounds": len(runs)}
        if own:
            entry.update(own_ns=statistics.median(own), own_min=min(own), own_max=max(own))
        out[name] = entry
    return out
