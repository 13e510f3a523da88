"""Running the operator: kopf for policies, a thread keeping the agent DaemonSet."""
from __future__ import annotations

import asyncio
import datetime
import logging
import threading
from typing import Any

import kopf
from lwt_kube import Kube, load_configuration

from lwt_operator.config import OperatorConfig
from lwt_operator.daemonset import build_daemonset
from lwt_operator.handlers import build_registry, operator_settings
from lwt_operator.keeper import DaemonSetKeeper
from lwt_operator.metrics import OperatorMetrics

log = logging.getLogger(__name__)


async def run_operator(
    config: OperatorConfig,
    *,
    stop_flag: asyncio.Event | threading.Event | None = None,
    ready_flag: asyncio.Event | threading.Event | None = None,
) -> None:
    """Run until `stop_flag` is set (or a signal arrives, when in the main thread)."""
    configuration = load_configuration(config.kubeconfig)
    kube = Kube(configuration, timeout=config.timings.request_timeout)
    keeper = DaemonSetKeeper(
        kube,
        build_daemonset(config.agent, name=config.daemonset_name, namespace=config.namespace,
                        admin_namespace=config.admin_namespace,
                        started_at=datetime.datetime.now(tz=datetime.UTC).isoformat()),
        resync=config.timings.resync,
        retry=config.timings.error_backoffs[-1],
        owner_deployment=config.owner_deployment,
    )
    keeper_stop = threading.Event()
    keeper_thread = threading.Thread(target=keeper.run, args=(keeper_stop,),
                                     name="daemonset-keeper", daemon=True)
    keeper_thread.start()
    metrics = OperatorMetrics()
    server = (metrics.serve(config.metrics_address, config.metrics_port)
              if config.metrics_port is not None else None)
    if server is not None:
        log.info("metrics on http://%s:%d/metrics", config.metrics_address,
                 server.server_address[1])
    options: dict[str, Any] = {}
    if config.health_port:
        options["liveness_endpoint"] = f"http://0.0.0.0:{config.health_port}/healthz"
    try:
        await _run_kopf(config, configuration, stop_flag, ready_flag, options, metrics)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        keeper_stop.set()
        keeper_thread.join(config.timings.resync + 5)
        kube.close()


async def _run_kopf(
    config: OperatorConfig,
    configuration: Any,
    stop_flag: asyncio.Event | threading.Event | None,
    ready_flag: asyncio.Event | threading.Event | None,
    options: dict[str, Any],
    metrics: OperatorMetrics | None = None,
) -> None:
    """kopf.operator(), started again when it gives up on an unreachable API.

    kopf rides out short outages (watches reconnect, handlers retry), but when the API stays
    unreachable longer than its request retries while it discovers resources (at start-up, or
    when it rescans), kopf stops with that error. The datapath does not depend on the operator,
    so it starts again after a backoff instead of exiting into a CrashLoopBackOff. Only a set
    `stop_flag` ends it (the CLI sets it on SIGTERM/SIGINT).
    """
    failures = 0
    backoffs = config.timings.error_backoffs
    while True:
        try:
            await kopf.operator(
                registry=build_registry(config, configuration, metrics),
                settings=operator_settings(config),
                clusterwide=True,
                standalone=config.standalone,
                peering_name=config.peering,
                priority=config.priority,
                stop_flag=stop_flag,
                ready_flag=ready_flag,
                **options,
            )
        except Exception:
            if stop_flag is None:
                raise
            if stop_flag.is_set():
                log.warning("stopped; kopf reported an earlier failure", exc_info=True)
                return
            delay = backoffs[min(failures, len(backoffs) - 1)]
            failures += 1
            log.exception("kopf stopped on an error; starting it again in %gs", delay)
            await asyncio.sleep(delay)
        else:
            if stop_flag is None or stop_flag.is_set():
                return
            log.warning("kopf stopped without being asked to; starting it again")
