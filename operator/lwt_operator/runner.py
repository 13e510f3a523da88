"""Running the operator: kopf for policies, a thread keeping the agent DaemonSet."""
from __future__ import annotations

import asyncio
import datetime
import logging
import threading
from typing import Any

import kopf

from lwt_operator.config import OperatorConfig
from lwt_operator.daemonset import build_daemonset
from lwt_operator.handlers import build_registry, operator_settings
from lwt_operator.keeper import DaemonSetKeeper
from lwt_operator.kube import Kube, load_configuration

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
    )
    keeper_stop = threading.Event()
    keeper_thread = threading.Thread(target=keeper.run, args=(keeper_stop,),
                                     name="daemonset-keeper", daemon=True)
    keeper_thread.start()
    options: dict[str, Any] = {}
    if config.health_port:
        options["liveness_endpoint"] = f"http://0.0.0.0:{config.health_port}/healthz"
    try:
        await kopf.operator(
            registry=build_registry(config, configuration),
            settings=operator_settings(config),
            clusterwide=True,
            standalone=config.standalone,
            peering_name=config.peering,
            priority=config.priority,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
            **options,
        )
    finally:
        keeper_stop.set()
        keeper_thread.join(config.timings.resync + 5)
        kube.close()
