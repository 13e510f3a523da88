"""Prometheus metrics and the /metrics /healthz /readyz endpoints of the agent.

Datapath counters are read from the built-ins' maps at scrape time (no copy kept in the
agent): per policy, pod and hook packets, bytes and drops (`counters`, `port-filter`,
`drop-all` count per destination; an address that is no pod of the policy — a subnet
target — is reported with pod=""), and the program-wide counters of `sampler` and `encap`.
Agent metrics: reconcile duration, reconciles, route re-applies by the guard, errors by
kind, samples read from ring buffers.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lwt_policy.program_config import (
    PER_DESTINATION_MAP,
    read_destination_counters,
    read_program_counters,
)
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from .steps import Attached

log = logging.getLogger(__name__)

LABELS = ("namespace", "policy", "hook", "pod")


class DatapathCollector(Collector):
    """Reads the maps of the attached built-ins on every scrape."""

    def __init__(self, snapshot: Callable[[], tuple[Sequence[Attached], int]],
                 lock: threading.RLock) -> None:
        self._snapshot = snapshot
        self._lock = lock

    def collect(self) -> Iterator[Metric]:
        packets = CounterMetricFamily(
            "lwt_route_packets", "Packets seen by a policy's program on the routes of a pod "
            "(counters: all; port-filter: passed).", labels=LABELS)
        octets = CounterMetricFamily(
            "lwt_route_bytes", "Bytes seen by a policy's program on the routes of a pod "
            "(counters: all; port-filter: passed).", labels=LABELS)
        drops = CounterMetricFamily(
            "lwt_route_dropped_packets", "Packets dropped by a policy's program (port-filter, "
            "drop-all under FailClosed) on the routes of a pod.", labels=LABELS)
        dropped_bytes = CounterMetricFamily(
            "lwt_route_dropped_bytes", "Bytes dropped by a policy's program on the routes of a "
            "pod.", labels=LABELS)
        program_counters = CounterMetricFamily(
            "lwt_program_events", "Program-wide counters of a built-in (sampler: seen, "
            "sampled, ringFull; encap: packets, bytes, unconfigured, errors; counters: "
            "notIP, tableFull).",
            labels=("namespace", "policy", "hook", "builtin", "counter"))
        programs = GaugeMetricFamily(
            "lwt_agent_programs", "Programs loaded by the agent (one per policy and hook).")
        reapplies = CounterMetricFamily(
            "lwt_agent_route_reapplies", "Routes whose program the guard had to put back "
            "after the CNI rewrote them.")
        with self._lock:
            attached, reapplied = self._snapshot()
            programs.add_metric([], len({a.program.key for a in attached}))
            reapplies.add_metric([], reapplied)
            for item in attached:
                self._program(item, packets, octets, drops, dropped_bytes, program_counters)
        yield from (packets, octets, drops, dropped_bytes, program_counters, programs,
                    reapplies)

    @staticmethod
    def _program(item: Attached, packets: CounterMetricFamily, octets: CounterMetricFamily,
                 drops: CounterMetricFamily, dropped_bytes: CounterMetricFamily,
                 program_counters: CounterMetricFamily) -> None:
        builtin = item.program.builtin
        if builtin is None or item.program.fd < 0:
            return
        base = [item.policy.namespace, item.policy.name, item.hook]
        try:
            if builtin in PER_DESTINATION_MAP:
                per_pod: dict[str, list[int]] = {}
                for address, counts in read_destination_counters(
                        builtin, item.program.maps).items():
                    total = per_pod.setdefault(item.destinations.get(address, ""), [0, 0, 0, 0])
                    total[0] += counts.packets
                    total[1] += counts.bytes
                    total[2] += counts.dropped_packets
                    total[3] += counts.dropped_bytes
                for pod, (n, b, dn, db) in sorted(per_pod.items()):
                    labels = [*base, pod]
                    if builtin != "drop-all":
                        packets.add_metric(labels, n)
                        octets.add_metric(labels, b)
                    if builtin != "counters":
                        drops.add_metric(labels, dn)
                        dropped_bytes.add_metric(labels, db)
            for name, value in read_program_counters(builtin, item.program.maps).items():
                program_counters.add_metric([*base, builtin, name], value)
        except OSError as exc:  # a program dropped meanwhile: skip it for this scrape
            log.debug("reading counters of %s: %s", item.program.label, exc)


class AgentMetrics:
    """The agent's registry; `serve()` starts the HTTP endpoints."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.reconcile_seconds = Histogram(
            "lwt_agent_reconcile_duration_seconds", "Duration of one reconcile pass.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry)
        self.reconciles = Counter("lwt_agent_reconciles", "Reconcile passes.",
                                  registry=self.registry)
        self.errors = Counter(
            "lwt_agent_errors", "Errors by kind: policy (a policy or its program was refused), "
            "route (a route could not be changed), input (standalone files unreadable), api "
            "(the Kubernetes API failed), object (an API object left out of the cache: "
            "nested too deep or refused; the log names it).", ["kind"],
            registry=self.registry)
        self.samples = Counter(
            "lwt_agent_samples", "Packet samples read from the sampler's ring buffers.",
            ["namespace", "policy", "hook", "pod"], registry=self.registry)
        for kind in ("policy", "route", "input", "api", "object"):
            self.errors.labels(kind)

    def add_datapath(self, collector: DatapathCollector) -> None:
        self.registry.register(collector)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class Health:
    """Liveness: the main loop ticked recently. Readiness: a first reconcile finished (and,
    in cluster mode, the API caches are synced)."""

    def __init__(self, stale_after: float = 120.0) -> None:
        self.stale_after = stale_after
        self._tick = time.monotonic()
        self.ready = False
        self.reason = "starting"

    def beat(self) -> None:
        self._tick = time.monotonic()

    def alive(self) -> bool:
        return time.monotonic() - self._tick < self.stale_after


class MetricsServer:
    """/metrics, /healthz and /readyz on host:port (port 0 picks a free port)."""

    def __init__(self, metrics: AgentMetrics, health: Health, host: str, port: int) -> None:
        handler = _handler(metrics, health)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="lwt-agent-metrics", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._server.shutdown()
        self._server.server_close()


def _handler(metrics: AgentMetrics, health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, metrics.render(), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                ok = health.alive()
                self._send(200 if ok else 503, b"ok\n" if ok else b"main loop stalled\n")
            elif path == "/readyz":
                ok = health.ready
                text = "ready\n" if ok else f"not ready: {health.reason}\n"
                self._send(200 if ok else 503, text.encode())
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

        def _send(self, code: int, body: bytes, content_type: str = "text/plain") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http: " + format, *args)

    return Handler
