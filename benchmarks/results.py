"""Measurements, and the ratios every figure is reported as.

A ratio is always taken against the plain route measured in the same round, on the same
path, with the same number of other pods: noise that hits a round hits both sides of the
ratio. The summary gives the median of those per-round ratios and their spread (min..max).
"""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks.traffic import Sample

# metric -> (title, unit, True when higher is better)
METRICS: dict[str, tuple[str, str, bool]] = {
    "tcp_bps": ("TCP throughput", "Gbit/s", True),
    "udp_pps": ("UDP packet rate (64 B)", "kpps", True),
    "rr_tps": ("TCP request/response rate", "trans/s", True),
    "rr_mean_us": ("RR latency, mean", "µs", False),
    "rr_p99_us": ("RR latency, p99", "µs", False),
}
DISPLAY_SCALE = {"tcp_bps": 1e-9, "udp_pps": 1e-3}


@dataclass(frozen=True)
class Measurement:
    phase: str  # "hooks" or "scale"
    other_pods: int
    path: str
    scenario: str
    family: str
    round: int
    sample: Sample


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
    ratio_median: float  # of the per-round ratios to plain
    ratio_min: float
    ratio_max: float
    rounds: int


@dataclass
class DatapathResults:
    measurements: list[Measurement] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    def summaries(self) -> list[Summary]:
        plain: dict[tuple[str, int, str, int], Sample] = {
            (m.phase, m.other_pods, m.path, m.round): m.sample
            for m in self.measurements
            if m.scenario == "plain"
        }
        groups: dict[tuple[str, int, str, str, str], list[Measurement]] = {}
        for m in self.measurements:
            groups.setdefault((m.phase, m.other_pods, m.path, m.scenario, m.family), []).append(m)
        out = []
        for (phase, others, path, scenario, family), ms in groups.items():
            for metric in METRICS:
                values = [getattr(m.sample, metric) for m in ms]
                ratios = [
                    getattr(m.sample, metric) / base
                    for m in ms
                    if (base := _base(plain, m, metric))
                ]
                if not ratios:
                    continue
                out.append(Summary(
                    phase, others, path, scenario, family, metric,
                    median=statistics.median(values),
                    ratio_median=statistics.median(ratios),
                    ratio_min=min(ratios),
                    ratio_max=max(ratios),
                    rounds=len(ratios),
                ))
        return out

    def noise(self) -> dict[str, dict[str, float]]:
        """Spread of the plain route across rounds, per metric: (max-min)/median, in %."""
        out: dict[str, dict[str, float]] = {}
        by_key: dict[tuple[str, int, str], list[Sample]] = {}
        for m in self.measurements:
            if m.scenario == "plain":
                by_key.setdefault((m.phase, m.other_pods, m.path), []).append(m.sample)
        for metric in METRICS:
            spreads = []
            for samples in by_key.values():
                values = [getattr(s, metric) for s in samples]
                if len(values) >= 2 and statistics.median(values) > 0:
                    spreads.append(100 * (max(values) - min(values)) / statistics.median(values))
            if spreads:
                out[metric] = {"median_spread_pct": statistics.median(spreads),
                               "max_spread_pct": max(spreads)}
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "measurements": [asdict(m) for m in self.measurements],
            "failures": [asdict(f) for f in self.failures],
            "summary": [asdict(s) for s in self.summaries()],
            "plain_spread": self.noise(),
        }


def _base(plain: dict[tuple[str, int, str, int], Sample], m: Measurement,
          metric: str) -> float | None:
    base = plain.get((m.phase, m.other_pods, m.path, m.round))
    if base is None:
        return None
    value = getattr(base, metric)
    return value if value > 0 else None


def find(summaries: list[Summary], *, phase: str, scenario: str, metric: str,
         path: str = "client-to-pod", other_pods: int | None = None) -> Summary | None:
    for s in summaries:
        if (s.phase == phase and s.scenario == scenario and s.metric == metric
                and s.path == path and (other_pods is None or s.other_pods == other_pods)):
            return s
    return None
