"""Writes the performance page (Markdown) and its PNG plots from one run's JSON document.

Everything on the page comes from the document: figures, the command, the machine facts and
the noise measured in that run. Plots go to `<page dir>/<page stem>/`.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.prog_stats import own_work
from benchmarks.results import DISPLAY_SCALE, METRICS, DatapathResults, Measurement

GOAL_TCP_RATIO = 0.95  # port-filter on out: at most 5 % less TCP throughput than plain
GOAL_RR_ADDED = 0.05  # ... and at most 5 % added request/response latency
GOAL_SCALE_DRIFT = 0.03  # at 10,000 routes, within 3 % of the one-route figure
GOAL_ROUTE_RATE = 1 / 3  # attach/swap at >= 1/3 of ip -batch's plain-route rate
GOAL_AGENT_RSS_MB = 100  # agent resident memory at 10,000 routes
# issue 17: a built-in's own work per packet over lwt-noop on the same hook
GOAL_OWN_NS = {"port-filter/out": 50.0, "counters/out": 30.0}
# The figures that survive a shared machine (CPU cost, median latency) are plotted and lead
# the tables; the raw rates follow.
RESULT_NAME = "results.json"
PLOTTED = ("tcp_bits_per_cpu_s", "udp_packets_per_cpu_s", "rr_p50_us")
TABLE_METRICS = (*PLOTTED, "tcp_bps", "udp_pps", "rr_mean_us", "rr_p99_us")


def write(doc: dict[str, Any], page: Path) -> None:
    """Writes `page`, its plots and a compact copy of the run's JSON into `<page stem>/`."""
    page.parent.mkdir(parents=True, exist_ok=True)
    plot_dir = page.parent / page.stem
    plot_dir.mkdir(exist_ok=True)
    summaries = doc.get("datapath", {}).get("summary") or _summarize(doc)
    plots = _plots(summaries, plot_dir)
    # The copy beside the page keeps every measurement; summaries are derived from them.
    compact = {**doc, "datapath": {k: v for k, v in doc.get("datapath", {}).items()
                                   if k != "summary"}}
    (plot_dir / RESULT_NAME).write_text(json.dumps(compact, separators=(",", ":"), default=str))
    page.write_text(_markdown(doc, summaries, {k: f"{page.stem}/{v}" for k, v in plots.items()},
                              f"{page.stem}/{RESULT_NAME}"))


def _own_costs(doc: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """path -> scenario -> CPU ns per packet over its baseline (results.own_costs)."""
    datapath = doc.get("datapath", {})
    if "own_cost" in datapath:
        return datapath["own_cost"]
    measurements = datapath.get("measurements", [])
    return DatapathResults([Measurement(**m) for m in measurements]).own_costs()


def _run_times(doc: dict[str, Any]) -> dict[str, dict[str, float]]:
    """scenario -> kernel BPF statistics run time and own work (prog_stats.own_work)."""
    return own_work(doc.get("datapath", {}).get("run_times", []))


def _ns(v: float) -> str:
    return f"{v:+.0f}"


def _own_cell(c: dict[str, float] | None) -> str:
    if c is None:
        return "-"
    if c["rounds"] < 2:
        return f"{_ns(c['ns'])} ns"
    return f"{_ns(c['ns'])} ns ({c['min']:+.0f} to {c['max']:+.0f})"


def _run_cell(r: dict[str, float] | None) -> str:
    if r is None:
        return "-"
    if "own_ns" not in r:
        return f"run {r['run_ns']:.0f} ns"
    return (f"{_ns(r['own_ns'])} ns ({r['own_min']:+.0f} to {r['own_max']:+.0f});<br>"
            f"run {r['run_ns']:.0f} ns")


def _summarize(doc: dict[str, Any]) -> list[dict]:
    """Summaries recomputed from the measurements (the compact JSON copy has none)."""
    measurements = doc.get("datapath", {}).get("measurements", [])
    results = DatapathResults([Measurement(**m) for m in measurements])
    return [asdict(s) for s in results.summaries()]


# -- figures -----------------------------------------------------------------------------------

def _get(summaries: list[dict], **want: Any) -> dict | None:
    for s in summaries:
        if all(s.get(k) == v for k, v in want.items()):
            return s
    return None


def _ratio(s: dict | None) -> str:
    if s is None:
        return "-"
    if s["rounds"] < 2:
        return f"{s['ratio_median']:.3f}"
    return f"{s['ratio_median']:.3f} ({s['ratio_min']:.2f}-{s['ratio_max']:.2f})"


def _cell(s: dict | None) -> str:
    """Table cell: paired median (min-max), then the best-round ratio."""
    if s is None or s["rounds"] < 2:
        return _ratio(s)
    return f"{_ratio(s)}<br>best {s['ratio_best']:.3f}"


def _value(metric: str, v: float) -> str:
    v *= DISPLAY_SCALE.get(metric, 1.0)
    return f"{v:,.0f}" if v >= 100 else f"{v:.2f}"


def _order(summaries: list[dict], phase: str) -> list[str]:
    seen: list[str] = []
    for s in summaries:
        if s["phase"] == phase and s["scenario"] not in seen:
            seen.append(s["scenario"])
    seen.sort(key=_rank)
    return seen


def _rank(name: str) -> tuple[int, str]:
    """plain, then the no-op hook, then our built-ins, then the alternatives."""
    if name == "plain":
        return 0, name
    if name.startswith("lwt-noop"):
        return 1, name
    if name.startswith(("counters", "port-filter")):
        return 2, name
    return 3, name


def _paths(summaries: list[dict], phase: str) -> list[str]:
    return list(dict.fromkeys(s["path"] for s in summaries if s["phase"] == phase))


def _scales(summaries: list[dict]) -> list[int]:
    return sorted({s["other_pods"] for s in summaries if s["phase"] == "scale"})


# -- plots -------------------------------------------------------------------------------------

def _plots(summaries: list[dict], plot_dir: Path) -> dict[str, str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    plot_dir.mkdir(parents=True, exist_ok=True)
    made: dict[str, str] = {}
    if any(s["phase"] == "hooks" for s in summaries):
        made["hooks"] = _plot_hooks(plt, summaries, plot_dir / "hooks.png")
    if _scales(summaries):
        made["scale"] = _plot_scale(plt, summaries, plot_dir / "scale.png")
    return made


def _plot_hooks(plt: Any, summaries: list[dict], out: Path) -> str:
    scenarios = [n for n in _order(summaries, "hooks") if n != "plain"]
    paths = _paths(summaries, "hooks")
    fig, axes = plt.subplots(1, len(PLOTTED), figsize=(5 * len(PLOTTED), 0.45 * len(scenarios) + 2),
                             sharey=True)
    width = 0.8 / max(1, len(paths))
    for ax, metric in zip(axes, PLOTTED, strict=True):
        title, _unit, higher_better = METRICS[metric]
        for i, path in enumerate(paths):
            ys, vals, lo, hi = [], [], [], []
            for j, name in enumerate(scenarios):
                s = _get(summaries, phase="hooks", path=path, scenario=name, metric=metric)
                if s is None:
                    continue
                ys.append(j + i * width)
                vals.append(s["ratio_median"])
                lo.append(s["ratio_median"] - s["ratio_q1"])
                hi.append(s["ratio_q3"] - s["ratio_median"])
            ax.errorbar(vals, ys, xerr=[lo, hi], fmt="o", label=path, capsize=3)
        ax.axvline(1.0, color="black", linewidth=0.8)
        low, high = ax.get_xlim()
        ax.set_xlim(max(low, 0.5), min(max(high, 1.1), 2.0))  # the interesting range
        ax.set_title(_plot_title(title, higher_better), fontsize=9)
        ax.set_yticks([j + width * (len(paths) - 1) / 2 for j in range(len(scenarios))])
        ax.set_yticklabels(scenarios, fontsize=8)
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out.name


def _plot_scale(plt: Any, summaries: list[dict], out: Path) -> str:
    scales = _scales(summaries)
    scenarios = [n for n in _order(summaries, "scale") if n != "plain"]
    fig, axes = plt.subplots(1, len(PLOTTED), figsize=(5 * len(PLOTTED), 3.6))
    for ax, metric in zip(axes, PLOTTED, strict=True):
        title, _unit, higher_better = METRICS[metric]
        for name in scenarios:
            xs, ys, lo, hi = [], [], [], []
            for n in scales:
                s = _get(summaries, phase="scale", other_pods=n, scenario=name, metric=metric)
                if s is None:
                    continue
                xs.append(n)
                ys.append(s["ratio_median"])
                lo.append(s["ratio_median"] - s["ratio_q1"])
                hi.append(s["ratio_q3"] - s["ratio_median"])
            if xs:
                ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=name)
        ax.axhline(1.0, color="black", linewidth=0.8)
        if ax.has_data() and min(scales) > 0:
            ax.set_xscale("log")
        if ax.has_data() and not higher_better:
            ax.set_yscale("log")  # iptables' latency grows by an order of magnitude
        ax.set_xlabel("other pods (routes / rules / set elements)")
        ax.set_title(_plot_title(title, higher_better), fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out.name


def _plot_title(title: str, higher_better: bool) -> str:
    return f"{title}\n(ratio to plain; {'higher' if higher_better else 'lower'} is better)"


# -- markdown ----------------------------------------------------------------------------------

def _markdown(doc: dict[str, Any], summaries: list[dict], plots: dict[str, str],
              result_link: str) -> str:
    m = doc.get("machine", {})
    s = doc.get("settings", {})
    lines = [
        "# Performance",
        "",
        "<!-- Generated by `python -m benchmarks` (benchmarks/report.py) from one run's JSON; "
        "do not edit by hand: re-run the benchmark. -->",
        "",
        "What a per-destination packet policy costs on the datapath when it rides on the pod's "
        "route (LWT BPF, this project) compared with the plain route and with what one would use "
        "otherwise (tc BPF on the pod's veth, iptables, nftables), how that cost grows with the "
        "number of pods, and how fast the control plane changes routes. **Every datapath figure "
        "is a ratio to the plain route measured in the same run** (same round, same path, same "
        "number of other pods); absolute numbers from this machine mean little elsewhere.",
        "",
        "## The run",
        "",
        f"- Command: `{doc.get('command', '?')}` (mode `{s.get('mode')}`: "
        f"{s.get('rounds')} rounds, {s.get('seconds')} s per measurement)",
        f"- When: {doc.get('started')} → {doc.get('finished')} (datapath "
        f"{doc.get('datapath_seconds', '?')} s, control plane "
        f"{doc.get('control_plane_seconds', '?')} s)",
        f"- Source: commit {doc.get('commit', 'unknown')}",
        f"- Machine: {m.get('cpu_model')}, {m.get('cpus_online')} CPUs online, "
        f"{m.get('memory_mb')} MB, virtualized: {m.get('virtualized')}",
        f"- Kernel {m.get('kernel')} ({m.get('machine')}), {m.get('os')}",
        f"- Tools: {m.get('iperf3')}; {m.get('iptables')}; {m.get('nft')}; {m.get('iproute2')}; "
        f"{m.get('clang')}",
        f"- Load average at start {_load(doc.get('load_average_start'))}, at end "
        f"{_load(doc.get('load_average_end'))}",
        "",
        f"- Raw results of this run (every measurement, JSON): [{result_link}]({result_link})",
        "",
        "Reproduce: `make bench` (full run, writes this page), `make bench-quick` or "
        "`python -m benchmarks --quick` (< 5 min, writes only `benchmarks/results/`). "
        "`make` cannot take `--quick` as a flag: `make bench ARGS=--quick` also works. Needs root "
        "and the packages of `scripts/bootstrap.sh`.",
        "",
    ]
    lines += _findings_section(summaries, doc)
    lines += _noise_section(doc)
    lines += _goals_section(summaries, doc)
    lines += _own_section(doc)
    lines += _hooks_section(summaries, plots, doc)
    lines += _scale_section(summaries, plots)
    lines += _control_section(doc.get("control_plane", {}))
    lines += _agent_section(doc.get("agent"))
    lines += _cluster_section(doc.get("cluster"))
    lines += _failures_section(doc)
    lines += _method_section()
    return "\n".join(lines) + "\n"


def _findings_section(summaries: list[dict], doc: dict[str, Any]) -> list[str]:
    """The main readings of this run, in sentences, every number taken from the tables."""
    out: list[str] = []

    def hooks(scenario: str, metric: str) -> dict | None:
        return _get(summaries, phase="hooks", path="client-to-pod", scenario=scenario,
                    metric=metric)

    plain_udp = hooks("plain", "udp_packets_per_cpu_s")
    ours = [n for n in _order(summaries, "hooks")
            if n.startswith(("lwt-noop", "counters", "port-filter"))]
    if plain_udp and ours:
        ns_plain = 1e9 / plain_udp["median"]
        costs = []
        for name in ours:
            s = hooks(name, "udp_packets_per_cpu_s")
            if s and s["ratio_median"] > 0:
                costs.append((ns_plain * (1 / s["ratio_median"] - 1), name))
        if costs:
            text = ", ".join(f"{name} {ns:+.0f} ns" for ns, name in costs)
            out.append(
                f"- **Per packet**, forwarding a 64-byte UDP packet to the pod costs "
                f"{ns_plain:,.0f} ns of CPU on the plain route here; the CPU added per packet "
                f"(from the median ratio) is: {text}. `lwt-noop` only returns BPF_OK: it is "
                "the price of being on the route at all; the rest is each program's work.")
    own = _own_costs(doc).get("client-to-pod", {})
    runs = _run_times(doc)
    mine = [n for n in _order(summaries, "hooks") if n.startswith(("counters", "port-filter"))]
    cpu = [f"{n} {own[n]['ns']:+.0f} ns" for n in mine if n in own]
    bpf = [f"{n} {runs[n]['own_ns']:+.0f} ns" for n in mine if "own_ns" in runs.get(n, {})]
    if cpu or bpf:
        parts = []
        if cpu:
            parts.append("from CPU time " + ", ".join(cpu))
        if bpf:
            parts.append("as the kernel times the programs (BPF statistics) " + ", ".join(bpf))
        out.append("- **Each built-in's own work** per packet, over lwt-noop on the same hook: "
                   + "; ".join(parts) + ".")
    for name in ("port-filter/out",):
        tcp = hooks(name, "tcp_bits_per_cpu_s")
        rr = hooks(name, "rr_p50_us")
        if tcp and rr:
            out.append(
                f"- **{name}** keeps {tcp['ratio_median']:.1%} of the plain route's TCP "
                f"throughput per CPU and adds {rr['ratio_median'] - 1:+.1%} to the median "
                "request/response latency.")
    alts = []
    for name in ("tc-bpf", "iptables", "nftables"):
        s = hooks(name, "udp_packets_per_cpu_s")
        if s:
            alts.append(f"{name} {s['ratio_median']:.3f}")
    pf = hooks("port-filter/out", "udp_packets_per_cpu_s")
    if alts and pf:
        out.append(f"- **Against the alternatives** with one pod (UDP packets per CPU, ratio to "
                   f"plain): port-filter/out {pf['ratio_median']:.3f}, " + ", ".join(alts) + ".")
    scales = _scales(summaries)
    if scales:
        hi = scales[-1]
        parts = []
        for name in ("port-filter/out", "iptables", "nftables"):
            u = _get(summaries, phase="scale", other_pods=hi, scenario=name,
                     metric="udp_packets_per_cpu_s")
            r = _get(summaries, phase="scale", other_pods=hi, scenario=name, metric="rr_p50_us")
            if u and r:
                parts.append(f"{name} {u['ratio_median']:.3f} of plain's packets per CPU and "
                             f"{r['ratio_median']:.2f}x its median latency")
        if parts:
            out.append(f"- **With {hi:,} other pods**: " + "; ".join(parts) + ".")
    runs = (doc.get("agent") or {}).get("runs", [])
    if runs:
        mem = ", ".join(f"{r['rss_mb']:.0f} MB at {r['routes']:,} routes" for r in runs
                        if "rss_mb" in r)
        if mem:
            out.append(f"- **Agent memory** (standalone, resident): {mem}.")
    if not out:
        return []
    return ["## Findings", "", *out, "",
            "The sections below give every figure with its spread; the noise section says how "
            "far to trust a difference of a few percent.", ""]


def _load(v: Any) -> str:
    return " / ".join(f"{x:.2f}" for x in v) if v else "?"


def _noise_section(doc: dict[str, Any]) -> list[str]:
    spread = doc.get("datapath", {}).get("plain_spread", {})
    lines = ["## How noisy the machine was", ""]
    if not spread:
        return [*lines, "Only one round ran, so the spread across rounds is unknown.", ""]
    lines += [
        "The machine has 2 vCPUs shared with other work running at the same time (see the load "
        "average above). The spread of the *plain route* across rounds — (max - min) / median of "
        "the same measurement repeated — is the noise floor: a ratio closer to 1 than this "
        "cannot be told apart from 1.",
        "",
        *_load_line(doc),
        "| metric | median spread | worst spread |",
        "|---|---|---|",
    ]
    for metric, v in spread.items():
        lines.append(f"| {METRICS[metric][0]} | {v['median_spread_pct']:.1f} % | "
                     f"{v['max_spread_pct']:.1f} % |")
    return [*lines, ""]


def _load_line(doc: dict[str, Any]) -> list[str]:
    dp = doc.get("datapath", {})
    load = dp.get("load_1min") or []
    lines = []
    if dp.get("rr_measurements"):
        lines += [
            f"Request/response: {dp.get('rr_retried', 0)} of {dp['rr_measurements']} "
            "measurements were taken again because their median latency was more than 2.5x "
            "the lowest median seen on that path (once, after a 0.5 s pause, the lower kept).",
            ""]
    if not load:
        return lines
    return [*lines,
            "One-minute load average after each round of the datapath phase: "
            f"{min(load):.1f} to {max(load):.1f} (median {statistics.median(load):.1f}) on "
            f"{doc.get('machine', {}).get('cpus_online', '?')} CPUs. The benchmark's traffic "
            "keeps one to two tasks runnable on its one CPU; load above that is other work "
            "sharing the machine.", ""]


def _goals_section(summaries: list[dict], doc: dict[str, Any]) -> list[str]:
    lines = ["## Goals (issues 7 and 17) against this run", "",
             "Each figure: median of the per-round ratios to plain (min-max), then the "
             "best-round ratio. The reading uses the median.", "",
             "| goal | metric | ratio in this run | reading |", "|---|---|---|---|"]
    spread = doc.get("datapath", {}).get("plain_spread", {})

    def row(goal: str, s: dict | None, met: bool | None) -> None:
        if s is None:
            return
        verdict = "-" if met is None else _verdict(met, spread, s["metric"])
        lines.append(f"| {goal} | {METRICS[s['metric']][0]} | {_ratio(s)}; best "
                     f"{s['ratio_best']:.3f} | {verdict} |")

    def hooks(metric: str) -> dict | None:
        return _get(summaries, phase="hooks", path="client-to-pod", scenario="port-filter/out",
                    metric=metric)

    for metric in ("tcp_bits_per_cpu_s", "tcp_bps"):
        s = hooks(metric)
        row("port-filter on out: ≤ 5 % TCP throughput cost", s,
            s["ratio_median"] >= GOAL_TCP_RATIO if s else None)
    for metric in ("rr_p50_us", "rr_mean_us"):
        s = hooks(metric)
        row("port-filter on out: ≤ 5 % added RR latency", s,
            s["ratio_median"] <= 1 + GOAL_RR_ADDED if s else None)
    scales = _scales(summaries)
    if len(scales) >= 2:
        lo, hi = scales[0], scales[-1]
        for metric in PLOTTED:
            a = _get(summaries, phase="scale", other_pods=lo, scenario="port-filter/out",
                     metric=metric)
            b = _get(summaries, phase="scale", other_pods=hi, scenario="port-filter/out",
                     metric=metric)
            if a and b:
                drift = b["ratio_median"] / a["ratio_median"] - 1
                lines.append(
                    f"| port-filter/out with {hi:,} attached routes within 3 % of {lo} | "
                    f"{METRICS[metric][0]} | {b['ratio_median']:.3f} vs {a['ratio_median']:.3f} "
                    f"({drift:+.1%}) | "
                    f"{_verdict(abs(drift) <= GOAL_SCALE_DRIFT, spread, metric, drift)} |")
    for r in doc.get("control_plane", {}).get("route_engine", []):
        rows = r.get("rows") or {}
        for verb in ("attach", "swap"):
            if verb in rows:
                ratio = rows[verb]["ratio_to_ip_batch_add"]
                verdict = "met" if ratio >= GOAL_ROUTE_RATE else "not met"
                lines.append(f"| {verb} of {r['routes']:,} routes ≥ 1/3 of `ip -batch` rate | "
                             f"routes/s | {ratio:.2f} x | {verdict} |")
    for r in (doc.get("agent") or {}).get("runs", []):
        if r.get("routes") == max(x.get("routes", 0) for x in doc["agent"]["runs"]) \
                and "rss_mb" in r:
            verdict = "met" if r["rss_mb"] <= GOAL_AGENT_RSS_MB else "not met"
            lines.append(f"| agent resident memory ≤ 100 MB at 10,000 routes | RSS at "
                         f"{r['routes']:,} routes | {r['rss_mb']:.1f} MB | {verdict} |")
    lines += _issue17_goals(summaries, doc, spread)
    return [*lines, "", "Benchmarks report; they do not assert: a goal shown as not met is a "
            "finding, not a failed build.", ""]


def _issue17_goals(summaries: list[dict], doc: dict[str, Any], spread: dict) -> list[str]:
    """Rows for issue 17: the built-ins' own work, and port-filter/out against tc-bpf."""
    rows: list[str] = []
    own = _own_costs(doc).get("client-to-pod", {})
    runs = _run_times(doc)
    for name, limit in GOAL_OWN_NS.items():
        c = own.get(name)
        if c:
            rows.append(f"| {name} own work ≤ {limit:.0f} ns over lwt-noop/out (issue 17) | CPU "
                        f"ns/packet | {_own_cell(c)} | "
                        f"{'met' if c['ns'] <= limit else 'not met'} |")
        r = runs.get(name, {})
        if "own_ns" in r:
            rows.append(f"| {name} own work ≤ {limit:.0f} ns over lwt-noop/out (issue 17) | "
                        f"BPF run time | {_run_cell(r).replace(';<br>', ';')} | "
                        f"{'met' if r['own_ns'] <= limit else 'not met'} |")
    tc = _get(summaries, phase="hooks", path="client-to-pod", scenario="tc-bpf",
              metric="udp_packets_per_cpu_s")
    pf = _get(summaries, phase="hooks", path="client-to-pod", scenario="port-filter/out",
              metric="udp_packets_per_cpu_s")
    if tc and pf:
        diff = pf["ratio_median"] / tc["ratio_median"] - 1
        rows.append(f"| port-filter/out UDP packets per CPU ≥ tc-bpf's, one pod (issue 17) | "
                    f"UDP 64 B packets per CPU | {pf['ratio_median']:.3f} vs tc-bpf "
                    f"{tc['ratio_median']:.3f} ({diff:+.1%}) | "
                    f"{_verdict(diff >= 0, spread, pf['metric'], diff)} |")
    scales = _scales(summaries)
    if tc and scales:
        hi = scales[-1]
        s = _get(summaries, phase="scale", other_pods=hi, scenario="port-filter/out",
                 metric="udp_packets_per_cpu_s")
        if s:
            diff = s["ratio_median"] / tc["ratio_median"] - 1
            rows.append(f"| port-filter/out UDP packets per CPU ≥ tc-bpf's, {hi:,} other pods "
                        f"(issue 17; tc-bpf's cost does not depend on other pods: its one-pod "
                        f"ratio) | UDP 64 B packets per CPU | {s['ratio_median']:.3f} vs "
                        f"{tc['ratio_median']:.3f} ({diff:+.1%}) | "
                        f"{_verdict(diff >= 0, spread, s['metric'], diff)} |")
    return rows


def _verdict(met: bool, spread: dict, metric: str, difference: float | None = None) -> str:
    noise = spread.get(metric, {}).get("median_spread_pct")
    suffix = f" (noise ±{noise / 2:.1f} %)" if noise is not None else ""
    if not met and difference is not None and noise is not None \
            and abs(difference) * 100 <= noise / 2:
        suffix += ": the difference is within the noise"
    return ("met" if met else "not met") + suffix


def _hooks_section(summaries: list[dict], plots: dict[str, str],
                   doc: dict[str, Any] | None = None) -> list[str]:
    scenarios = _order(summaries, "hooks")
    if not scenarios:
        return []
    own = _own_costs(doc or {})
    lines = [
        "## Datapath: each hook and each alternative (no other pods)", "",
        "Each cell: the median of the per-round ratios to the plain route, (min-max) of those "
        "ratios, and the ratio of the best rounds. Rates: higher is better; latency: lower is "
        "better. The plain row gives the plain route's own median figure. *Own work*: CPU ns "
        "per 64-byte UDP packet over lwt-noop on the same hook, in the same round (for "
        "lwt-noop itself: over the plain route, the hook's own cost); median (min to max) "
        "over rounds.", "",
    ]
    if "hooks" in plots:
        lines += [f"![ratios per scenario]({plots['hooks']})", "",
                  "Dots: median of the per-round ratios; whiskers: their interquartile range.",
                  ""]
    for path in _paths(summaries, "hooks"):
        lines += [f"### {path}", "",
                  "| scenario | own work, ns/packet | "
                  + " | ".join(METRICS[k][0] for k in TABLE_METRICS) + " |",
                  "|---|---|" + "---|" * len(TABLE_METRICS)]
        for name in scenarios:
            cells = [_own_cell(own.get(path, {}).get(name))]
            for metric in TABLE_METRICS:
                s = _get(summaries, phase="hooks", path=path, scenario=name, metric=metric)
                if name == "plain" and s:
                    cells.append(f"{_value(metric, s['median'])} {METRICS[metric][1]}")
                else:
                    cells.append(_cell(s))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _own_section(doc: dict[str, Any]) -> list[str]:
    """Each LWT program's own work per packet: from CPU time and from BPF statistics."""
    own = _own_costs(doc).get("client-to-pod", {})
    runs = _run_times(doc)
    names = sorted(set(own) | set(runs), key=_rank)
    if not names:
        return []
    lines = [
        "## Each program's own work per packet", "",
        "Client-to-pod path, 64-byte UDP. *From CPU time*: CPU ns per packet of the scenario "
        "minus that of lwt-noop on the same hook in the same round (for lwt-noop: minus the "
        "plain route's), from the UDP packets-per-CPU measurements of the hooks phase. *From "
        "BPF statistics*: the program's mean run time as the kernel times it "
        "(`bpf(BPF_ENABLE_STATS)`, run_time_ns / run_cnt over a UDP burst with only that "
        "program attached) minus lwt-noop's on the same hook in the same round; `run` is the "
        "raw run time, timing overhead included. Median (min to max) over rounds.", "",
        "| scenario | own work, from CPU time | own work, from BPF statistics |",
        "|---|---|---|",
    ]
    for name in names:
        lines.append(f"| {name} | {_own_cell(own.get(name))} | {_run_cell(runs.get(name))} |")
    return [*lines, ""]


def _pods_label(n: int) -> str:
    return "1 other pod" if n == 1 else f"{n:,} other pods"


def _scale_section(summaries: list[dict], plots: dict[str, str]) -> list[str]:
    scales = _scales(summaries)
    if not scales:
        return []
    lines = [
        "## Datapath at scale: 1 to 10,000 other pods", "",
        "Our port-filter is one program attached to every pod route; iptables has one rule per pod "
        "(the measured pod's rule last); nftables has one rule and a set with one element per pod. "
        "Ratio to the plain route with the same number of other pod routes, client-to-pod path.",
        "",
    ]
    if "scale" in plots:
        lines += [f"![ratios by number of pods]({plots['scale']})", "",
                  "Dots: median of the per-round ratios; whiskers: their interquartile range; "
                  "latency on a log scale.", ""]
    for metric in TABLE_METRICS:
        lines += [f"### {METRICS[metric][0]}", "",
                  "| scenario | " + " | ".join(_pods_label(n) for n in scales) + " |",
                  "|---|" + "---|" * len(scales)]
        for name in _order(summaries, "scale"):
            cells = []
            for n in scales:
                s = _get(summaries, phase="scale", other_pods=n, scenario=name, metric=metric)
                if name == "plain" and s:
                    cells.append(f"{_value(metric, s['median'])} {METRICS[metric][1]}")
                else:
                    cells.append(_cell(s))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _control_section(cp: dict[str, Any]) -> list[str]:
    lines = ["## Control plane", ""]
    if not cp or cp.get("skipped"):
        return [*lines, "Not measured in this run.", ""]
    lines += [
        "Route changes per second in a namespace of their own, by `benchmarks/route_bench.py` "
        "(the route engine's batched netlink, one program attached to every route) against "
        "`ip -batch` adding the same number of plain routes in the same run, over "
        f"{_rounds(cp)} rounds (best and median).",
        "",
        "| routes | operation | best time | best routes/s | ratio to `ip -batch` add (best) "
        "| median routes/s | ratio (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in cp.get("route_engine", []):
        if r.get("error"):
            lines.append(f"| {r['routes']:,} | could not run: {r['error']} | | | | | |")
            continue
        medians = r.get("median_rows", {})
        for name, row in r.get("rows", {}).items():
            med = medians.get(name)
            med_cells = (f"{med['routes_per_s']:,} | {med['ratio_to_ip_batch_add']:.2f}"
                         if med else "- | -")
            lines.append(f"| {r['routes']:,} | {name} | {row['ms']:.1f} ms | "
                         f"{row['routes_per_s']:,} | {row['ratio_to_ip_batch_add']:.2f} | "
                         f"{med_cells} |")
    obj = cp.get("obj_per_route", {})
    lines += ["", "### `ip route … encap bpf obj`, one route at a time", ""]
    if obj.get("error"):
        lines.append(f"Could not run: {obj['error']}")
    elif obj:
        lines += [
            f"{obj['routes']} routes added with `ip -batch` lines of the form `route add DST dev "
            f"h0 encap bpf out obj {obj['object']} section …`: "
            f"**{obj['obj_per_route_routes_per_s']:,} routes/s**, against "
            f"{obj['plain_ip_batch_routes_per_s']:,} routes/s for the same plain routes. iproute2 "
            "loads the object again for every route, so this is one new BPF program per route "
            f"({obj['programs_loaded']} programs here). The benchmark stops at a few dozen on "
            "purpose: loading and then freeing thousands of programs at once deadlocked this "
            "kernel's BPF JIT allocator machine-wide, and iproute2 also leaks a "
            "file descriptor per route (it fails near 10,000). The rate, not the count, is the "
            "point: it is what an attach-by-object approach costs per route.",
        ]
    return [*lines, ""]


def _agent_section(agent: dict[str, Any] | None) -> list[str]:
    lines = ["## The agent (standalone)", ""]
    if not agent or agent.get("skipped"):
        return [*lines, "Not measured in this run.", ""]
    lines += [
        "`lwt-agent run --policy-file … --pods-file …` as a real process on the benchmark's "
        "node, one port-filter policy on `out` selecting every pod (one program, attached to "
        "every pod route). Memory is the agent process's resident set once it has converged; "
        "policy change → enforcement is the time from rewriting the policy file (deny, then "
        "allow again, one port) to the first SYN that is dropped (answered again), probed "
        "every millisecond from the client namespace. The agent polls its files every 0.5 s "
        "(0.25 s on average, changes are made at a random phase of that cycle); the rest is "
        "its reconcile pass, which grows with the number of pods.",
        "",
        "| pod routes | all attached after start | RSS | peak RSS | change → dropped, p50 / p99 "
        "| change → allowed, p50 / p99 | trials |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in agent.get("runs", []):
        if r.get("error"):
            lines.append(f"| {r['routes']:,} | could not run: {r['error']} | | | | | |")
            continue
        enf = r.get("enforcement")
        deny = (f"{enf['deny']['p50_ms']:.0f} / {enf['deny']['p99_ms']:.0f} ms" if enf else "-")
        allow = (f"{enf['allow']['p50_ms']:.0f} / {enf['allow']['p99_ms']:.0f} ms"
                 if enf else "-")
        attached = f"{r['seconds_to_attach_all']:.2f} s" if r["routes"] else "-"
        lines.append(f"| {r['routes']:,} | {attached} | "
                     f"{r['rss_mb']:.1f} MB | {r['peak_rss_mb']:.1f} MB | {deny} | {allow} | "
                     f"{enf['trials'] if enf else '-'} |")
    return [*lines, ""]


def _cluster_section(cluster: dict[str, Any] | None) -> list[str]:
    lines = ["### Policy change → enforcement through the Kubernetes API emulator", ""]
    if not cluster or cluster.get("skipped"):
        return [*lines, "Not measured in this run.", ""]
    if cluster.get("error"):
        return [*lines, f"Could not run: {cluster['error']}", ""]
    enf = cluster["enforcement"]
    return [
        *lines,
        "The end-to-end tests' stand for one node: the emulated API server, the operator "
        "(production timings) and `lwt-agent run --kubeconfig` on the benchmark's node, one pod. "
        "A trial merge-patches the policy's `config` and times, from the PATCH request, the "
        "first SYN dropped (answered again): validation by the operator, its accepted-"
        "generation handshake, the agent's watch and the map write.",
        "",
        "| direction | p50 | p99 | min | max | trials |",
        "|---|---|---|---|---|---|",
        *(f"| {label} | {enf[k]['p50_ms']:.0f} ms | {enf[k]['p99_ms']:.0f} ms | "
          f"{enf[k]['min_ms']:.0f} ms | {enf[k]['max_ms']:.0f} ms | {enf[k]['n']} |"
          for k, label in (("deny", "port denied → SYN dropped"),
                           ("allow", "port allowed → SYN answered"))),
        "",
        *_cluster_create_section(cluster.get("create")),
    ]


def _cluster_create_section(create: list[dict[str, Any]] | None) -> list[str]:
    lines = ["### Policy create → enforced on every node (API emulator)", ""]
    if not create:
        return [*lines, "Not measured in this run.", ""]
    lines += [
        "Two `lwt-agent run --kubeconfig` processes, each on its own node (host netns with "
        "pod routes), the emulated API server and the operator; the pods are API objects "
        "whose IPs are the nodes' pod routes. A trial POSTs a new policy selecting every pod "
        "and times, from the POST, until every pod route on both nodes carries `encap bpf "
        "out` (`ip route show`, polled every 20 ms); the policy is deleted and the routes "
        "are plain again (finalizer released) before the next trial. RSS: each agent once "
        "converged, policy attached.",
        "",
        "| pods per node | nodes | p50 | p99 | min | max | trials | agent RSS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in create:
        if c.get("error"):
            lines.append(f"| {c['pods_per_node']:,} | {c['nodes']} | could not run: "
                         f"{c['error']} | | | | | |")
            continue
        e = c["enforced"]
        rss = " / ".join(f"{m:.1f} MB" for m in c.get("rss_mb", [])) or "-"
        lines.append(f"| {c['pods_per_node']:,} | {c['nodes']} | {e['p50_ms']:.0f} ms | "
                     f"{e['p99_ms']:.0f} ms | {e['min_ms']:.0f} ms | {e['max_ms']:.0f} ms | "
                     f"{e['n']} | {rss} |")
    return [*lines, ""]


def _rounds(cp: dict[str, Any]) -> str:
    found = {r.get("rounds") for r in cp.get("route_engine", [])}
    return "/".join(str(n) for n in sorted(x for x in found if x)) or "?"


def _failures_section(doc: dict[str, Any]) -> list[str]:
    fails = doc.get("datapath", {}).get("failures", [])
    if not fails:
        return []
    lines = ["## Scenarios that could not run", ""]
    for f in fails:
        lines.append(f"- {f['phase']} (other pods {f['other_pods']}) {f['scenario']}: {f['error']}")
    return [*lines, ""]


def _method_section() -> list[str]:
    return [
        "## Method", "",
        "- **Node.** Network namespaces: a client and two pods joined to a forwarding host "
        "namespace by veth pairs, Calico style (pod `/32` on eth0, default route via "
        "169.254.1.1, host route `POD/32 dev cali… scope link`). Our programs ride on the host "
        "route to the measured pod; the other pods of the scale phase are `/32` routes on one "
        "more veth. Traffic paths: *client-to-pod* (client → host, forwarded → pod) and "
        "*pod-to-pod* (pod A → host → pod B).",
        "- **Policy.** Every filtering scenario drops TCP to one port of the measured pod (7999) "
        "that the benchmark traffic does not use: each packet is evaluated and passed. Before "
        "measuring, the run proves each scenario is in place: the route shows the encap, and a "
        "SYN to the denied port is dropped (answered for non-filtering scenarios).",
        "- **Scenarios.** `lwt-noop/<hook>`: `benchmarks/lwt_noop.c`, an LWT program that only "
        "returns BPF_OK, the cost of the hook itself; a built-in's own work is its cost over "
        "the no-op on the same hook. "
        "`counters/<hook>` and `port-filter/<hook>`: our built-ins loaded once by "
        "the project's loader, configured through the catalogue's typed config, attached by the "
        "route engine. `tc-bpf`: `benchmarks/tc_port_filter.c`, the same verdict as "
        "port-filter (without its per-destination counters and source-prefix trie) on the pod's "
        "host-side veth, clsact egress; it keeps the hash set of {port, protocol} and the "
        "helper header reads of a typical tc filter (and of port-filter before issue 17), so "
        "its figure stays comparable across runs. `iptables`: Debian's iptables (nf_tables "
        "backend), one `FORWARD -d POD -p tcp --dport 7999 -j DROP` rule per pod. "
        "`nftables`: one forward-hook rule `ip daddr . tcp dport @deny drop` with one set "
        "element per pod.",
        "- **Metrics.** iperf3 TCP, one stream: throughput received, and throughput per "
        "CPU-second of the iperf3 client and server processes. iperf3 UDP with 64-byte payloads "
        "at unlimited rate: packets per CPU-second of the sender, and its send rate (the "
        "per-packet cost shows here; TCP's GSO super-packets hide it). With this kernel's "
        "tick-based CPU accounting, the softirq work a sender triggers inline (forwarding "
        "through the host namespace, the LWT program, delivery to the pod) is charged to the "
        "sender, so CPU-seconds measure the path's cost even when other work takes the CPUs "
        "away; the packets/s delivered to the pod (in the JSON) depend on how much CPU the "
        "receiver got and are not used. `benchmarks/tcp_rr.c`, netperf TCP_RR's equivalent "
        "(netperf is not in Debian): 1-byte request and answer over one connection; its median "
        "(p50) latency is the robust figure, the mean and p99 follow the machine's scheduling "
        "stalls.",
        "- **One CPU.** Every sender and receiver is pinned to the same CPU (like netperf -T), "
        "so the whole path — sender, the host's forwarding with the hook under test, receiver "
        "— runs there and the raw rates are one-CPU figures. Unpinned, on these 2 vCPUs the "
        "scheduler sometimes splits client and server across vCPUs and every request/response "
        "transaction then waits for a halted vCPU to be woken through the hypervisor: the "
        "median jumped from about 5 µs to about 40 µs while that lasted (seen with both CPUs "
        "loaded), and the CPU cost of a UDP packet moved by ±5 % with the placement; pinned, "
        "both stay within about ±1 %. It also leaves the other CPU to whatever else runs.",
        "- **Noise control.** Each round measures one metric at a time across all scenarios, "
        "in an order rotated every pass, so the plain figure a ratio divides by was taken "
        "seconds before or after; every ratio uses the plain route of its own round. Tables "
        "give the median and the min-max of those per-round ratios and the ratio of the best "
        "rounds (least disturbed); plots show the median and the interquartile range. Nothing "
        "is pinned to a CPU: there are only 2.",
        "- **Only one program per built-in and hook** is ever loaded, whatever the number of "
        "routes: loading and freeing thousands of programs at once deadlocked this kernel's "
        "BPF JIT allocator machine-wide.",
        "- **Harness** (`benchmarks/`): `topology.py` the node, `scenarios.py` what sits on "
        "the path, `traffic.py` the measurements, `datapath.py` the rounds, `results.py` the "
        "ratios, `control_plane.py` (runs the route area's `route_bench.py`), `agent_bench.py` "
        "and `cluster_bench.py` the agent, `report.py` this page. `python -m benchmarks.report "
        "RESULT.json PAGE.md` re-renders a page from a saved result. A smoke test "
        "(`tests/benchmarks/`) runs the whole harness in about a minute (`--tiny`) without "
        "asserting any timing; a run exits non-zero only when a scenario cannot run at all.",
        "",
    ]



def main(argv: list[str] | None = None) -> int:
    """`python -m benchmarks.report RESULT.json PAGE.md`: re-render a page from a saved run."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m benchmarks.report", description=main.__doc__)
    p.add_argument("result", type=Path)
    p.add_argument("page", type=Path)
    args = p.parse_args(argv)
    write(json.loads(args.result.read_text()), args.page)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
