"""The datapath run: phases of interleaved rounds over the scenarios.

- hooks phase (no other pods): every scenario, on each configured traffic path;
- scale phase: for each N in settings.scales, N other pod routes exist and the scale
  scenarios (plain, our port-filter on out, iptables, nftables) cover them all.

Rounds interleave: round r measures every scenario once, in an order rotated by r, so slow
stretches of the shared machine fall on all scenarios alike rather than on whichever ran
then. The plain route is measured in every round and every ratio uses the plain figure of
its own round.

The first time a scenario is set up for a given N, the run checks that it really is in
place: the route dump shows the encap, and a SYN to the denied port is dropped by the
filtering scenarios and answered otherwise. A scenario that cannot be set up, fails that
check or cannot be measured is recorded as a failure and skipped for the rest of the phase.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from benchmarks.errors import BenchError, ScenarioError
from benchmarks.results import DatapathResults, Failure, Measurement
from benchmarks.scenarios import Context, Scenario, all_scenarios
from benchmarks.settings import Settings
from benchmarks.traffic import DENIED_TCP_PORT, TrafficServers, measure, syn_gets_through

log = logging.getLogger("benchmarks.datapath")


def run_datapath(ctx: Context, servers: TrafficServers, settings: Settings,
                 results: DatapathResults, progress: Callable[[str], None]) -> None:
    scenarios = _selected(all_scenarios(settings.hooks), settings)
    hook_scenarios = [s for s in scenarios if _in_hooks_phase(s, settings)]
    scale_scenarios = [s for s in scenarios if s.name in settings.scale_scenarios and s.scales]

    ctx.node.set_other_pods(0)
    _run_phase("hooks", hook_scenarios, settings.hook_paths, ctx, servers, settings,
               results, progress)
    for count in settings.scales:
        if not scale_scenarios:
            break
        started = time.monotonic()
        ctx.node.set_other_pods(count)
        progress(f"scale: {count} other pod routes ready in {time.monotonic() - started:.1f} s")
        _run_phase("scale", scale_scenarios, ("client-to-pod",), ctx, servers, settings,
                   results, progress)
    ctx.node.set_other_pods(0)


def _in_hooks_phase(s: Scenario, settings: Settings) -> bool:
    if s.family == "plain":
        return True
    if s.family == "ours":
        return True
    return s.name in settings.alternatives


def _selected(scenarios: list[Scenario], settings: Settings) -> list[Scenario]:
    wanted = set(settings.builtins)
    keep = [s for s in scenarios
            if s.family != "ours" or getattr(s, "builtin", "") in wanted]
    if settings.only:
        keep = [s for s in keep if s.name == "plain" or s.name in settings.only]
    return keep


def _run_phase(phase: str, scenarios: Sequence[Scenario], paths: Sequence[str], ctx: Context,
               servers: TrafficServers, settings: Settings, results: DatapathResults,
               progress: Callable[[str], None]) -> None:
    others = ctx.node.other_pods
    broken: set[str] = set()
    checked: set[str] = set()
    for rnd in range(settings.rounds):
        shift = rnd % len(scenarios)
        order = [*scenarios[shift:], *scenarios[:shift]]
        for scenario in order:
            if scenario.name in broken:
                continue
            try:
                started = time.monotonic()
                scenario.setup(ctx)
                if scenario.name not in checked:
                    _check(scenario, ctx, paths)
                    checked.add(scenario.name)
                setup_s = time.monotonic() - started
                for path_name in paths:
                    path = ctx.node.path(path_name)
                    sample = measure(path, servers, settings.seconds)
                    results.measurements.append(Measurement(
                        phase, others, path_name, scenario.name, scenario.family, rnd, sample))
                    progress(
                        f"{phase} N={others} round {rnd + 1}/{settings.rounds} "
                        f"{scenario.name:<17} {path_name:<13} "
                        f"tcp {sample.tcp_bps / 1e9:6.2f} Gbit/s  "
                        f"udp {sample.udp_pps / 1e3:7.1f} kpps  "
                        f"rr {sample.rr_mean_us:6.1f} µs (setup {setup_s:.1f} s)"
                    )
            except BenchError as e:
                broken.add(scenario.name)
                results.failures.append(Failure(phase, others, scenario.name, str(e)))
                progress(f"FAILED {phase} N={others} {scenario.name}: {e}")
            finally:
                try:
                    scenario.teardown(ctx)
                except BenchError as e:
                    broken.add(scenario.name)
                    results.failures.append(Failure(phase, others, scenario.name,
                                                    f"teardown: {e}"))
        if "plain" in broken:
            raise BenchError("the plain route itself cannot be measured; see the errors above")


def _check(scenario: Scenario, ctx: Context, paths: Sequence[str]) -> None:
    scenario.check_applied(ctx)
    for path_name in paths:
        passed = syn_gets_through(ctx.node.path(path_name), ctx.tcp_rr, DENIED_TCP_PORT)
        if scenario.drops_denied_port and passed:
            raise ScenarioError(
                f"{scenario.name} is set up but a SYN to denied port {DENIED_TCP_PORT} got "
                f"through along {path_name}: the filter is not on the path"
            )
        if not scenario.drops_denied_port and not passed:
            raise ScenarioError(
                f"{scenario.name} drops a SYN to port {DENIED_TCP_PORT} along {path_name}, "
                "but nothing should filter it: a previous scenario was not torn down"
            )
