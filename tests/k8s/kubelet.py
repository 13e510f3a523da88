"""The harness's stand-in for the scheduler and the kubelets of nodes made of network
namespaces, against a real control plane (tests/k8s/cluster.py).

There is no container runtime here, so "running a container" means starting the program the
container's `command` names (`lwt-agent`, `lwt-operator`: the console scripts of this
checkout's venv) as a local process, with what the kubelet would give it:

- args and env from the Pod spec (env `valueFrom.fieldRef` resolved from the Pod);
- the ServiceAccount's identity: a TokenRequest token bound to this Pod (so it carries the
  node claim), handed over as a kubeconfig in $KUBECONFIG instead of the projected volume;
- ConfigMap volumes written to a directory, their mount path rewritten in args and env;
- the node's filesystem: each node maps host paths (its bpffs) to directories of its own;
- the container's ports: every containerPort gets a free port on 127.0.0.1 (all "nodes"
  share this machine's loopback), rewritten where args (`--x=PORT`) or env carry it;
- hostNetwork pods: `--netns <the node's host netns>` and `--metrics-address 127.0.0.1`
  appended (the programs' switches for "my node's network" and "listen on loopback").

Readiness comes from the container's own readinessProbe (HTTP GET on the mapped port), so
`Ready` means what it means on a real node. A deleted Pod's process gets SIGTERM, then the
Pod is removed (what the kubelet's graceful deletion does); a process that exits is started
again (restartPolicy Always) with restartCount + 1. Pods the DaemonSet and ReplicaSet
controllers create carry no spec.nodeName: the harness binds them (the scheduler's job),
DaemonSet pods to the node their nodeAffinity names, others to the first node.

Workload pods are objects only (`run_pod`): created with spec.nodeName and given their
network namespace's addresses as status.podIP(s); no process runs for them.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes.client import ApiException

from tests.k8s.cluster import DIE_WITH_PARENT, ControlPlane, free_port

VENV_BIN = Path(sys.executable).parent
PROGRAMS = {"lwt-agent": VENV_BIN / "lwt-agent", "lwt-operator": VENV_BIN / "lwt-operator"}


def now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class SimNode:
    name: str
    netns: str | None  # the node's host network namespace (None: no datapath)
    internal_ip: str
    host_paths: dict[str, Path]  # host path prefix -> this node's directory


@dataclass
class Container:
    """A pod's (single) container, running as a local process."""

    pod_key: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    probe_url: str | None
    ports: dict[str, int] = field(default_factory=dict)  # port name -> host port
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: str = ""

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([*DIE_WITH_PARENT, *self.argv], env=self.env,
                                         stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        self.started_at = now()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self) -> bool:
        if not self.running():
            return False
        if self.probe_url is None:
            return True
        try:
            # As the kubelet: an HTTPS probe does not verify the certificate.
            context = ssl._create_unverified_context()
            with urllib.request.urlopen(self.probe_url, timeout=1,
                                        context=context) as response:
                return 200 <= response.status < 400
        except OSError:
            return False

    def stop(self, grace: float = 20) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@dataclass
class Kubelet:
    cp: ControlPlane
    workdir: Path
    interval: float = 0.3
    nodes: dict[str, SimNode] = field(default_factory=dict)
    containers: dict[str, Container] = field(default_factory=dict)  # by pod uid
    workload_ips: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.api_client = kubernetes.config.new_client_from_config(
            config_file=str(self.cp.kubeconfig))
        self.core = kubernetes.client.CoreV1Api(self.api_client)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="kubelet", daemon=True)
        self._reported: dict[str, str] = {}
        self._terminating: set[str] = set()
        self._workers: list[threading.Thread] = []

    # --- nodes and workload pods ----------------------------------------------------------

    def add_node(self, name: str, *, netns: str | None, internal_ip: str,
                 pod_cidrs: list[str], host_paths: dict[str, Path] | None = None) -> SimNode:
        """Register a Node (podCIDRs, labels), report it Ready and lift the not-ready taint
        the TaintNodesByCondition admission put on it (the node lifecycle controller would)."""
        node = SimNode(name, netns, internal_ip, dict(host_paths or {}))
        for directory in node.host_paths.values():
            directory.mkdir(parents=True, exist_ok=True)
        self.core.create_node({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/os": "linux",
                                                  "kubernetes.io/hostname": name}},
            "spec": {"podCIDR": pod_cidrs[0], "podCIDRs": pod_cidrs}})
        self.core.patch_node_status(name, {"status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "lwt test harness", "lastHeartbeatTime": now(),
                            "lastTransitionTime": now()}],
            "addresses": [{"type": "InternalIP", "address": internal_ip},
                          {"type": "Hostname", "address": name}]}})
        self.core.patch_node(name, {"spec": {"taints": None}})
        self.nodes[name] = node
        return node

    def run_pod(self, namespace: str, name: str, node: str, labels: dict[str, str],
                ips: list[str]) -> None:
        """A workload pod on `node` whose IPs are its network namespace's addresses."""
        self.workload_ips[namespace, name] = list(ips)
        self.core.create_namespaced_pod(namespace, {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "app", "image": "app:test"}]}})
        self._report_workload(namespace, name, ips)

    def _report_workload(self, namespace: str, name: str, ips: list[str]) -> None:
        self.core.patch_namespaced_pod_status(name, namespace, {"status": {
            "phase": "Running", "podIP": ips[0], "podIPs": [{"ip": ip} for ip in ips],
            "hostIP": self.nodes[self._pod_node(namespace, name)].internal_ip,
            "conditions": [{"type": t, "status": "True", "lastTransitionTime": now()}
                           for t in ("PodScheduled", "Initialized", "ContainersReady",
                                     "Ready")]}})

    def _pod_node(self, namespace: str, name: str) -> str:
        return str(self.core.read_namespaced_pod(namespace=namespace, name=name).spec.node_name)

    # --- life cycle -----------------------------------------------------------------------

    def start(self) -> Kubelet:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)
        for worker in self._workers:
            worker.join(40)
        for container in list(self.containers.values()):
            container.stop()
        self.containers.clear()
        self.api_client.close()

    def container(self, namespace: str, name: str) -> Container:
        with self._lock:
            for container in self.containers.values():
                if container.pod_key == f"{namespace}/{name}":
                    return container
        raise KeyError(f"no running container for pod {namespace}/{name}")

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
            except (ApiException, OSError) as exc:  # API restarting: try again next round
                self.errors.append(repr(exc)[:300])
            except Exception as exc:  # a harness bug: keep it for the test's failure message
                self.errors.append(f"kubelet sync failed: {exc!r}")
            self._stop.wait(self.interval)

    def sync(self) -> None:
        with self._lock:
            pods = self.api_client.sanitize_for_serialization(
                self.core.list_pod_for_all_namespaces(_request_timeout=10))["items"]
            seen: set[str] = set()
            for pod in pods:
                uid = pod["metadata"]["uid"]
                seen.add(uid)
                node = pod["spec"].get("nodeName")
                if not node:
                    self._bind(pod)
                    continue
                if node not in self.nodes:
                    continue
                if pod["metadata"].get("deletionTimestamp"):
                    self._terminate(pod)
                    continue
                key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
                if key in self.workload_ips:
                    continue
                self._run(pod)
            for uid in set(self.containers) - seen:  # removed without us: stop what ran
                self.containers.pop(uid).stop()
                self._reported.pop(uid, None)

    # --- the scheduler's part -------------------------------------------------------------

    def _bind(self, pod: dict[str, Any]) -> None:
        target = _affinity_node(pod) or next(iter(self.nodes), None)
        if target is None or target not in self.nodes:
            return
        meta = pod["metadata"]
        body = {"apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": meta["name"], "uid": meta["uid"]},
                "target": {"apiVersion": "v1", "kind": "Node", "name": target}}
        with contextlib.suppress(ApiException):  # already bound, or gone meanwhile
            self.core.create_namespaced_binding(meta["namespace"], body,
                                                _preload_content=False)

    # --- the kubelet's part ---------------------------------------------------------------

    def _run(self, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        container = self.containers.get(uid)
        if container is None:
            container = self._create_container(pod)
            if container is None:
                return
            self.containers[uid] = container
            container.start()
        elif not container.running():
            container.restarts += 1
            container.start()
        self._report(pod, container)

    def _create_container(self, pod: dict[str, Any]) -> Container | None:
        meta, spec = pod["metadata"], pod["spec"]
        node = self.nodes[spec["nodeName"]]
        (spec_container,) = spec["containers"]
        command = spec_container.get("command") or []
        if not command or command[0] not in PROGRAMS:
            self.errors.append(f"pod {meta['namespace']}/{meta['name']}: no program for "
                               f"command {command!r}; the harness runs only {sorted(PROGRAMS)}")
            return None
        poddir = self.workdir / "pods" / f"{meta['namespace']}_{meta['name']}_{meta['uid'][:8]}"
        poddir.mkdir(parents=True, exist_ok=True)

        rewrites: dict[str, str] = {}  # path prefixes of the node's and the pod's files
        for prefix, directory in node.host_paths.items():
            rewrites[prefix] = str(directory)
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        for mount in spec_container.get("volumeMounts") or []:
            volume = volumes.get(mount["name"]) or {}
            if "configMap" in volume:
                target = poddir / "volumes" / mount["name"]
                self._write_configmap(meta["namespace"], volume["configMap"]["name"], target)
                rewrites[mount["mountPath"]] = str(target)
            elif "hostPath" in volume:
                path = _rewrite(volume["hostPath"]["path"], rewrites)
                Path(path).mkdir(parents=True, exist_ok=True)  # DirectoryOrCreate

        ports: dict[str, str] = {}  # containerPort -> host port on 127.0.0.1
        named: dict[str, int] = {}
        for port in spec_container.get("ports") or []:
            mapped = free_port()
            ports[str(port["containerPort"])] = str(mapped)
            if port.get("name"):
                named[port["name"]] = mapped

        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH")}
        for item in spec_container.get("env") or []:
            source = item.get("valueFrom")
            if source is None:  # an empty value is left out of the serialized object
                value = str(item.get("value") or "")
            elif "fieldRef" in source:
                value = _field(pod, source["fieldRef"]["fieldPath"])
            else:
                self.errors.append(f"pod {meta['namespace']}/{meta['name']}: env "
                                   f"{item['name']}: only value and fieldRef are played here")
                return None
            env[item["name"]] = ports.get(value, _rewrite(value, rewrites))
        if spec.get("automountServiceAccountToken", True) is not False:
            token = self.cp.token(meta["namespace"], spec["serviceAccountName"],
                                  pod=(meta["name"], meta["uid"]))
            kubeconfig = self.cp.kubeconfig_for(f"pod-{meta['name']}", token)
            env["KUBECONFIG"] = str(kubeconfig)

        raw_args = [*command[1:], *(spec_container.get("args") or [])]
        if not spec.get("hostNetwork"):
            # A pod of its own network namespace has every port to itself, also those it
            # listens on without declaring them (e.g. loopback-only metrics); here all pods
            # share this machine's loopback, so each `--*-port=N` gets a port of its own.
            for arg in raw_args:
                head, sep, tail = arg.rpartition("=")
                if sep and head.startswith("--") and head.endswith("-port") and tail.isdigit():
                    ports.setdefault(tail, str(free_port()))
        args = [_rewrite(_map_port(arg, ports), rewrites) for arg in raw_args]
        if spec.get("hostNetwork") and node.netns:
            args += ["--netns", node.netns, "--metrics-address", "127.0.0.1"]
        probe = (spec_container.get("readinessProbe") or {}).get("httpGet")
        probe_url = None
        if probe:
            port = probe["port"]
            host_port = named.get(port) if isinstance(port, str) else ports.get(str(port))
            scheme = str(probe.get("scheme") or "HTTP").lower()
            probe_url = f"{scheme}://127.0.0.1:{host_port}{probe.get('path', '/')}"
        return Container(f"{meta['namespace']}/{meta['name']}",
                         [str(PROGRAMS[command[0]]), *args], env,
                         poddir / f"{spec_container['name']}.log", probe_url, named)

    def _write_configmap(self, namespace: str, name: str, target: Path) -> None:
        configmap = self.core.read_namespaced_config_map(name, namespace)
        target.mkdir(parents=True, exist_ok=True)
        for key, value in (configmap.data or {}).items():
            (target / key).write_text(value)

    def _report(self, pod: dict[str, Any], container: Container) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        node = self.nodes[spec["nodeName"]]
        ready = container.ready()
        flag = "True" if ready else "False"
        (spec_container,) = spec["containers"]
        status = {
            "phase": "Running", "hostIP": node.internal_ip,
            "hostIPs": [{"ip": node.internal_ip}],
            "startTime": container.started_at,
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "True"},
                {"type": "ContainersReady", "status": flag},
                {"type": "Ready", "status": flag}],
            "containerStatuses": [{
                "name": spec_container["name"], "image": spec_container["image"],
                "imageID": "", "ready": ready, "started": container.running(),
                "restartCount": container.restarts,
                "state": ({"running": {"startedAt": container.started_at}}
                          if container.running() else
                          {"waiting": {"reason": "CrashLoopBackOff"}})}],
        }
        if spec.get("hostNetwork"):
            status["podIP"] = node.internal_ip
            status["podIPs"] = [{"ip": node.internal_ip}]
        digest = json.dumps(status, sort_keys=True)
        if self._reported.get(meta["uid"]) == digest:
            return
        stamped = json.loads(digest)
        for cond in stamped["conditions"]:
            cond["lastTransitionTime"] = now()
        self.core.patch_namespaced_pod_status(meta["name"], meta["namespace"],
                                              {"status": stamped})
        self._reported[meta["uid"]] = digest

    def _terminate(self, pod: dict[str, Any]) -> None:
        """Graceful deletion, in a thread of its own (a slow SIGTERM must not hold up the
        other pods): stop the process, then remove the pod for good."""
        meta = pod["metadata"]
        if meta["uid"] in self._terminating:
            return
        self._terminating.add(meta["uid"])
        container = self.containers.pop(meta["uid"], None)
        self._reported.pop(meta["uid"], None)
        grace = float(pod["spec"].get("terminationGracePeriodSeconds") or 30)

        def finish() -> None:
            if container is not None:
                container.stop(grace)
            try:
                # In the body: a DELETE with a body ignores its query parameters.
                self.core.delete_namespaced_pod(meta["name"], meta["namespace"], body={
                    "gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}})
            except ApiException as exc:
                if exc.status != 404:
                    self.errors.append(f"deleting pod {meta['name']}: {exc.status} {exc.reason}")
            finally:
                self._terminating.discard(meta["uid"])
        thread = threading.Thread(target=finish, name=f"terminate-{meta['name']}", daemon=True)
        self._workers.append(thread)
        thread.start()


def _affinity_node(pod: dict[str, Any]) -> str | None:
    """The node a DaemonSet pod's required nodeAffinity (matchFields metadata.name) names."""
    terms = ((((pod["spec"].get("affinity") or {}).get("nodeAffinity") or {})
              .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
             .get("nodeSelectorTerms") or [])
    for term in terms:
        for field_ in term.get("matchFields") or []:
            if field_.get("key") == "metadata.name" and field_.get("values"):
                return str(field_["values"][0])
    return None


def _field(pod: dict[str, Any], path: str) -> str:
    value: Any = pod
    for part in path.split("."):
        value = (value or {}).get(part)
    return "" if value is None else str(value)


def _rewrite(value: str, prefixes: dict[str, str]) -> str:
    """Replace a leading host/mount path (longest first) by its directory here; in an
    `--option=PATH` argument, the part after '='."""
    head, sep, tail = value.partition("=") if value.startswith("--") else ("", "", value)
    for prefix in sorted(prefixes, key=len, reverse=True):
        base = prefix.rstrip("/")
        if tail == base or tail.startswith(base + "/"):
            return f"{head}{sep}{prefixes[prefix]}{tail[len(base):]}"
    return value


def _map_port(arg: str, ports: dict[str, str]) -> str:
    """`--health-port=8080` -> `--health-port=<host port>` for a declared containerPort."""
    head, sep, tail = arg.rpartition("=")
    if sep and tail in ports and head.startswith("--"):
        return f"{head}={ports[tail]}"
    return arg
