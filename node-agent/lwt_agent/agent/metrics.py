"""Prometheus metrics and the /metrics /healthz /readyz endpoints of the agent.

Datapath counters are read from the built-ins' maps at scrape time (no copy kept in the
agent): per policy, pod and hook packets, bytes and drops (`counters`, `port-filter`,
`drop-all` count per destination; an address that is no pod of the policy, a subnet target,
is reported with empty pod labels), the packet-length histogram of `counters`, and the
program-wide counters of `sampler`, `encap` and `counters`, one metric per meaning.
Agent metrics: reconcile duration, reconciles, route re-applies by the guard, errors by
kind, samples read from ring buffers.

Naming follows Prometheus' conventions: base units in the name (`_bytes`, `_seconds`),
counters end in `_total`, packets and bytes are separate metrics. Labels never reuse the
target labels Prometheus adds (`namespace`, `pod`, `node`, `instance`, `job`, ...): a policy
is `policy_namespace`/`policy`, a pod `pod_namespace`/`pod_name`, so nothing is renamed to
`exported_*` on ingestion.
"""
from __future__ import annotations

import contextlib
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lwt_policy.catalogue import HIST_BUCKETS
from lwt_policy.program_config import (
    PER_DESTINATION_MAP,
    read_destination_counters,
    read_program_counters,
)
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from .metrics_auth import Decision
from .steps import Attached

log = logging.getLogger(__name__)

POLICY_LABELS = ("policy_namespace", "policy", "hook")
LABELS = (*POLICY_LABELS, "pod_namespace", "pod_name")

# One metric per (built-in, program-wide counter) of `read_program_counters`: (name without
# `_total`, help). tests/agent/test_metrics.py checks every counter a built-in has is here.
PROGRAM_COUNTERS: dict[tuple[str, str], tuple[str, str]] = {
    ("counters", "notIP"): ("lwt_counters_non_ip_packets",
                            "Packets the counters built-in could not attribute: not IP."),
    ("counters", "tableFull"): ("lwt_counters_table_full_packets",
                                "Packets not counted per destination: the table was full."),
    ("sampler", "seen"): ("lwt_sampler_seen_packets", "Packets the sampler saw."),
    ("sampler", "sampled"): ("lwt_sampler_sampled_packets",
                             "Packets the sampler copied into its ring buffer."),
    ("sampler", "ringFull"): ("lwt_sampler_ring_full_packets",
                              "Samples lost because the ring buffer was full."),
    ("encap", "packets"): ("lwt_encap_packets", "Packets encapsulated."),
    ("encap", "bytes"): ("lwt_encap_bytes", "Bytes of the packets encapsulated (inner)."),
    ("encap", "unconfigured"): ("lwt_encap_unconfigured_dropped_packets",
                                "Packets dropped because encap had no configuration yet."),
    ("encap", "errors"): ("lwt_encap_failed_packets",
                          "Packets the kernel refused to encapsulate (dropped)."),
}


def histogram_buckets(buckets: Sequence[int]) -> list[tuple[str, float]]:
    """`counters`' log2 length buckets (bucket i: 2^i <= length < 2^(i+1), the last one open)
    as a Prometheus histogram's cumulative `le` buckets; lengths are whole bytes, so the
    bound of bucket i is 2^(i+1) - 1."""
    out: list[tuple[str, float]] = []
    total = 0
    for i, n in enumerate(buckets):
        total += n
        last = i == len(buckets) - 1
        out.append(("+Inf" if last else str(float((1 << (i + 1)) - 1)), float(total)))
    return out


def pod_labels(pod: str) -> list[str]:
    """"ns/name" (how the reconciler names a destination's pod) as [pod_namespace, pod_name];
    ["", ""] for a destination that is no pod."""
    namespace, _, name = pod.partition("/")
    return [namespace, name] if name else ["", ""]


class DatapathCollector(Collector):
    """Reads the maps of the attached built-ins on every scrape."""

    def __init__(self, snapshot: Callable[[], tuple[Sequence[Attached], int]],
                 lock: threading.RLock) -> None:
        self._snapshot = snapshot
        self._lock = lock

    def collect(self) -> Iterator[Metric]:
        per_pod = _PerPod(
            packets=CounterMetricFamily(
                "lwt_route_packets", "Packets seen by a policy's program on the routes of a "
                "pod (counters: all; port-filter: passed).", labels=LABELS),
            octets=CounterMetricFamily(
                "lwt_route_bytes", "Bytes seen by a policy's program on the routes of a pod "
                "(counters: all; port-filter: passed).", labels=LABELS),
            drops=CounterMetricFamily(
                "lwt_route_dropped_packets", "Packets dropped by a policy's program "
                "(port-filter, drop-all under FailClosed) on the routes of a pod.",
                labels=LABELS),
            dropped_bytes=CounterMetricFamily(
                "lwt_route_dropped_bytes", "Bytes dropped by a policy's program on the routes "
                "of a pod.", labels=LABELS),
            lengths=HistogramMetricFamily(
                "lwt_route_packet_length_bytes", "Lengths of the packets the counters "
                f"built-in saw on the routes of a pod ({HIST_BUCKETS} power-of-two buckets; "
                "_sum is their bytes, _count their packets).", labels=LABELS),
        )
        program = {key: CounterMetricFamily(name, text, labels=POLICY_LABELS)
                   for key, (name, text) in PROGRAM_COUNTERS.items()}
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
                self._program(item, per_pod, program)
        yield from (per_pod.packets, per_pod.octets, per_pod.drops, per_pod.dropped_bytes,
                    per_pod.lengths, *program.values(), programs, reapplies)

    @staticmethod
    def _program(item: Attached, per_pod: _PerPod,
                 program: dict[tuple[str, str], CounterMetricFamily]) -> None:
        builtin = item.program.builtin
        if builtin is None or item.program.fd < 0:
            return
        base = [item.policy.namespace, item.policy.name, item.hook]
        try:
            if builtin in PER_DESTINATION_MAP:
                sums: dict[str, list[int]] = {}
                for address, counts in read_destination_counters(
                        builtin, item.program.maps).items():
                    total = sums.setdefault(item.destinations.get(address, ""),
                                            [0] * (4 + HIST_BUCKETS))
                    total[0] += counts.packets
                    total[1] += counts.bytes
                    total[2] += counts.dropped_packets
                    total[3] += counts.dropped_bytes
                    for i, n in enumerate(counts.histogram):
                        total[4 + i] += n
                for pod, values in sorted(sums.items()):
                    per_pod.add(builtin, [*base, *pod_labels(pod)], values)
            for name, value in read_program_counters(builtin, item.program.maps).items():
                family = program.get((builtin, name))
                if family is None:
                    log.debug("no metric for counter %s of %s", name, builtin)
                    continue
                family.add_metric(base, value)
        except OSError as exc:  # a program dropped meanwhile: skip it for this scrape
            log.debug("reading counters of %s: %s", item.program.label, exc)


class _PerPod:
    """The per-pod families of one scrape."""

    def __init__(self, packets: CounterMetricFamily, octets: CounterMetricFamily,
                 drops: CounterMetricFamily, dropped_bytes: CounterMetricFamily,
                 lengths: HistogramMetricFamily) -> None:
        self.packets, self.octets = packets, octets
        self.drops, self.dropped_bytes = drops, dropped_bytes
        self.lengths = lengths

    def add(self, builtin: str, labels: list[str], values: list[int]) -> None:
        packets, octets, dropped, dropped_bytes = values[:4]
        if builtin != "drop-all":
            self.packets.add_metric(labels, packets)
            self.octets.add_metric(labels, octets)
        if builtin != "counters":
            self.drops.add_metric(labels, dropped)
            self.dropped_bytes.add_metric(labels, dropped_bytes)
        else:
            self.lengths.add_metric(labels, histogram_buckets(values[4:]), sum_value=octets)


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
            list(LABELS), registry=self.registry)
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


Authorize = Callable[[str | None], Decision]  # Authorization header -> verdict


class MetricsServer:
    """/metrics, /healthz and /readyz on host:port (port 0 picks a free port). With `tls`,
    HTTPS only; with `authorize`, /metrics answers only scrapes it allows (401/403 otherwise:
    metrics_auth.py); the probes stay open (they tell nothing but up/ready)."""

    def __init__(self, metrics: AgentMetrics, health: Health, host: str, port: int,
                 tls: ssl.SSLContext | None = None, authorize: Authorize | None = None
                 ) -> None:
        handler = _handler(metrics, health, authorize)
        self._server = ThreadingHTTPServer((host, port), handler)
        if tls is not None:
            # The handshake runs on the first read, in the request's own thread: a client
            # that never completes it cannot stall the accept loop.
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True,
                                                  do_handshake_on_connect=False)
        self.scheme = "https" if tls is not None else "http"
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


def _handler(metrics: AgentMetrics, health: Health, authorize: Authorize | None
             ) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # seconds a client may take per read (TLS handshake included)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                if authorize is not None:
                    decision = authorize(self.headers.get("Authorization"))
                    if decision.status != 200:
                        self._send(decision.status, (decision.message + "\n").encode())
                        return
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
