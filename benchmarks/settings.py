"""How much a run measures: the full run, `--quick`, and the smoke test's `--tiny`."""
from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Settings:
    mode: str
    rounds: int  # every scenario is measured once per round; rounds interleave scenarios
    seconds: float  # length of each traffic measurement (TCP, UDP, RR each)
    scales: tuple[int, ...]  # numbers of other pods in the scale phase
    hook_paths: tuple[str, ...]  # traffic paths measured in the hooks phase
    hooks: tuple[str, ...] = ("out", "in", "xmit")
    builtins: tuple[str, ...] = ("counters", "port-filter")
    alternatives: tuple[str, ...] = ("tc-bpf", "iptables", "nftables")
    scale_scenarios: tuple[str, ...] = ("plain", "port-filter/out", "iptables", "nftables")
    # control plane
    route_counts: tuple[int, ...] = (1000, 10000)
    obj_per_route_count: int = 50  # `ip route … encap bpf obj` loads one program per route
    rss_route_counts: tuple[int, ...] = (0, 1000, 10000)
    # policy change -> enforcement trials (each way) at these route counts: >= 20 where the
    # p50/p99 matter, a few at 10,000 routes (a pass there takes seconds)
    enforcement_trials: tuple[tuple[int, int], ...] = ((1000, 20), (10000, 3))
    cluster_trials: int = 20  # the same through the Kubernetes API emulator (one pod)
    # policy create -> enforced on both nodes of the API emulator stand: (pods per node, trials)
    cluster_create_trials: tuple[tuple[int, int], ...] = ((10, 20), (1000, 20))
    only: tuple[str, ...] = field(default_factory=tuple)  # scenario names; empty: all
    kinds: tuple[str, ...] = ("tcp", "udp", "rr")  # traffic.KINDS to measure


FULL = Settings(
    mode="full",
    rounds=5,
    seconds=2.0,
    scales=(1, 1000, 10000),
    hook_paths=("client-to-pod", "pod-to-pod"),
)

QUICK = Settings(
    mode="quick",
    rounds=2,
    seconds=1.0,
    scales=(1, 1000, 10000),
    hook_paths=("client-to-pod",),
    obj_per_route_count=10,
    enforcement_trials=((1000, 10),),  # at 10,000 routes a trial takes seconds: full run only
    cluster_trials=5,
    cluster_create_trials=((10, 5), (1000, 5)),
)

# About a minute of everything, for the smoke test: proves the harness runs, measures nothing.
TINY = Settings(
    mode="tiny",
    rounds=1,
    seconds=1.0,
    scales=(10,),
    hook_paths=("client-to-pod",),
    hooks=("out",),
    builtins=("port-filter",),
    scale_scenarios=("plain", "port-filter/out", "iptables"),
    route_counts=(100,),
    obj_per_route_count=2,
    rss_route_counts=(100,),
    enforcement_trials=((100, 3),),
    cluster_trials=3,
    cluster_create_trials=((10, 2),),
)

MODES = {s.mode: s for s in (FULL, QUICK, TINY)}


def with_overrides(base: Settings, *, rounds: int | None, seconds: float | None,
                   only: tuple[str, ...], kinds: tuple[str, ...] = ()) -> Settings:
    return replace(
        base,
        kinds=kinds or base.kinds,
        rounds=rounds if rounds is not None else base.rounds,
        seconds=seconds if seconds is not None else base.seconds,
        only=only,
    )
