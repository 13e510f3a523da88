"""Who may read the agent's /metrics in a cluster: HTTPS, then TokenReview and
SubjectAccessReview against the API server (as controller-runtime's secure metrics and
kube-rbac-proxy do).

The agent runs on the host network, so its port is reachable by anything that reaches the
node. A scrape must present a bearer token (the ServiceMonitor sends Prometheus' own
ServiceAccount token) that the API server authenticates (TokenReview) and whose user may
`get` the non-resource URL /metrics (SubjectAccessReview; the chart's
`<release>-metrics-reader` ClusterRole grants it). No token: 401; a token that is not allowed:
403. Verdicts are cached for `CACHE_SECONDS` per token (by its sha256) so a scrape every 15 s
costs the API server nothing, in a bounded cache. The certificate is self-signed, made in
memory at start (the root filesystem is read-only); Prometheus verifies the token, not the
certificate, as with every self-signed metrics endpoint (`insecureSkipVerify` in the
ServiceMonitor).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
CACHE_SECONDS = 60.0
CACHE_ENTRIES = 1024
MAX_TOKEN_BYTES = 16384  # a JWT is far smaller; bounds what a hostile client can make us send


@dataclass(frozen=True)
class Decision:
    status: int  # 200, 401 or 403 (503 when the API server cannot say)
    message: str


def decide(token_review: Mapping[str, Any] | None, access_review: Mapping[str, Any] | None
           ) -> Decision:
    """The verdict from the two reviews' `status` (None: that review was not made)."""
    if token_review is None or not token_review.get("authenticated"):
        error = (token_review or {}).get("error") or "the token is not valid"
        return Decision(401, f"unauthorized: {error}")
    user = (token_review.get("user") or {}).get("username", "?")
    if access_review is None or not access_review.get("allowed"):
        return Decision(403, f"forbidden: {user} may not get {METRICS_PATH} (bind it to the "
                        "ClusterRole <release>-metrics-reader)")
    return Decision(200, f"{user} allowed")


Post = Callable[[str, dict[str, Any]], Mapping[str, Any]]


class KubeAuthorizer:
    """`check(authorization header)` -> Decision, asking the API server through `post`
    (path, object) -> created object (lwt_kube.Kube.create)."""

    def __init__(self, post: Post, clock: Callable[[], float] = time.monotonic) -> None:
        self._post = post
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: OrderedDict[bytes, tuple[float, Decision]] = OrderedDict()

    def check(self, authorization: str | None) -> Decision:
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return Decision(401, "unauthorized: send a bearer token (Authorization: Bearer "
                            "...), e.g. a ServiceAccount's, allowed to get /metrics")
        if len(token) > MAX_TOKEN_BYTES:
            return Decision(401, "unauthorized: token too long")
        key = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] > now:
                return cached[1]
        decision = self._review(token)
        if decision.status != 503:
            with self._lock:
                self._cache[key] = (now + CACHE_SECONDS, decision)
                self._cache.move_to_end(key)
                while len(self._cache) > CACHE_ENTRIES:
                    self._cache.popitem(last=False)
        return decision

    def _review(self, token: str) -> Decision:
        try:
            review = self._post("/apis/authentication.k8s.io/v1/tokenreviews", {
                "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "spec": {"token": token}})
            status = review.get("status") or {}
            if not status.get("authenticated"):
                return decide(status, None)
            user = status.get("user") or {}
            access = self._post("/apis/authorization.k8s.io/v1/subjectaccessreviews", {
                "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": {"user": user.get("username"), "groups": user.get("groups") or [],
                         "uid": user.get("uid"), "extra": user.get("extra") or {},
                         "nonResourceAttributes": {"path": METRICS_PATH, "verb": "get"}}})
            return decide(status, access.get("status") or {})
        except Exception as exc:  # the API server is down or refuses us: say so, cache nothing
            log.warning("cannot review a metrics scrape's token: %s", exc)
            return Decision(503, "cannot check the token now: the API server did not answer")


def self_signed_context(hostname: str) -> ssl.SSLContext:
    """A server TLS context with a new self-signed certificate for `hostname` (ECDSA P-256,
    one year), never written to disk: the key goes through an anonymous memory file."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64] or "lwt-agent")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname or "lwt-agent")]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    pem = (cert.public_bytes(serialization.Encoding.PEM)
           + key.private_bytes(serialization.Encoding.PEM,
                               serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    fd = os.memfd_create("lwt-agent-metrics-tls", os.MFD_CLOEXEC)
    try:
        os.write(fd, pem)
        context.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    return context
