"""`lwt-agent run`: the node agent, standalone (policy files) or in a cluster.

Standalone: `--policy-file F... [--pods-file P...] [--configmaps-file C...]
[--nodes-file N...]` applies LwtRoutePolicies from files on a host without Kubernetes,
watches the files and prints per-policy status. Cluster: without --policy-file it watches
the API (`--kubeconfig`, $KUBECONFIG, the in-cluster service account, or ~/.kube/config;
the node name from --node-name or $NODE_NAME). Both run the same reconciler (lwt_agent.agent).
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lwt_policy.model import admin_namespace_from_env

if TYPE_CHECKING:  # program_config imports jsonschema: not at CLI start-up
    from lwt_policy.program_config import IPNetwork

NAME = "run"
HELP = (
    "Run the node agent: load each policy's programs once, attach them to the routes of the "
    "targeted pods, keep them attached (route guard), export /metrics /healthz /readyz and "
    "report status. Standalone with --policy-file (no Kubernetes), else against the API. "
    "Standalone, SIGTERM/SIGINT detach everything it attached unless --keep-on-exit; in a "
    "cluster the programs stay for the next agent. Exit 0 on a clean "
    "stop, 1 when the agent cannot run (kernel, API), 2 bad usage or unreadable input."
)
DEFAULT_METRICS_PORT = 9469


def register(parser: argparse.ArgumentParser) -> None:
    files = parser.add_argument_group("standalone mode (no Kubernetes)")
    files.add_argument("--policy-file", action="extend", nargs="+", type=Path, default=[],
                       metavar="F", help="LwtRoutePolicy YAML/JSON (multi-document or List)")
    files.add_argument("--pods-file", action="extend", nargs="+", type=Path, default=[],
                       metavar="P", help="Pods as `kubectl get pods -o yaml` prints them; pods "
                       "without spec.nodeName are taken as scheduled on this node")
    files.add_argument("--configmaps-file", action="extend", nargs="+", type=Path, default=[],
                       metavar="C", help="ConfigMaps holding BPF objects in binaryData")
    files.add_argument("--nodes-file", action="extend", nargs="+", type=Path, default=[],
                       metavar="N", help="Nodes (labels for nodeSelector, spec.podCIDRs)")
    files.add_argument("--poll-seconds", type=float, default=0.5, metavar="S",
                       help="how often the files are checked for changes (default 0.5)")
    files.add_argument("--once", action="store_true",
                       help="reconcile once, print the status and exit, leaving the programs "
                       "attached (a one-shot apply)")
    cluster = parser.add_argument_group("cluster mode")
    cluster.add_argument("--kubeconfig", type=Path, default=None, metavar="F",
                         help="kubeconfig file (default $KUBECONFIG, else in-cluster, "
                              "else ~/.kube/config)")
    parser.add_argument("--node-name", default=None, metavar="N",
                        help="this node's name (default $NODE_NAME, else the host name)")
    parser.add_argument("--netns", default=None, metavar="NAME",
                        help="network namespace of the routes (default: this one)")
    parser.add_argument("--table", type=int, default=254, help="routing table (default main)")
    parser.add_argument("--encap-allowed-remotes", default=None, metavar="CIDRS",
                        help="comma-separated prefixes the encap built-in may send to "
                        "(default $LWT_ENCAP_ALLOWED_REMOTES, which the DaemonSet sets from "
                        "the chart's agent.encapAllowedRemotes); unset in cluster mode: none, "
                        "unset in standalone mode: any")
    parser.add_argument("--pin-dir", type=Path, default=None, metavar="DIR",
                        help="pin root on bpffs (default $LWT_BPFFS/lwt-operator, "
                        "LWT_BPFFS defaulting to /sys/fs/bpf)")
    parser.add_argument("--metrics-port", type=int, default=None, metavar="P",
                        help="serve /metrics /healthz /readyz on this port (0: any free "
                        f"port; default $LWT_METRICS_PORT, in cluster mode {DEFAULT_METRICS_PORT}"
                        ", standalone none)")
    parser.add_argument("--metrics-address", default="0.0.0.0", metavar="ADDR",
                        help="address of the metrics endpoints (default 0.0.0.0)")
    parser.add_argument("--metrics-auth", choices=("kubernetes", "none"), default=None,
                        help="kubernetes: /metrics over HTTPS (self-signed), only for bearer "
                        "tokens the API server authenticates (TokenReview) and allows to get "
                        "/metrics (SubjectAccessReview); cluster mode only. none: plain HTTP, "
                        "open (bind it to 127.0.0.1). Default $LWT_METRICS_AUTH (the DaemonSet "
                        "sets it from the chart's agent.metricsAuth), else none")
    parser.add_argument("--admin-namespace", default=None, metavar="NS",
                        help="namespace whose policies may use podSubnets (default "
                        "$LWT_ADMIN_NAMESPACE, $POD_NAMESPACE, lwt-system)")
    parser.add_argument("--keep-on-exit", action="store_true",
                        help="on SIGTERM/SIGINT leave programs attached and pinned (an "
                        "upgraded agent adopts them without a flap)")
    parser.add_argument("--detach-on-exit", action="store_true",
                        help="cluster mode: detach everything on SIGTERM/SIGINT (by default a "
                        "cluster agent leaves its programs for the next agent to adopt)")
    parser.add_argument("--resync-seconds", type=float, default=10.0, metavar="S",
                        help="full reconcile at least this often (default 10)")


def _metrics_port(args: argparse.Namespace, cluster: bool) -> int | None:
    if args.metrics_port is not None:
        return int(args.metrics_port)
    env = os.environ.get("LWT_METRICS_PORT")
    if env:
        return int(env)
    return DEFAULT_METRICS_PORT if cluster else None


def _metrics_security(args: argparse.Namespace, node_name: str) -> Any:
    """TLS context and token check of --metrics-auth kubernetes (agent/metrics_auth.py)."""
    from lwt_kube import Kube, load_configuration

    from lwt_agent.agent.metrics_auth import KubeAuthorizer, self_signed_context

    kube = Kube(load_configuration(args.kubeconfig), timeout=5)
    return self_signed_context(node_name), KubeAuthorizer(kube.create).check


def _encap_allowed_remotes(args: argparse.Namespace, cluster: bool
                           ) -> tuple[IPNetwork, ...] | None:
    """The admin's allowlist of encap endpoints. In a cluster the operator always sets it
    (empty: none allowed); a standalone agent's files are the host admin's own."""
    from lwt_policy.program_config import ENCAP_REMOTES_ENV, parse_allowed_remotes

    text = args.encap_allowed_remotes
    if text is None:
        text = os.environ.get(ENCAP_REMOTES_ENV)
    if text is None:
        return () if cluster else None
    return parse_allowed_remotes(text)


def _setup_logging() -> None:
    level = os.environ.get("LWT_LOG_LEVEL")
    if level:
        logging.getLogger().setLevel(level.upper())
    # Samples are the sampler's output: always shown, one JSON object per line.
    samples = logging.getLogger("lwt_agent.samples")
    samples.setLevel(logging.INFO)
    samples.propagate = False
    if not samples.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        samples.addHandler(handler)


def _stop_on_signals(stop: threading.Event) -> None:
    def handle(signum: int, _frame: object) -> None:
        # A normal stop (kubelet, systemd, Ctrl-C): not a warning.
        logging.getLogger(__name__).info("%s received: stopping",
                                         signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def run(args: argparse.Namespace) -> int:
    from lwt_agent.agent.errors import InputError, StartupError
    from lwt_agent.agent.runtime import Agent, AgentConfig, default_pin_root

    _setup_logging()
    cluster = not args.policy_file
    if cluster and (args.pods_file or args.configmaps_file or args.nodes_file or args.once):
        print("lwt-agent run: --pods-file/--configmaps-file/--nodes-file/--once need "
              "--policy-file (standalone mode)", file=sys.stderr)
        return 2
    node_name = args.node_name or os.environ.get("NODE_NAME") or (
        None if cluster else socket.gethostname())
    if not node_name:
        print("lwt-agent run: cluster mode needs the node name: --node-name N or $NODE_NAME "
              "(the DaemonSet sets it from spec.nodeName)", file=sys.stderr)
        return 2
    try:
        encap_remotes = _encap_allowed_remotes(args, cluster)
    except ValueError as exc:
        print(f"lwt-agent run: {exc}", file=sys.stderr)
        return 2
    auth = args.metrics_auth or os.environ.get("LWT_METRICS_AUTH") or "none"
    if auth not in ("kubernetes", "none") or (auth == "kubernetes" and not cluster):
        print(f"lwt-agent run: --metrics-auth {auth}: use kubernetes (cluster mode only) or "
              "none", file=sys.stderr)
        return 2
    config = AgentConfig(
        metrics_secure=_metrics_security(args, node_name) if auth == "kubernetes" else None,
        encap_allowed_remotes=encap_remotes,
        node_name=node_name,
        admin_namespace=args.admin_namespace or admin_namespace_from_env(),
        pin_root=args.pin_dir or default_pin_root(),
        bpffs_automount=None if args.pin_dir else default_pin_root().parent,
        netns=args.netns,
        table=args.table,
        metrics_host=args.metrics_address,
        metrics_port=_metrics_port(args, cluster),
    )
    try:
        agent = Agent(config)
    except StartupError as exc:
        print(f"lwt-agent run: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    _stop_on_signals(stop)
    # In a cluster the agent is a DaemonSet pod: an upgrade or restart must detach nothing
    # (the next agent adopts); deleting a policy is how programs are detached there.
    keep = args.keep_on_exit or args.once or (cluster and not args.detach_on_exit)
    try:
        agent.start()
        if agent.server is not None:
            print(f"# metrics: {agent.server.scheme}://{config.metrics_host}:"
                  f"{agent.server.port}/metrics",
                  file=sys.stderr, flush=True)
        if cluster:
            from lwt_agent.agent.cluster import ClusterAgent

            return ClusterAgent(agent, args.kubeconfig, stop,
                                resync_seconds=args.resync_seconds).run()
        return _standalone(agent, args, stop)
    except InputError as exc:
        print(f"lwt-agent run: {exc}", file=sys.stderr)
        return 2
    except StartupError as exc:
        print(f"lwt-agent run: {exc}", file=sys.stderr)
        return 1
    finally:
        agent.shutdown(detach=not keep)


def _standalone(agent: object, args: argparse.Namespace, stop: threading.Event) -> int:
    from lwt_agent.agent.standalone import InputFiles, Standalone

    files = InputFiles(args.policy_file, args.pods_file, args.configmaps_file,
                       args.nodes_file)
    loop = Standalone(agent, files, sys.stdout,  # type: ignore[arg-type]
                      poll_seconds=args.poll_seconds, resync_seconds=args.resync_seconds)
    loop.stop = stop
    loop.first_read()
    if args.once:
        report = loop.reconcile_once()
        if loop.refused():
            return 2  # bad input (named on stderr and in the status)
        return 1 if report.errors else 0
    loop.run()
    return 0
