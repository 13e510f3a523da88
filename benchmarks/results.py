"""Measurements, and the ratios every figure is reported as.

Two estimators, both against the plain route measured in the same run, on the same path,
with the same number of other pods:

- paired: the ratio to the plain figure of the same round (same metric, taken within tens
  of seconds), then the median of those per-round ratios and their min..max;
- best: the best figure of the scenario over all rounds divided by the best figure of the
  plain route (highest rate, lowest latency): on a shared machine the best round is the
  least disturbed one, as `timeit` takes the minimum.
"""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

# metric -> (title, unit, True when higher is better)
METRICS: dict[str, tuple[str, str, bool]] = {
    "tcp_bits_per_cpu_s": ("TCP throughput per CPU", "Gbit/CPU-s", True),
    "tcp_bps": ("TCP throughput", "Gbit/s", True),
    "udp_packets_per_cpu_s": ("UDP 64 B packets per CPU", "kpkt/CPU-s", True),
    "udp_pps": ("UDP 64 B packet rate, sent", "kpps", True),
    "udp_delivered_pps": ("UDP 64 B packet rate, delivered", "kpps", True),
    "rr_tps": ("TCP request/response rate", "trans/s", True),
    "rr_mean_us": ("RR latency, mean", "µs", False),
    "rr_p50_us": ("RR latency, p50", "µs", False),
    "rr_p99_us": ("RR latency, p99", "µs", False),
}
DISPLAY_SCALE = {"tcp_bps": 1e-9, "tcp_bits_per_cpu_s": 1e-9, "udp_pps": 1e-3,
                 "udp_packets_per_cpu_s": 1e-3, "udp_delivered_pps": 1e-3}


@dataclass(frozen=True)
class Measurement:
    phase: str  # "hooks" or "scale"
    other_pods: int
    path: str
    scenario: str
    family: str
    round: int
    kind: str  # traffic.KINDS key
    values: dict[str, float]
    retries: int = 0  # disturbed measurements taken again (datapath.RR_DISTURBED_FACTOR)


@dataclass
class Failure:
    phase: str
    other_pods: int
    scenario: str
    error: str


@dataclass
class Summary:
    phase: str
    other_pods: int
    path: str
    scenario: str
    family: str
    metric: str
    median: float  # of the raw values
    best: float  # best raw value (max rate, min latency)
    ratio_median: float  # of the per-round ratios to plain
    ratio_min: float
    ratio_max: float
    ratio_q1: float  # quartiles of the per-round ratios (the plots' whiskers)
    ratio_q3: float
    ratio_best: float  # best / best of plain
    rounds: int


_Key = tuple[str, int, str]  # phase, other pods, path


@dataclass
class DatapathResults:
    measurements: list[Measurement] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    load_1min: list[float] = field(default_factory=list)  # sampled after every round
    best_rr_p50: dict[str, float] = field(default_factory=dict)  # per path, so far
    run_times: list[dict[str, Any]] = field(default_factory=list)  # prog_stats.RunTime

    def values(self) -> dict[tuple[_Key, str, str], dict[int, float]]:
        """(phase/others/path, scenario, metric) -> {round: value}."""
        out: dict[tuple[_Key, str, str], dict[int, float]] = {}
        for m in self.measurements:
            key = (m.phase, m.other_pods, m.path)
            for metric, v in m.values.items():
                out.setdefault((key, m.scenario, metric), {})[m.round] = v
        return out

    def summaries(self) -> list[Summary]:
        values = self.values()
        families = {m.scenario: m.family for m in self.measurements}
        out = []
        for (key, scenario, metric), by_round in values.items():
            plain = values.get((key, "plain", metric), {})
            ratios = [v / plain[r] for r, v in by_round.items() if plain.get(r, 0) > 0]
            if not ratios or not plain:
                continue
            higher_better = METRICS[metric][2]
            pick = max if higher_better else min
            best = pick(by_round.values())
            plain_best = pick(plain.values())
            out.append(Summary(
                *key, scenario, families[scenario], metric,
                median=statistics.median(by_round.values()),
                best=best,
                ratio_median=statistics.median(ratios),
                ratio_min=min(ratios),
                ratio_max=max(ratios),
                ratio_q1=_quartiles(ratios)[0],
                ratio_q3=_quartiles(ratios)[1],
                ratio_best=best / plain_best if plain_best > 0 else float("nan"),
                rounds=len(ratios),
            ))
        return out

    def own_costs(self) -> dict[str, dict[str, dict[str, float]]]:
        """path -> scenario -> CPU ns per 64-byte UDP packet over the same round's baseline
        (median, min, max over rounds): for `<built-in>/<hook>` the baseline is lwt-noop on
        that hook (the program's own work), for `lwt-noop/<hook>` the plain route (the
        hook's own cost). From udp_packets_per_cpu_s, hooks phase."""
        values = self.values()
        out: dict[str, dict[str, dict[str, float]]] = {}
        for (key, scenario, metric), by_round in values.items():
            if key[0] != "hooks" or metric != "udp_packets_per_cpu_s" or "/" not in scenario:
                continue
            hook = scenario.rsplit("/", 1)[1]
            base_name = "plain" if scenario.startswith("lwt-noop/") else f"lwt-noop/{hook}"
            base = values.get((key, base_name, metric), {})
            diffs = [1e9 / v - 1e9 / base[r] for r, v in by_round.items()
                     if v > 0 and base.get(r, 0) > 0]
            if diffs:
                out.setdefault(key[2], {})[scenario] = {
                    "ns": statistics.median(diffs), "min": min(diffs), "max": max(diffs),
                    "rounds": len(diffs), "over": base_name}
        return out

    def noise(self) -> dict[str, dict[str, float]]:
        """Spread of the plain route across rounds per metric, (max-min)/median in %: the
        median over (phase, other pods, path) groups and the worst group."""
        out: dict[str, dict[str, float]] = {}
        spreads: dict[str, list[float]] = {}
        for (_key, scenario, metric), by_round in self.values().items():
            vals = list(by_round.values())
            if scenario == "plain" and len(vals) >= 2 and statistics.median(vals) > 0:
                spreads.setdefault(metric, []).append(
                    100 * (max(vals) - min(vals)) / statistics.median(vals))
        for metric, found in spreads.items():
            out[metric] = {"median_spread_pct": statistics.median(found),
                           "max_spread_pct": max(found)}
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "measurements": [asdict(m) for m in self.measurements],
            "failures": [asdict(f) for f in self.failures],
            "summary": [asdict(s) for s in self.summaries()],
            "plain_spread": self.noise(),
            "own_cost": self.own_costs(),
            "run_times": self.run_times,
            "load_1min": self.load_1min,
            "rr_retried": sum(1 for m in self.measurements if m.retries),
            "rr_measurements": sum(1 for m in self.measurements if m.kind == "rr"),
        }


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]
