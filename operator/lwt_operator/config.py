"""The operator's configuration: command-line options and timings, as one immutable value."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lwt_operator.settings import AgentSettings


@dataclass(frozen=True)
class Timings:
    """How fast the operator reacts; production defaults, tests shorten them."""

    resync: float = 30.0  # periodic re-check of every policy and of the DaemonSet (seconds)
    finalizer_poll: float = 5.0  # retry interval of the deletion handler while nodes hold it
    # Node-state changes are folded into a policy's status at most this often (debounce: one
    # status write per policy per period, however many nodes reported in it).
    aggregate: float = 1.0
    watch_server_timeout: float = 300.0  # watch requests end after this and reconnect
    watch_client_timeout: float = 330.0
    connect_timeout: float = 10.0
    request_timeout: float = 60.0
    error_backoffs: tuple[float, ...] = (1, 1, 2, 3, 5, 8, 13)
    worker_idle: float = 5.0  # kopf's per-object worker exits after this long without events

    @classmethod
    def fast(cls) -> Timings:
        """For tests against the emulator: everything within a second."""
        return cls(resync=0.5, finalizer_poll=0.2, aggregate=0.2, watch_server_timeout=5,
                   watch_client_timeout=10, connect_timeout=1, request_timeout=5,
                   error_backoffs=(0.1, 0.2, 0.3, 0.5), worker_idle=1.0)


@dataclass(frozen=True)
class OperatorConfig:
    agent: AgentSettings = field(default_factory=AgentSettings)
    kubeconfig: Path | None = None
    namespace: str = "lwt-system"  # where the agent DaemonSet lives
    admin_namespace: str = "lwt-system"  # policies here may use podSubnets
    daemonset_name: str = "lwt-agent"
    # The Deployment (in `namespace`) the agent DaemonSet gets an ownerReference to, so that
    # deleting the operator (helm uninstall) garbage-collects the agents; None: no owner.
    owner_deployment: str | None = None
    finalizer_timeout: float = 300.0
    peering: str | None = None  # kopf ClusterKopfPeering name; None with standalone
    standalone: bool = True
    priority: int = 0
    health_port: int | None = None
    metrics_port: int | None = None  # None: no metrics endpoint (lwt_operator.metrics)
    metrics_address: str = "127.0.0.1"
    timings: Timings = field(default_factory=Timings)
