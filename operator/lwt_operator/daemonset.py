"""The agent DaemonSet: built from the settings, compared with what the cluster has.

Pure functions; `keeper.py` does the API calls. The DaemonSet gives the agent what it needs and
nothing more: the host network (it changes the node's routes), its own directory of the host's
bpffs (pins outlive agent restarts, so an upgrade detaches nothing; other tools' pins stay
hidden), the capabilities from the settings with every other capability dropped, and no
privileged mode. The node name
comes from the downward API (NODE_NAME); the agent serves /healthz and /readyz on its metrics
port, which the probes use.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from lwt_policy.custom_programs import ENV as CUSTOM_PROGRAMS_ENV
from lwt_policy.program_config import ENCAP_REMOTES_ENV

from lwt_operator.settings import AgentSettings

DEFAULT_NAME = "lwt-agent"
SETTINGS_HASH_ANNOTATION = "lwt.dev/agent-settings-hash"
# When the operator that last wrote the DaemonSet started. During a rolling update of the
# operator, an old and a new replica (with other settings) run for a moment; the newer one wins
# instead of the two rewriting the DaemonSet back and forth (each rewrite rolls every agent).
STARTED_ANNOTATION = "lwt.dev/operator-started"
MANAGED_BY = {"app.kubernetes.io/managed-by": "lwt-operator"}
SELECTOR_LABELS = {"app.kubernetes.io/name": "lwt-agent", "app.kubernetes.io/component": "agent"}


# The agent pins under <bpffs>/<PIN_SUBDIR> (lwt_agent.agent.runtime.default_pin_root);
# a test holds the two equal.
PIN_SUBDIR = "lwt-operator"


def agent_pin_dir(bpffs: str) -> str:
    """The host directory the agent may see: its own directory of the host's bpffs."""
    return f"{bpffs.rstrip('/')}/{PIN_SUBDIR}"


def selector_labels(settings: AgentSettings) -> dict[str, str]:
    """The pod selector: the chart's podLabels when given (its metrics Service selects by them),
    else our own. A DaemonSet's selector is immutable: a change means delete and re-create."""
    return dict(settings.podLabels) or dict(SELECTOR_LABELS)


def settings_hash(settings: AgentSettings, namespace: str, admin_namespace: str) -> str:
    data = json.dumps([repr(settings), namespace, admin_namespace], sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def build_daemonset(
    settings: AgentSettings, *, name: str, namespace: str, admin_namespace: str,
    started_at: str = "",
) -> dict[str, Any]:
    selector = selector_labels(settings)
    labels = {**SELECTOR_LABELS, **MANAGED_BY}
    pod_labels = {**SELECTOR_LABELS, **selector}
    bpffs = settings.bpffsPath
    pin_dir = agent_pin_dir(bpffs)
    port = settings.metricsPort

    # With metricsAuth kubernetes the agent serves HTTPS only (a self-signed certificate: the
    # kubelet does not verify probe certificates); the probes need no token.
    scheme = "HTTPS" if settings.metricsAuth == "kubernetes" else "HTTP"

    def probe(path: str, period: int, failures: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": "metrics", "scheme": scheme},
                "periodSeconds": period, "timeoutSeconds": 5, "failureThreshold": failures}

    container: dict[str, Any] = {
        "name": "agent",
        "image": settings.image,
        "imagePullPolicy": settings.imagePullPolicy,
        "command": ["lwt-agent"],
        "args": ["run"],
        "env": [
            {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE",
             "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "LWT_ADMIN_NAMESPACE", "value": admin_namespace},
            {"name": "LWT_METRICS_PORT", "value": str(port)},
            {"name": "LWT_METRICS_AUTH", "value": settings.metricsAuth},
            {"name": "LWT_BPFFS", "value": bpffs},
            {"name": "LWT_LOG_LEVEL", "value": settings.logLevel},
            # Who may run programs from ConfigMaps: empty = nobody (lwt_policy.custom_programs).
            {"name": CUSTOM_PROGRAMS_ENV, "value": settings.custom_programs.env_value()},
            # Where the encap built-in may send: empty = nowhere (program_config.EncapRules).
            {"name": ENCAP_REMOTES_ENV, "value": ",".join(settings.encapAllowedRemotes)},
        ],
        "ports": [{"name": "metrics", "containerPort": port, "protocol": "TCP"}],
        "livenessProbe": probe("/healthz", 20, 3),
        "readinessProbe": probe("/readyz", 10, 3),
        "startupProbe": probe("/healthz", 5, 24),
        "resources": dict(settings.resources),
        "securityContext": {
            "privileged": False,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsUser": 0,  # bpf(2) and netlink need root with the capabilities below
            "capabilities": {"add": list(settings.capabilities), "drop": ["ALL"]},
        },
        "volumeMounts": [
            # Only the agent's own directory of the host bpffs: other tools' pins (a CNI's
            # maps, systemd's programs) stay out of reach of whatever runs in this container.
            # HostToContainer: Bidirectional is refused for unprivileged containers, and pins
            # the agent makes land in the host's bpffs anyway (it is the same filesystem).
            {"name": "bpffs", "mountPath": pin_dir, "mountPropagation": "HostToContainer"},
        ],
    }
    pod_spec: dict[str, Any] = {
        "hostNetwork": True,
        "dnsPolicy": "ClusterFirstWithHostNet",
        "serviceAccountName": settings.serviceAccountName,
        "automountServiceAccountToken": True,
        "terminationGracePeriodSeconds": 30,
        # The runtime's default seccomp profile admits bpf(2) for CAP_BPF holders.
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "tolerations": [dict(t) for t in settings.tolerations],
        "nodeSelector": dict(settings.nodeSelector),
        "containers": [container],
        # DirectoryOrCreate: the kubelet creates the directory on the node's bpffs at the
        # first install (bpffs allows mkdir); a missing bpffs still fails, as the agent then
        # refuses a pin root that is not on bpffs.
        "volumes": [{"name": "bpffs",
                     "hostPath": {"path": pin_dir, "type": "DirectoryOrCreate"}}],
    }
    if settings.affinity:
        pod_spec["affinity"] = dict(settings.affinity)
    if settings.priorityClassName:
        pod_spec["priorityClassName"] = settings.priorityClassName
    if settings.imagePullSecrets:
        pod_spec["imagePullSecrets"] = [dict(s) for s in settings.imagePullSecrets]

    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {
                SETTINGS_HASH_ANNOTATION: settings_hash(settings, namespace, admin_namespace),
                **({STARTED_ANNOTATION: started_at} if started_at else {}),
            },
        },
        "spec": {
            "selector": {"matchLabels": selector},
            "updateStrategy": dict(settings.updateStrategy),
            "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
        },
    }


def drift(desired: Any, actual: Any, path: str = "") -> list[str]:
    """Paths where `actual` does not carry what `desired` says.

    Dicts: every desired key must be in actual with a matching value; keys only actual has are
    fine (the API server fills defaults, `kubectl rollout restart` adds an annotation). Lists must
    match element by element and in length (an added container or env var is drift)."""
    if isinstance(desired, Mapping):
        if not isinstance(actual, Mapping):
            return [path or "."]
        found: list[str] = []
        for key, value in desired.items():
            sub = f"{path}.{key}" if path else str(key)
            if key not in actual:
                if value not in ({}, [], "", None):
                    found.append(sub)
                continue
            found += drift(value, actual[key], sub)
        return found
    if isinstance(desired, list):
        if not isinstance(actual, list) or len(actual) != len(desired):
            return [path]
        found = []
        for index, (want, have) in enumerate(zip(desired, actual, strict=True)):
            found += drift(want, have, f"{path}[{index}]")
        return found
    return [] if desired == actual else [path]


def owner_reference(deployment: Mapping[str, Any]) -> dict[str, Any]:
    """The agent DaemonSet's ownerReference to the operator's Deployment.

    The Deployment, not a chart object of its own: the DaemonSet is the running operator's
    product, and `helm uninstall` (or `kubectl delete deployment`) removing the operator must
    remove what it made, through the garbage collector, even though the operator is gone by
    then and cannot. Neither `controller` (the Deployment controller does not manage
    DaemonSets) nor `blockOwnerDeletion` (that needs delete rights on the owner's finalizers
    under OwnerReferencesPermissionEnforcement, and uninstall need not wait for the agents).
    """
    meta = deployment["metadata"]
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": meta["name"],
            "uid": meta["uid"]}


def with_owner(desired: Mapping[str, Any], owner: Mapping[str, Any] | None) -> dict[str, Any]:
    """`desired` with metadata.ownerReferences set to [owner] (unchanged when owner is None)."""
    if owner is None:
        return dict(desired)
    return {**desired, "metadata": {**desired["metadata"], "ownerReferences": [dict(owner)]}}


def daemonset_drift(desired: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
    """What differs in the parts the operator owns: labels, its annotation, the owner (when it
    has one) and the spec."""
    annotations = {k: v for k, v in desired["metadata"]["annotations"].items()
                   if k != STARTED_ANNOTATION}
    metadata: dict[str, Any] = {"labels": desired["metadata"]["labels"],
                                "annotations": annotations}
    if "ownerReferences" in desired["metadata"]:
        metadata["ownerReferences"] = desired["metadata"]["ownerReferences"]
    return drift({"metadata": metadata, "spec": desired["spec"]}, actual)


def superseded(desired: Mapping[str, Any], actual: Mapping[str, Any]) -> bool:
    """True when a newer operator wrote other settings into the DaemonSet: leave it alone."""
    mine = desired["metadata"]["annotations"]
    theirs = (actual.get("metadata") or {}).get("annotations") or {}
    return bool(
        theirs.get(SETTINGS_HASH_ANNOTATION) != mine.get(SETTINGS_HASH_ANNOTATION)
        and theirs.get(STARTED_ANNOTATION, "") > mine.get(STARTED_ANNOTATION, "")
    )


def selector_changed(desired: Mapping[str, Any], actual: Mapping[str, Any]) -> bool:
    return bool(desired["spec"]["selector"] != (actual.get("spec") or {}).get("selector"))


def repair_patch(desired: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch that puts the owned parts back (lists are replaced whole)."""
    metadata = {"labels": desired["metadata"]["labels"],
                "annotations": desired["metadata"]["annotations"]}
    if "ownerReferences" in desired["metadata"]:
        metadata["ownerReferences"] = desired["metadata"]["ownerReferences"]
    return {"metadata": metadata, "spec": desired["spec"]}
