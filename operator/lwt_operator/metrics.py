"""The operator's Prometheus metrics: reconciles and their errors, status writes, Events
posted, and policies by their Ready condition (conventional names: `_total` counters, no
label Prometheus sets on a target).

Served by `serve()` on 127.0.0.1 by default (`--metrics-address`): the operator's pod admits
no other inbound traffic (the chart's NetworkPolicy), so its metrics are read in the pod
(`kubectl port-forward`, a sidecar) unless an admin opens them on purpose. The agents, whose
host-network port anyone reaching a node can connect to, authenticate every scrape instead
(docs/install.md#metrics-who-may-scrape-them).
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PolicyKey = tuple[str, str, str]  # (namespace or "", name, uid)


class _Policies(Collector):
    def __init__(self, metrics: OperatorMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "lwt_operator_policies", "Policies by their Ready condition (status, reason).",
            labels=("ready", "reason"))
        counts: dict[tuple[str, str], int] = {}
        for ready in self._metrics.snapshot().values():
            counts[ready] = counts.get(ready, 0) + 1
        for (status, reason), n in sorted(counts.items()):
            family.add_metric([status, reason], n)
        yield family


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.reconciles = Counter("lwt_operator_reconciles", "Policy reconciles (events, "
                                  "timers, deletions).", registry=self.registry)
        self.reconcile_errors = Counter("lwt_operator_reconcile_errors", "Reconciles that "
                                        "raised (kopf retries them).", registry=self.registry)
        self.status_writes = Counter("lwt_operator_status_writes", "Policy status patches "
                                     "the operator made.", registry=self.registry)
        self.events = Counter("lwt_operator_events", "Events posted on policies, by type and "
                              "reason.", ["type", "reason"], registry=self.registry)
        self._lock = threading.Lock()
        self._ready: dict[PolicyKey, tuple[str, str]] = {}
        self.registry.register(_Policies(self))

    def policy(self, key: PolicyKey, ready: bool, reason: str) -> None:
        with self._lock:
            self._ready[key] = ("True" if ready else "False", reason)

    def forget(self, key: PolicyKey) -> None:
        with self._lock:
            self._ready.pop(key, None)

    def snapshot(self) -> dict[PolicyKey, tuple[str, str]]:
        with self._lock:
            return dict(self._ready)

    def serve(self, address: str, port: int) -> Any:
        """Start the HTTP endpoint (a daemon thread); returns the server (its port: 0 picks
        one)."""
        server, _thread = start_http_server(port, addr=address, registry=self.registry)
        return server
