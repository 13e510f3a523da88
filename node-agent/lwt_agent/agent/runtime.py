"""The running agent: route engine, guard, program store, reconciler, metrics, samples.

Standalone mode and cluster mode both drive an `Agent`: they turn their inputs into
`Inputs` and call `run_pass()`; everything below that is the same code path.
"""
from __future__ import annotations

import logging
import os
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lwt_policy.program_config import EncapRules, IPNetwork
from lwt_policy.sampler import Sample

from lwt_agent.route import RouteEngine, RouteError
from lwt_agent.route.guard import RouteGuard
from lwt_agent.route.model import RT_TABLE_MAIN

from .errors import StartupError
from .metrics import (
    AgentMetrics,
    Authorize,
    DatapathCollector,
    Health,
    MetricsServer,
    pod_labels,
)
from .node_addresses import local_addresses
from .pin_root import prepare_pin_root
from .reconciler import Attached, Inputs, Reconciler, Report
from .samples import SampleReader
from .sources import ProgramSources
from .store import ProgramStore

log = logging.getLogger(__name__)

DEFAULT_BPFFS = "/sys/fs/bpf"
PIN_SUBDIR = "lwt-operator"


def default_pin_root() -> Path:
    """$LWT_BPFFS (the DaemonSet sets it from the chart's bpffsPath)/lwt-operator."""
    return Path(os.environ.get("LWT_BPFFS") or DEFAULT_BPFFS) / PIN_SUBDIR


@dataclass(frozen=True)
class AgentConfig:
    node_name: str
    admin_namespace: str
    pin_root: Path
    netns: str | None = None
    table: int = RT_TABLE_MAIN
    metrics_host: str = "0.0.0.0"
    metrics_port: int | None = None  # None: no HTTP endpoints
    # (TLS context, token check) of --metrics-auth kubernetes; None: plain HTTP, open
    metrics_secure: tuple[ssl.SSLContext, Authorize] | None = None
    guard_resync_seconds: float = 30.0
    # Where to mount a bpffs when pin_root is not on one (the default pin root's bpffs);
    # None (an explicit --pin-dir): refuse instead.
    bpffs_automount: Path | None = None
    # encap's tunnel endpoints the admin allows (--encap-allowed-remotes); None: no allowlist
    encap_allowed_remotes: tuple[IPNetwork, ...] | None = None


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.lock = threading.RLock()  # reconcile vs. metrics scrapes and shutdown
        self.metrics = AgentMetrics()
        self.health = Health()
        self.last_report: Report | None = None
        self._reconciled = 0
        prepare_pin_root(config.pin_root, config.bpffs_automount)
        try:
            self.engine = RouteEngine(config.netns, config.table)
            self.guard = RouteGuard(config.netns, config.table, config.guard_resync_seconds)
        except RouteError as exc:
            raise StartupError(str(exc)) from exc
        except OSError as exc:
            raise StartupError(f"cannot open netlink in netns {config.netns or '(this one)'}: "
                               f"{exc}") from exc
        self.store = ProgramStore(config.pin_root, self._encap_rules)
        self.reconciler = Reconciler(config.node_name, config.admin_namespace, self.engine,
                                     self.store, ProgramSources(), self.guard)
        self.samples = SampleReader(self._on_sample)
        self.metrics.add_datapath(DatapathCollector(self._datapath, self.lock))
        self.server: MetricsServer | None = None
        if config.metrics_port is not None:
            try:
                tls, authorize = config.metrics_secure or (None, None)
                self.server = MetricsServer(self.metrics, self.health, config.metrics_host,
                                            config.metrics_port, tls, authorize)
            except OSError as exc:
                self.guard.stop()
                self.engine.close()
                raise StartupError(f"cannot serve metrics on {config.metrics_host}:"
                                   f"{config.metrics_port}: {exc.strerror}; pick another "
                                   "--metrics-port") from exc

    def start(self) -> Agent:
        self.guard.start()
        self.samples.start()
        if self.server is not None:
            self.server.start()
            log.info("metrics on %s://%s:%d/metrics", self.server.scheme,
                     self.config.metrics_host, self.server.port)
        return self

    def _encap_rules(self) -> EncapRules:
        return EncapRules(local_addresses(self.config.netns), self.config.encap_allowed_remotes)

    # --- the one code path ---------------------------------------------------------------

    def run_pass(self, inputs: Inputs) -> Report:
        with self.lock:
            report = self.reconciler.reconcile(inputs)
            self.samples.update(report.attached)
            self.last_report = report
            self._reconciled += 1
        self.metrics.reconciles.inc()
        self.metrics.reconcile_seconds.observe(report.duration)
        if report.errors:
            self.metrics.errors.labels("policy").inc(report.errors)
        if report.apply is not None and report.apply.failures:
            self.metrics.errors.labels("route").inc(len(report.apply.failures))
        self.health.beat()
        return report

    @property
    def reconciled(self) -> int:
        """Reconcile passes this process ran."""
        return self._reconciled

    def _datapath(self) -> tuple[Sequence[Attached], int]:
        attached = self.last_report.attached if self.last_report else []
        return attached, self.guard.reapplies

    def _on_sample(self, item: Attached, sample: Sample) -> None:
        pod = item.destinations.get(sample.destination, "")
        self.metrics.samples.labels(item.policy.namespace, item.policy.name, item.hook,
                                    *pod_labels(pod)).inc()

    # --- shutdown ------------------------------------------------------------------------

    def shutdown(self, detach: bool) -> None:
        """Stop; with ``detach`` remove every program of ours from the routes and unpin it,
        without it leave routes and pins for the next agent to adopt."""
        self.samples.stop()
        if detach and self.reconciled == 0:
            # Never reconciled (bad input at start, API never reached): this process
            # attached nothing, and what an earlier agent left must stay.
            log.info("nothing reconciled: leaving routes and pins as they are")
            detach = False
        with self.lock:
            if detach:
                try:
                    result = self.reconciler.detach_all()
                    log.info("detached: %s", {k: n for k, n in result.counts.items() if n})
                    if result.failures:
                        log.error("could not detach %d route(s): %s", len(result.failures),
                                  next(iter(result.failures.values())))
                except RouteError as exc:
                    log.error("detaching failed: %s", exc)
            self.guard.stop()
            if detach:
                self.store.unpin_all()
            else:
                self.store.close()
            self.last_report = None
            self.engine.close()
        if self.server is not None:
            self.server.stop()

