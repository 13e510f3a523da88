"""lwt-operator command line.

Exit codes: 0 stopped cleanly, 1 the operator failed at run time, 2 bad usage or settings.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import signal
import sys
import threading
from pathlib import Path

from lwt_kube import CredentialsError

from lwt_operator.config import OperatorConfig, Timings
from lwt_operator.errors import ConfigError, SettingsError
from lwt_operator.settings import AgentSettings

EXIT_FAILURE = 1
EXIT_USAGE = 2
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
              "error": logging.ERROR}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lwt-operator")  # pyproject.toml's, the one source of the version
    except PackageNotFoundError:
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    default_namespace = os.environ.get("POD_NAMESPACE") or "lwt-system"
    parser = argparse.ArgumentParser(
        prog="lwt-operator",
        description=(
            "Kubernetes operator of lwt-operator: validates LwtRoutePolicy objects, keeps the "
            "lwt-agent DaemonSet as its settings describe, holds a finalizer on each policy until "
            "every node has detached it, and aggregates the nodes' reports into conditions."
        ),
    )
    parser.add_argument("--kubeconfig", type=Path, default=None, metavar="FILE",
                        help="kubeconfig file (default: $KUBECONFIG, else the in-cluster "
                             "service account, else ~/.kube/config)")
    parser.add_argument("--agent-config", type=Path, default=None, metavar="FILE",
                        help="agent DaemonSet settings (YAML; the chart mounts "
                             "/etc/lwt-operator/agent.yaml); default: built-in defaults")
    parser.add_argument("--namespace", default=default_namespace,
                        help="namespace of the agent DaemonSet (default: $POD_NAMESPACE, else "
                             "%(default)s)")
    parser.add_argument("--agent-daemonset", default="lwt-agent", metavar="NAME",
                        help="name of the agent DaemonSet (default: %(default)s)")
    parser.add_argument("--owner-deployment", default=None, metavar="NAME",
                        help="the operator's Deployment in --namespace: the agent DaemonSet "
                             "gets an ownerReference to it, so deleting the operator deletes "
                             "the agents (the chart sets it); default: no owner")
    parser.add_argument("--admin-namespace", default=None, metavar="NAMESPACE",
                        help="namespace whose policies may target node pod subnets "
                             "(default: the --namespace value)")
    parser.add_argument("--finalizer-timeout", type=float, default=300.0, metavar="SECONDS",
                        help="after this long, a deleting policy's Ready condition names the "
                             "nodes still holding its finalizer (default: %(default)g)")
    peering = parser.add_mutually_exclusive_group()
    peering.add_argument("--peering", metavar="NAME",
                         help="kopf ClusterKopfPeering object shared by replicas: one replica "
                              "works, the others stand by (needs kopf's peering CRD)")
    peering.add_argument("--standalone", action="store_true",
                         help="run without peering (a single replica; the default)")
    parser.add_argument("--priority", type=int, default=None,
                        help="peering priority of this replica; the highest works. Default: a "
                             "random one with --peering (kopf pauses every replica when two "
                             "share the top priority), else 0")
    parser.add_argument("--health-port", type=int, default=None, metavar="PORT",
                        help="serve /healthz on this port")
    parser.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                        help="serve Prometheus metrics (/metrics) on this port (0: any free "
                             "port; default: none)")
    parser.add_argument("--metrics-address", default="127.0.0.1", metavar="ADDR",
                        help="address of the metrics endpoint (default 127.0.0.1: only from "
                             "inside the pod, e.g. kubectl port-forward)")
    parser.add_argument("--resync", type=float, default=30.0, metavar="SECONDS",
                        help="re-check every policy and the DaemonSet this often "
                             "(default: %(default)g)")
    parser.add_argument("--log-level", choices=sorted(LOG_LEVELS), default="info",
                        help="log verbosity on stderr (default: %(default)s; kopf's "
                             "per-event handler lines only at debug)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    return parser


def peering_priority(explicit: int | None, peering: str | None) -> int:
    if explicit is not None:
        return explicit
    return random.randint(1, 1_000_000) if peering else 0


def config_from_args(args: argparse.Namespace) -> OperatorConfig:
    agent = AgentSettings.from_file(args.agent_config) if args.agent_config else AgentSettings()
    if args.finalizer_timeout <= 0:
        raise ConfigError("--finalizer-timeout must be positive")
    if args.resync <= 0:
        raise ConfigError("--resync must be positive")
    return OperatorConfig(
        agent=agent,
        kubeconfig=args.kubeconfig,
        namespace=args.namespace,
        admin_namespace=args.admin_namespace or args.namespace,
        daemonset_name=args.agent_daemonset,
        owner_deployment=args.owner_deployment,
        finalizer_timeout=args.finalizer_timeout,
        peering=args.peering,
        standalone=args.peering is None,
        priority=peering_priority(args.priority, args.peering),
        health_port=args.health_port,
        metrics_port=args.metrics_port,
        metrics_address=args.metrics_address,
        timings=Timings(resync=args.resync),
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=LOG_LEVELS[args.log_level],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    if args.log_level != "debug":
        # kopf logs "Handler 'status' succeeded" for every event of every policy at INFO.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    try:
        config = config_from_args(args)
    except (SettingsError, ConfigError) as exc:
        print(f"lwt-operator: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return run(config)


def run(config: OperatorConfig) -> int:
    """Run the operator in a worker thread; SIGTERM/SIGINT in the main thread stop it.

    kopf installs its own signal handlers only in the main thread; running it elsewhere keeps
    the decision to stop here, so that a stop is never mistaken for a failure to recover from.
    """
    from lwt_operator.runner import run_operator  # kopf is imported only to run

    stop = threading.Event()
    failure: list[BaseException] = []

    def work() -> None:
        try:
            asyncio.run(run_operator(config, stop_flag=stop))
        except BaseException as exc:
            failure.append(exc)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    worker = threading.Thread(target=work, name="lwt-operator")
    worker.start()
    while worker.is_alive():
        worker.join(0.5)
    if failure:
        if isinstance(failure[0], ConfigError | CredentialsError):
            print(f"lwt-operator: {failure[0]}", file=sys.stderr)
            return EXIT_USAGE
        logging.getLogger(__name__).error("lwt-operator failed", exc_info=failure[0])
        return EXIT_FAILURE
    return 0


if __name__ == "__main__":
    sys.exit(main())
