"""Secure metrics on the real API server (issue 15): the agent's /metrics over HTTPS answers
only bearer tokens the server authenticates (TokenReview) and authorizes to get /metrics
(SubjectAccessReview), with the chart's own RBAC: an unauthenticated scrape is refused (401),
a token without the chart's metrics-reader role too (403), and the token of the
ServiceAccount the chart binds for Prometheus (metrics.readers, what the ServiceMonitor
sends) is accepted. The probes stay open; plain HTTP gets no metrics."""
from __future__ import annotations

import ssl
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from lwt_agent.agent.metrics import AgentMetrics, Health, MetricsServer
from lwt_agent.agent.metrics_auth import KubeAuthorizer, self_signed_context
from lwt_kube import Kube, load_configuration

from tests.k8s.cluster import ControlPlane
from tests.k8s.stand import create_namespace

CHART = Path(__file__).resolve().parents[2] / "charts" / "lwt-operator"


@pytest.fixture
def agent_endpoint(control_plane: ControlPlane) -> Iterator[tuple[str, str, ControlPlane]]:
    """The chart's metrics RBAC (rendered by helm, applied), and a metrics server checking
    tokens as the agent's ServiceAccount. Yields (URL, namespace, control plane)."""
    cp = control_plane
    ns = f"mauth-{uuid.uuid4().hex[:6]}"
    create_namespace(cp, ns, None)
    release = f"m{uuid.uuid4().hex[:5]}"
    rendered = cp.helm("template", release, str(CHART), "--namespace", ns, "--kube-version",
                       "1.37.0",
                       "--show-only", "templates/metrics-rbac.yaml",
                       "--set", f"metrics.readers[0].namespace={ns}",
                       "--set", "metrics.readers[0].name=prometheus",
                       "--set", "agent.serviceAccount.name=lwt-agent").stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    assert {d["kind"] for d in docs} == {"ClusterRole", "ClusterRoleBinding"}
    for account in ("lwt-agent", "prometheus", "nosy"):
        cp.kubectl("create", "serviceaccount", account, "-n", ns)
    cp.kubectl("apply", "-f", "-", input=rendered)
    kube = Kube(load_configuration(cp.kubeconfig_for(f"{ns}-agent",
                                                     cp.token(ns, "lwt-agent"))), timeout=5)
    server = MetricsServer(AgentMetrics(), Health(), "127.0.0.1", 0,
                           self_signed_context("node-x"), KubeAuthorizer(kube.create).check)
    server.start()
    try:
        yield f"https://127.0.0.1:{server.port}", ns, cp
    finally:
        server.stop()
        kube.close()
        cp.kubectl("delete", "-f", "-", "--wait=false", input=rendered, check=False)
        cp.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def _get(url: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    context = ssl._create_unverified_context()  # Prometheus: insecureSkipVerify, as charted
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_only_the_readers_token_gets_metrics(agent_endpoint: tuple[str, str, ControlPlane]
                                             ) -> None:
    url, ns, cp = agent_endpoint
    status, body = _get(f"{url}/metrics")
    assert status == 401 and "bearer token" in body
    assert _get(f"{url}/metrics", "not-a-token")[0] == 401
    status, body = _get(f"{url}/metrics", cp.token(ns, "nosy"))
    assert status == 403 and f"system:serviceaccount:{ns}:nosy" in body
    status, body = _get(f"{url}/metrics", cp.token(ns, "prometheus"))
    assert status == 200 and "lwt_agent_reconciles_total" in body
    assert _get(f"{url}/healthz")[0] == 200  # the kubelet's probes need no token
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(url.replace("https", "http") + "/metrics", timeout=5)


def test_the_servicemonitor_sends_a_token_over_https(control_plane: ControlPlane) -> None:
    rendered = control_plane.helm(
        "template", "lwt", str(CHART), "--kube-version", "1.37.0",
        "--show-only", "templates/servicemonitor.yaml",
        "--set", "metrics.serviceMonitor.enabled=true").stdout
    (endpoint,) = yaml.safe_load(rendered)["spec"]["endpoints"]
    assert endpoint["scheme"] == "https" and endpoint["tlsConfig"]["insecureSkipVerify"]
    assert endpoint["bearerTokenFile"] == "/var/run/secrets/kubernetes.io/serviceaccount/token"
