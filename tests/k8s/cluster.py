"""A real Kubernetes control plane on 127.0.0.1 for tests: etcd, kube-apiserver and
kube-controller-manager, upstream binaries from scripts/k8s-binaries.sh.

    with ControlPlane.started(workdir) as cp:
        cp.kubectl("get", "nodes")            # as cluster admin (client certificate)
        token = cp.token("lwt-system", "lwt-agent", pod=("lwt-agent-x", uid))
        cp.kubeconfig_for("agent-x", token)   # a kubeconfig with only that token

Everything lives in `workdir`: certificates and keys made for this run (CA, serving
certificate, admin client certificate, service-account signing key), etcd's data, the logs
(`<component>.log`) and the kubeconfigs. Ports are picked free at start, so parallel runs do
not collide. `stop()` ends every process (also after a failed start); the caller removes the
directory.

What is real: authentication (client certificates, service-account tokens signed with this
run's key), RBAC, the default admission chain with PodSecurity and ValidatingAdmissionPolicy
(plus OwnerReferencesPermissionEnforcement and NodeRestriction), CRD schema and CEL
validation, server-side apply, garbage collection, and the controllers listed in
CONTROLLERS. What is not here: a scheduler and kubelets (tests/k8s/kubelet.py plays them).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.k8s.binaries import bin_dir

# Enough to run what our chart makes: the agent DaemonSet's pods, the operator Deployment's
# ReplicaSet and pods, garbage collection of everything ownerReferences tie together, namespace
# deletion, every namespace's `default` ServiceAccount (pods need it), and the chart's tenant
# roles folded into the built-in admin/edit/view ClusterRoles (aggregation).
CONTROLLERS = ("daemonset-controller", "deployment-controller", "replicaset-controller",
               "clusterrole-aggregation-controller",
               "garbage-collector-controller", "namespace-controller",
               "serviceaccount-controller", "serviceaccount-token-controller")
ADMISSION = ("NamespaceLifecycle,LimitRanger,ServiceAccount,PodSecurity,Priority,"
             "DefaultTolerationSeconds,ResourceQuota,OwnerReferencesPermissionEnforcement,"
             "NodeRestriction,TaintNodesByCondition,ValidatingAdmissionPolicy,"
             "MutatingAdmissionWebhook,ValidatingAdmissionWebhook")
SERVICE_CIDR = "10.96.0.0/16"  # only allocated from, never routed: no Service traffic here
ISSUER = "https://kubernetes.default.svc.cluster.local"
# A test run killed outright (SIGKILL, a CI timeout) cannot stop what it started: the kernel
# does (PR_SET_PDEATHSIG through util-linux's setpriv, kept across its exec). The signal
# comes when the *thread* that started the process ends: start from a long-lived thread.
DIE_WITH_PARENT = ("setpriv", "--pdeathsig", "KILL", "--")


class ControlPlaneError(RuntimeError):
    """A component did not start; the message carries the tail of its log."""


class CommandFailed(subprocess.CalledProcessError):
    """kubectl or helm failed; unlike CalledProcessError, the message shows what it said."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstdout: {self.stdout[-2000:]}\nstderr: {self.stderr[-3000:]}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(pki: Path) -> None:
    """CA, apiserver serving certificate, admin client certificate, SA signing key (EC P-256:
    fast to make, accepted by every component)."""
    pki.mkdir(parents=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=lwt-test-ca", cwd=pki)
    _openssl("req", "-x509", *ec, "-keyout", "apiserver.key", "-out", "apiserver.crt",
             "-days", "2", "-subj", "/CN=kube-apiserver", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc",
             "-addext", "basicConstraints=critical,CA:FALSE",
             "-addext", "extendedKeyUsage=serverAuth", cwd=pki)
    _openssl("req", "-x509", *ec, "-keyout", "admin.key", "-out", "admin.crt", "-days", "2",
             "-subj", "/O=system:masters/CN=lwt-test-admin", "-CA", "ca.crt", "-CAkey",
             "ca.key", "-addext", "basicConstraints=critical,CA:FALSE",
             "-addext", "extendedKeyUsage=clientAuth", cwd=pki)
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "sa.key", cwd=pki)
    _openssl("ec", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


@dataclass
class Component:
    name: str
    args: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([*DIE_WITH_PARENT, *self.args], stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class ControlPlane:
    workdir: Path
    bins: Path = field(default_factory=bin_dir)
    etcd_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    components: dict[str, Component] = field(default_factory=dict)
    startup_seconds: float = 0.0
    server_version: str = ""

    # --- paths --------------------------------------------------------------------------

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    def binary(self, name: str) -> str:
        return str(self.bins / name)

    # --- life cycle ---------------------------------------------------------------------

    @classmethod
    @contextlib.contextmanager
    def started(cls, workdir: Path) -> Iterator[ControlPlane]:
        cp = cls(workdir)
        try:
            cp.start()
            yield cp
        finally:
            cp.stop()

    def start(self) -> None:
        t0 = time.monotonic()
        make_pki(self.pki)
        self._write_kubeconfig(self.kubeconfig, "admin", {
            "client-certificate": str(self.pki / "admin.crt"),
            "client-key": str(self.pki / "admin.key")})
        self.components = {
            "etcd": Component("etcd", self._etcd_args(), self.workdir / "etcd.log"),
            "kube-apiserver": Component("kube-apiserver", self._apiserver_args(),
                                        self.workdir / "kube-apiserver.log"),
            "kube-controller-manager": Component(
                "kube-controller-manager", self._controller_manager_args(),
                self.workdir / "kube-controller-manager.log"),
        }
        self.components["etcd"].start()
        self._wait(lambda: self._http_ok(f"http://127.0.0.1:{self.etcd_port}/health"),
                   "etcd", 30)
        self.start_apiserver()
        self.components["kube-controller-manager"].start()
        # The namespace `default` gets its ServiceAccount from the controller manager: once it
        # is there, the controllers run.
        self._wait(lambda: self.kubectl("get", "serviceaccount", "default", "-n", "default",
                                        check=False).returncode == 0,
                   "kube-controller-manager", 60)
        self.startup_seconds = time.monotonic() - t0
        version = json.loads(self.kubectl("version", "-o", "json").stdout)
        self.server_version = version["serverVersion"]["gitVersion"]

    def start_apiserver(self) -> None:
        """Start (or restart, on the same port and etcd) the API server; wait for /readyz."""
        self.components["kube-apiserver"].start()
        self._wait(lambda: self._http_ok(f"{self.server}/readyz", admin=True),
                   "kube-apiserver", 90)

    def stop_apiserver(self) -> None:
        self.components["kube-apiserver"].stop()

    def stop(self) -> None:
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            if name in self.components:
                self.components[name].stop()

    def _wait(self, probe: Any, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            component = self.components.get(name)
            if component is not None and component.proc is not None and not component.running():
                raise ControlPlaneError(f"{name} exited ({component.proc.returncode}):\n"
                                        f"{component.tail()}")
            if probe():
                return
            time.sleep(0.2)
        tail = self.components[name].tail() if name in self.components else ""
        raise ControlPlaneError(f"{name} not ready after {timeout}s:\n{tail}")

    def _http_ok(self, url: str, admin: bool = False) -> bool:
        context = None
        if admin:
            context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
            context.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    # --- arguments ----------------------------------------------------------------------

    def _etcd_args(self) -> list[str]:
        peer = f"http://127.0.0.1:{self.peer_port}"
        client = f"http://127.0.0.1:{self.etcd_port}"
        return [self.binary("etcd"), "--name", "lwt-test", "--data-dir",
                str(self.workdir / "etcd"), "--listen-client-urls", client,
                "--advertise-client-urls", client, "--listen-peer-urls", peer,
                "--initial-advertise-peer-urls", peer, "--initial-cluster", f"lwt-test={peer}",
                # A throw-away store: durability costs fsyncs the tests do not need.
                "--unsafe-no-fsync", "--log-level", "warn"]

    def _apiserver_args(self) -> list[str]:
        pki = self.pki
        return [
            self.binary("kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            # No kubernetes Service endpoints to keep: nothing reaches the API through it.
            "--endpoint-reconciler-type=none",
            f"--secure-port={self.api_port}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-account-issuer={ISSUER}",
            "--authorization-mode=RBAC",
            f"--enable-admission-plugins={ADMISSION}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            "--profiling=false",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            "--v=1",
        ]

    def _controller_manager_args(self) -> list[str]:
        pki = self.pki
        return [
            self.binary("kube-controller-manager"),
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            f"--controllers={','.join(CONTROLLERS)}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            f"--cert-dir={self.workdir / 'kcm-certs'}",
            # Garbage collection and DaemonSet rollouts within a test's patience.
            "--concurrent-gc-syncs=5", "--v=1",
        ]

    # --- clients ------------------------------------------------------------------------

    def _write_kubeconfig(self, path: Path, user: str, credentials: dict[str, str]) -> None:
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": user,
            "clusters": [{"name": "lwt-test", "cluster": {
                "server": self.server, "certificate-authority": str(self.pki / "ca.crt")}}],
            "users": [{"name": user, "user": credentials}],
            "contexts": [{"name": user, "context": {"cluster": "lwt-test", "user": user}}],
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)

    def kubeconfig_for(self, name: str, token: str) -> Path:
        """A kubeconfig that authenticates with `token` only (no admin credentials)."""
        path = self.workdir / f"{name}.kubeconfig"
        self._write_kubeconfig(path, name, {"token": token})
        return path

    def kubectl(self, *args: str, kubeconfig: Path | None = None, input: str | None = None,
                check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = [self.binary("kubectl"), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=timeout)
        if check and proc.returncode != 0:
            raise CommandFailed(proc.returncode, cmd, proc.stdout, proc.stderr)
        return proc

    def kubectl_json(self, *args: str, **kwargs: Any) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json", **kwargs).stdout)

    def helm(self, *args: str, check: bool = True,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig),
               "HELM_CACHE_HOME": str(self.workdir / "helm" / "cache"),
               "HELM_CONFIG_HOME": str(self.workdir / "helm" / "config"),
               "HELM_DATA_HOME": str(self.workdir / "helm" / "data")}
        cmd = [self.binary("helm"), *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        if check and proc.returncode != 0:
            raise CommandFailed(proc.returncode, cmd, proc.stdout, proc.stderr)
        return proc

    def token(self, namespace: str, service_account: str,
              pod: tuple[str, str] | None = None, seconds: int = 3600) -> str:
        """A TokenRequest token of the ServiceAccount; bound to the Pod (name, uid) when given,
        which makes the server add the pod's node to the token's claims."""
        spec: dict[str, Any] = {"expirationSeconds": seconds}
        if pod is not None:
            spec["boundObjectRef"] = {"apiVersion": "v1", "kind": "Pod", "name": pod[0],
                                      "uid": pod[1]}
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                   "spec": spec}
        out = self.kubectl("create", "--raw",
                           f"/api/v1/namespaces/{namespace}/serviceaccounts/"
                           f"{service_account}/token", "-f", "-", input=json.dumps(request))
        return str(json.loads(out.stdout)["status"]["token"])

    def can_i(self, kubeconfig: Path, verb: str, resource: str,
              *extra: Sequence[str] | str) -> bool:
        proc = self.kubectl("auth", "can-i", verb, resource, *map(str, extra),
                            kubeconfig=kubeconfig, check=False)
        return proc.stdout.strip() == "yes"
