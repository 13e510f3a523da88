"""Standalone mode: policies, pods, ConfigMaps and Nodes from files, no Kubernetes.

The files are in Kubernetes' own formats (lwt_policy.manifests). They are polled for
changes (mtime, size, inode: editors that replace the file are seen too) and every change
triggers a reconcile; a periodic reconcile also retries what failed (a route the CNI had
not created yet, a program the kernel refused). A file that cannot be read keeps the last
good contents of its group in force: a typo never detaches anything.

Status goes to stdout as YAML documents, as a cluster would hold them: one per policy whose
status changed, in the LwtRoutePolicy status shape (`kubectl get lrp -o yaml`), then this
node's LwtNodeState (`kubectl get lns <node> -o yaml`: its entry for every policy) when an
entry changed.
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml
from lwt_policy import cluster_schema, schema
from lwt_policy.errors import ManifestError
from lwt_policy.manifests import assume_scheduled_here, load_cluster_objects
from lwt_policy.model import LwtRoutePolicy, PolicyRef
from lwt_policy.status import node_state_entry, node_state_status, node_status, policy_status
from lwt_policy.targets import slim_node, slim_pod

from .admission import PolicyBook, PolicyView
from .errors import InputError
from .reconciler import Inputs, Report
from .runtime import Agent

log = logging.getLogger(__name__)

VOLATILE = ("lastUpdateTime", "lastTransitionTime")


@dataclass
class InputFiles:
    policies: Sequence[Path]
    pods: Sequence[Path] = ()
    configmaps: Sequence[Path] = ()
    nodes: Sequence[Path] = ()

    def all(self) -> list[Path]:
        return [*self.policies, *self.pods, *self.configmaps, *self.nodes]


@dataclass
class FileState:
    """The last good contents of each group of files."""

    policies: list[dict[str, Any]] = field(default_factory=list)
    pods: list[dict[str, Any]] = field(default_factory=list)
    configmaps: list[dict[str, Any]] = field(default_factory=list)
    nodes: list[dict[str, Any]] = field(default_factory=list)
    # Namespace -> labels from the Namespaces in --nodes-file (None: none given), for
    # ClusterLwtRoutePolicies' namespaceSelector.
    namespaces: dict[str, dict[str, str]] | None = None


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class FileWatcher:
    """Reads the input files, per group, keeping the last good contents on errors."""

    def __init__(self, files: InputFiles, node_name: str) -> None:
        self.files = files
        self.node_name = node_name
        self.state = FileState()
        self._stamps: dict[Path, tuple[int, int, int] | None] = {}
        self.errors: list[str] = []

    def changed(self) -> bool:
        stamps = {p: _stamp(p) for p in self.files.all()}
        if stamps != self._stamps:
            self._stamps = stamps
            return True
        return False

    def read(self) -> list[str]:
        """Re-read every group; returns the problems (groups with one keep their last
        good contents)."""
        problems: list[str] = []
        groups: list[tuple[str, Sequence[Path], Callable[[Any], list[dict[str, Any]]]]] = [
            ("policies", self.files.policies, lambda o: [loc.obj for loc in o.policies]),
            ("pods", self.files.pods,
             lambda o: [slim_pod(p) for p in assume_scheduled_here(o.pods, self.node_name)]),
            ("configmaps", self.files.configmaps, lambda o: o.configmaps),
            ("nodes", self.files.nodes, lambda o: [slim_node(n) for n in o.nodes]),
            ("namespaces", self.files.nodes, _namespace_labels),
        ]
        for group, paths, pick in groups:
            try:
                objects = load_cluster_objects(paths)
            except ManifestError as exc:
                problems.append(f"{exc} (keeping the previous {group})")
                continue
            setattr(self.state, group, pick(objects))
        self.errors = problems
        return problems


def _namespace_labels(objects: Any) -> dict[str, dict[str, str]] | None:
    if not objects.namespaces:
        return None
    return {(ns.get("metadata") or {}).get("name", ""):
            dict((ns.get("metadata") or {}).get("labels") or {}) for ns in objects.namespaces}


class StatusPrinter:
    """Prints a policy's status document when it changed (timestamps aside)."""

    def __init__(self, node_name: str, out: TextIO) -> None:
        self.node_name = node_name
        self.out = out
        self._last: dict[PolicyRef, str] = {}
        self._last_state: dict[str, Any] = {}

    def documents(self, report: Report) -> dict[PolicyRef, dict[str, Any]]:
        docs: dict[PolicyRef, dict[str, Any]] = {}
        for ref, result in sorted(report.results.items()):
            entry = node_status(result)
            view = report.views[ref]
            metadata: dict[str, Any] = {"name": ref.name, "namespace": ref.namespace,
                                        "generation": view.generation}
            if ref.cluster:
                del metadata["namespace"]
            docs[ref] = {
                "apiVersion": schema.API_VERSION,
                "kind": _kind(ref),
                "metadata": metadata,
                "status": policy_status({self.node_name: entry}, view.generation),
            }
        return docs

    def node_state(self, report: Report) -> dict[str, Any]:
        """This node's LwtNodeState as cluster mode writes it."""
        entries = [node_state_entry(ref, node_status(result))
                   for ref, result in report.results.items()]
        status = node_state_status(entries, self._last_state.get("policies") or ())
        return {"apiVersion": schema.API_VERSION, "kind": schema.NODE_STATE_KIND,
                "metadata": {"name": self.node_name}, "status": status}

    def print(self, report: Report) -> None:
        state = self.node_state(report)
        if _without(state["status"], VOLATILE) != _without(self._last_state, VOLATILE):
            self._last_state = state["status"]
        else:
            state = {}
        docs = self.documents(report)
        for ref, doc in docs.items():
            key = yaml.safe_dump(_without(doc, VOLATILE), sort_keys=True)
            if self._last.get(ref) == key:
                continue
            self._last[ref] = key
            self.out.write(f"--- # status of {_kind(ref)} {ref} on node {self.node_name}\n")
            self.out.write(yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))
        for ref in [r for r in self._last if r not in docs]:
            del self._last[ref]
            self.out.write(f"--- # {_kind(ref)} {ref}: no longer in the policy files, "
                           "detached\n")
        if state:
            self.out.write(f"--- # {schema.NODE_STATE_KIND} {self.node_name}\n")
            self.out.write(yaml.safe_dump(state, sort_keys=False, default_flow_style=False))
        self.out.flush()


def _kind(ref: PolicyRef) -> str:
    return cluster_schema.KIND if ref.cluster else schema.KIND


def no_targets_message(policy: LwtRoutePolicy, pods: Iterable[Mapping[str, Any]],
                       node_name: str) -> str:
    """Why a policy targets no route here: the pods its selector matches, by node."""
    selector = policy.spec.pod_selector
    if selector is None:
        return (f"no route targeted on node {node_name!r}: spec.podSubnets matched no "
                "pod CIDR of this node (give it with --nodes-file)")
    by_node: dict[str, int] = {}
    for pod in pods:
        meta = pod.get("metadata") or {}
        if ((policy.ref.cluster or meta.get("namespace") == policy.namespace)
                and selector.matches(meta.get("labels"))):
            node = (pod.get("spec") or {}).get("nodeName") or "?"
            by_node[node] = by_node.get(node, 0) + 1
    matched = sum(by_node.values())
    where = ", ".join(f"{node} ({n})" for node, n in sorted(by_node.items())[:10])
    text = (f"no route targeted on node {node_name!r}: {matched} pod(s) in namespace "
            f"{policy.namespace!r} match spec.podSelector")
    if matched:
        text += f", on node(s) {where}"
    if any(node != node_name for node in by_node):
        text += (f"; pods on other nodes are not this agent's: give --node-name (this agent "
                 f"is {node_name!r}, by default the host name)")
    elif matched:
        text += " but none is running with a pod IP here"
    else:
        text += " (check the labels, the namespace and --pods-file)"
    return text


def _without(value: Any, keys: Iterable[str]) -> Any:
    keys = tuple(keys)
    if isinstance(value, Mapping):
        return {k: _without(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [_without(v, keys) for v in value]
    return value


class Standalone:
    """The standalone loop around an Agent."""

    def __init__(self, agent: Agent, files: InputFiles, out: TextIO,
                 poll_seconds: float = 0.5, resync_seconds: float = 10.0) -> None:
        self.agent = agent
        self.watcher = FileWatcher(files, agent.config.node_name)
        self.book = PolicyBook(agent.config.admin_namespace)
        self.printer = StatusPrinter(agent.config.node_name, out)
        self.poll_seconds = poll_seconds
        self.resync_seconds = resync_seconds
        self.stop = threading.Event()
        self._refused: dict[PolicyRef, str] = {}
        self._no_targets: dict[PolicyRef, str] = {}

    def first_read(self) -> None:
        """Read the files once; unreadable input at start is an error (nothing applied)."""
        self.watcher.changed()
        problems = self.watcher.read()
        if problems:
            raise InputError("; ".join(problems))

    def reconcile_once(self) -> Report:
        state = self.watcher.state
        views = self.book.standalone(state.policies)
        self._log_refusals(views)
        report = self.agent.run_pass(Inputs(views, state.pods, state.nodes, state.configmaps,
                                            state.namespaces))
        self.agent.health.ready = True
        self.agent.health.reason = ""
        self._log_no_targets(views, report)
        self.printer.print(report)
        return report

    def _log_no_targets(self, views: Iterable[PolicyView], report: Report) -> None:
        """Zero targeted routes must not look like success: say how many pods the selector
        matched and where (the usual cause: pods written for another node name)."""
        for view in views:
            result = report.results.get(view.ref)
            if (view.policy is None or view.deleting or result is None or result.routes
                    or result.last_error is not None):
                self._no_targets.pop(view.ref, None)
                continue
            message = no_targets_message(view.policy, self.watcher.state.pods,
                                         self.agent.config.node_name)
            if self._no_targets.get(view.ref) != message:
                log.warning("%s %s: %s", schema.KIND, view.ref, message)
                self._no_targets[view.ref] = message

    def refused(self) -> list[PolicyRef]:
        """Policies whose current version the last pass refused (bad input)."""
        return sorted(self._refused)

    def _log_refusals(self, views: Iterable[PolicyView]) -> None:
        """Each refusal on stderr too (once per distinct message), not only in the status."""
        refused = {v.ref: v.error.message for v in views if v.error is not None}
        for ref, message in refused.items():
            if self._refused.get(ref) != message:
                log.error("%s %s: %s", schema.KIND, ref, message)
                self.agent.metrics.errors.labels("input").inc()
        self._refused = refused

    def run(self) -> None:
        """Reconcile now, then on every file change and every resync period, until stop."""
        self.reconcile_once()
        since_resync = 0.0
        while not self.stop.wait(self.poll_seconds):
            since_resync += self.poll_seconds
            self.agent.health.beat()
            if self.watcher.changed():
                problems = self.watcher.read()
                for problem in problems:
                    log.error("%s", problem)
                    self.agent.metrics.errors.labels("input").inc()
            elif since_resync < self.resync_seconds:
                continue
            since_resync = 0.0
            try:
                self.reconcile_once()
            except Exception:  # a bug must not take down (and so detach) what runs
                log.exception("reconcile pass failed (a bug: please report it); routes and "
                              "pins stay as they are, retrying next pass")
                self.agent.metrics.errors.labels("internal").inc()
