"""Control-plane benchmarks.

- Route engine attach/swap/detach of N routes against `ip -batch` adding the same plain
  routes: measured by the ROUTE area's benchmarks/route_bench.py (run as a child process,
  its printed table parsed), so there is one implementation of that benchmark.
- `ip route … encap bpf obj` per route, for a small count only: iproute2 loads the object
  again for every route, i.e. one new BPF program per route. Thousands of programs freed at
  once deadlocked this kernel's BPF JIT allocator
  (docs/kernel-facts.md#one-program-per-policy-hook-never-one-per-route), so the benchmark never
  does more than `settings.obj_per_route_count` (≤ 100) of them; the rate is what matters.

The agent's own figures (memory, policy change to enforcement) are benchmarks/agent_bench.py.
"""
from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lwt_agent.netns import Namespaces, NetnsError

from benchmarks import shell
from benchmarks.errors import BenchError, CommandError
from benchmarks.settings import Settings
from benchmarks.topology import NETNS_PREFIX

REPO = Path(__file__).resolve().parent.parent
ROUTE_BENCH = REPO / "benchmarks" / "route_bench.py"
MAX_OBJ_PER_ROUTE = 100
# A row of route_bench.py's table, e.g. "attach   1.0 ms   95684 routes/s ratio  4.21"
# (older versions printed "ratio vs ip -batch add"); sections start "-- best of 5".
_ROW = re.compile(r"^(?P<name>\S.*?)\s+(?P<ms>[\d.]+) ms\s+(?P<rate>\d+) routes/s\s+"
                  r"ratio(?: vs ip -batch add)?\s+(?P<ratio>[\d.]+)$")
_SECTION = re.compile(r"^-- (?P<name>\w+) of \d+")


def run(settings: Settings, progress: Callable[[str], None]) -> dict[str, Any]:
    return {
        "route_engine": [_route_engine(n, settings, progress) for n in settings.route_counts],
        "obj_per_route": _obj_per_route(settings.obj_per_route_count, progress),
    }


def failures(control: dict[str, Any] | None) -> list[str]:
    """Control-plane parts that could not run at all."""
    if not control or control.get("skipped"):
        return []
    found = [f"route engine, {r['routes']} routes: {r['error']}"
             for r in control.get("route_engine", []) if r.get("error")]
    if control.get("obj_per_route", {}).get("error"):
        found.append(f"ip route encap bpf obj: {control['obj_per_route']['error']}")
    return found


# -- route engine vs ip -batch (ROUTE area's benchmark) ----------------------------------------

def _route_engine(routes: int, settings: Settings, progress: Callable[[str], None]) -> dict:
    rounds = {"tiny": 1, "quick": 3}.get(settings.mode, 5)
    result: dict[str, Any] = {"routes": routes, "rounds": rounds, "source": "route_bench.py"}
    if not ROUTE_BENCH.is_file():
        result["error"] = f"{ROUTE_BENCH} is missing"
        return result
    argv = [sys.executable, str(ROUTE_BENCH), "--routes", str(routes), "--rounds", str(rounds)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        result["error"] = (f"route_bench.py exited {proc.returncode}: "
                           f"{proc.stderr.strip()[-600:]}")
        return result
    tables = parse_route_bench(proc.stdout)
    rows = tables.get("best") or {}
    if "attach" not in rows or "ip -batch add" not in rows:
        result["error"] = f"could not read route_bench.py's table: {proc.stdout.strip()[-600:]}"
        return result
    result["median_rows"] = tables.get("median", {})
    result["rows"] = rows
    progress(f"control plane, {routes} routes: " + ", ".join(
        f"{k} {v['routes_per_s']}/s" for k, v in rows.items()))
    return result


def parse_route_bench(stdout: str) -> dict[str, dict[str, dict[str, float]]]:
    """route_bench.py's printed tables: {"best"|"median": {operation: row}}; a table printed
    without a section header counts as "best" (its older format)."""
    tables: dict[str, dict[str, dict[str, float]]] = {}
    section = "best"
    for line in stdout.splitlines():
        line = line.strip()
        if m := _SECTION.match(line):
            section = m["name"]
        elif m := _ROW.match(line):
            tables.setdefault(section, {})[m["name"].strip()] = {
                "ms": float(m["ms"]), "routes_per_s": int(m["rate"]),
                "ratio_to_ip_batch_add": float(m["ratio"])}
    return tables


# -- ip route ... encap bpf obj, one program per route -----------------------------------------

def _obj_per_route(count: int, progress: Callable[[str], None]) -> dict[str, Any]:
    count = min(count, MAX_OBJ_PER_ROUTE)
    result: dict[str, Any] = {"routes": count, "object": "counters.o", "hook": "out"}
    try:
        from lwt_policy.catalogue import CATALOGUE
    except ImportError as e:
        result["error"] = f"lwt_policy.catalogue is missing: {e}"
        return result
    builtin = CATALOGUE["counters"]
    obj = builtin.object_path()
    if not obj.is_file():
        result["error"] = f"{obj} missing: run `make -C bpf`"
        return result
    nets = Namespaces(f"{NETNS_PREFIX}-{os.getpid()}-{secrets.token_hex(3)}")
    try:
        node = nets.add("cp")
        node.veth("h0", "p0")
        netns = node.name
        dsts = [f"10.100.{i // 250}.{i % 250 + 1}/32" for i in range(count)]
        plain = "".join(f"route add {d} dev h0 scope link\n" for d in dsts)
        started = time.perf_counter()
        shell.run(["ip", "-n", netns, "-batch", "-"], input_text=plain)
        plain_s = time.perf_counter() - started
        shell.run(["ip", "-n", netns, "route", "flush", "dev", "h0"])
        with_obj = "".join(
            f"route add {d} dev h0 scope link encap bpf out obj {obj} "
            f"section {builtin.section}\n" for d in dsts
        )
        started = time.perf_counter()
        shell.run(["ip", "-n", netns, "-batch", "-"], input_text=with_obj)
        obj_s = time.perf_counter() - started
        loaded = shell.run(["ip", "-n", netns, "route", "show", "dev", "h0"]).stdout.count(
            "encap bpf out")
        if loaded != count:
            raise BenchError(f"{loaded} of {count} routes got the program")
        result.update(
            plain_ip_batch_routes_per_s=round(count / plain_s),
            obj_per_route_routes_per_s=round(count / obj_s),
            programs_loaded=count,
        )
        progress(f"control plane: `ip route … encap bpf obj` {count / obj_s:.0f} routes/s "
                 f"({count} programs loaded), plain ip -batch {count / plain_s:.0f} routes/s")
    except (BenchError, CommandError, NetnsError) as e:
        result["error"] = str(e)
    finally:
        nets.close()
    return result
