"""The ClusterLwtRoutePolicy openAPIV3Schema, built from `lwt_policy.schema`'s own pieces.

A cluster policy is a namespaced policy's spec with other targets: the hooks, failurePolicy,
priority and nodeSelector nodes are taken from `schema.spec_schema()` itself (one source), and
the targets are the platform team's: pods of many namespaces (`namespaceSelector` +
`podSelector`) or the node pod subnets (`podSubnets`), which no namespaced policy may target
(docs/policies.md#cluster-policies). Status and printer columns are the namespaced kind's.
"""
from __future__ import annotations

import copy
import functools
from typing import Any

from lwt_policy import schema
from lwt_policy.schema import CelRule

KIND = "ClusterLwtRoutePolicy"
LIST_KIND = "ClusterLwtRoutePolicyList"
PLURAL = "clusterlwtroutepolicies"
SINGULAR = "clusterlwtroutepolicy"
SHORT_NAMES = ("clrp",)
CRD_NAME = f"{PLURAL}.{schema.GROUP}"

CLUSTER_AT_LEAST_ONE_TARGET = CelRule(
    name="cluster-at-least-one-target",
    rule="has(self.podSelector) || has(self.podSubnets)",
    message="set a target: podSelector (pods of the namespaces namespaceSelector selects), "
    "podSubnets (node pod-CIDR routes), or both",
    reason="FieldValueRequired",
)
NAMESPACE_SELECTOR_NEEDS_POD_SELECTOR = CelRule(
    name="namespace-selector-needs-pod-selector",
    rule="!has(self.namespaceSelector) || has(self.podSelector)",
    message="namespaceSelector narrows podSelector: set podSelector too "
    "(an empty podSelector selects every pod of the selected namespaces)",
    reason="FieldValueRequired",
    field_path=".namespaceSelector",
)
CLUSTER_CEL_RULES = (CLUSTER_AT_LEAST_ONE_TARGET, NAMESPACE_SELECTOR_NEEDS_POD_SELECTOR)

# The namespaced spec's fields a cluster policy takes as they are.
SHARED_SPEC_FIELDS = ("nodeSelector", "failurePolicy", "priority", "hooks")


def cluster_spec_schema() -> dict[str, Any]:
    namespaced = schema.spec_schema()
    shared = {name: copy.deepcopy(namespaced["properties"][name]) for name in SHARED_SPEC_FIELDS}
    shared["priority"]["description"] = (
        "When policies target the same route and hook, the lower number wins; at equal "
        "priority a ClusterLwtRoutePolicy wins over an LwtRoutePolicy, then the name that sorts "
        f"first. The loser reports a Conflict. {schema.MIN_PRIORITY}..{schema.MAX_PRIORITY}.")
    pod_subnets = copy.deepcopy(namespaced["properties"]["podSubnets"])
    pod_subnets["description"] = (
        "Target: node pod-CIDR routes. `local`: the route to this node's own "
        "Node.spec.podCIDRs; `remote`: the routes to other nodes' pod CIDRs (bridge and "
        "host-gw CNIs). A pod's owned /32 split from such a route keeps this policy's hooks "
        "unless a policy wins it by priority.")
    return schema._object(
        "Which routes of which namespaces' pods (or which node pod subnets) get which LWT BPF "
        "programs.",
        {
            "namespaceSelector": schema.label_selector_schema(
                "Namespaces (by Namespace labels) whose pods podSelector chooses from. Absent or "
                "empty: every namespace."),
            "podSelector": schema.label_selector_schema(
                "Target: the per-pod routes of Running, non-hostNetwork pods of the selected "
                "namespaces whose labels match. An empty selector matches every pod."),
            "podSubnets": pod_subnets,
            **shared,
        },
        required=["hooks"],
        rules=CLUSTER_CEL_RULES,
    )


@functools.cache
def cluster_root_schema() -> dict[str, Any]:
    """The whole openAPIV3Schema of ClusterLwtRoutePolicy v1alpha1 (built once per process:
    callers must not modify it)."""
    root = schema.root_schema()
    root["description"] = (
        "ClusterLwtRoutePolicy attaches LWT BPF programs to the routes of pods of many "
        "namespaces, or to the node pod-subnet routes, on selected nodes. Cluster-scoped: "
        "for cluster admins and platform teams.")
    root["properties"]["kind"]["description"] = f"Kind of this object ({KIND})."
    root["properties"]["spec"] = cluster_spec_schema()
    return root
