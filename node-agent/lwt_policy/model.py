"""The LwtRoutePolicy model: typed, validated policies parsed from Kubernetes object dicts.

    policy = parse_policy(obj, admin_namespace="lwt-system")   # or PolicyValidationError
    problems = validate_policy(obj)                             # [] when valid

Validation runs in three stages and stops at the first stage that finds problems (a later stage
would only restate them less clearly):
1. the CRD's own openAPIV3Schema (defaults applied first), `lwt_policy.validation`;
2. the CRD's CEL rules, evaluated offline with the same rule strings;
3. semantic checks the API server cannot do: label-selector syntax, the admin-namespace rule
   for podSubnets, the builtin exists and allows the hook, the config fits that builtin
   (its config schema, then `program_config.encode_config`), FailClosed is enforceable.
Every problem is a `Problem(field path, message, rule)`.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lwt_policy import cluster_schema, schema
from lwt_policy.errors import PolicyValidationError, Problem, join_path
from lwt_policy.limits import depth_problem, spec_size_problem
from lwt_policy.objectmeta import metadata_problems
from lwt_policy.selectors import LabelSelector, selector_problems
from lwt_policy.validation import json_schema_problems, validate_object

DEFAULT_ADMIN_NAMESPACE = "lwt-system"
ADMIN_NAMESPACE_ENV = "LWT_ADMIN_NAMESPACE"
DEFAULT_NAMESPACE = "default"  # what kubectl assumes for an object without a namespace
CLUSTER_SCOPE = "_cluster"  # a cluster policy's directory where a namespace's would be
FAIL_CLOSED_BUILTIN = "drop-all"


def admin_namespace_from_env(environ: Mapping[str, str] | None = None) -> str:
    """$LWT_ADMIN_NAMESPACE, else $POD_NAMESPACE (the release namespace, from the downward
    API), else "lwt-system"."""
    env = os.environ if environ is None else environ
    return env.get(ADMIN_NAMESPACE_ENV) or env.get("POD_NAMESPACE") or DEFAULT_ADMIN_NAMESPACE


@dataclass(frozen=True, order=True)
class PolicyRef:
    """namespace/name of a policy; sorts as priority ties are broken. A
    ClusterLwtRoutePolicy has the namespace "" (no namespace is named so), which sorts first:
    at equal priority a cluster policy wins over a namespaced one."""

    namespace: str
    name: str

    @property
    def cluster(self) -> bool:
        return self.namespace == ""

    @property
    def scope(self) -> str:
        """One path component for the namespace part (pin directories): the namespace, or
        CLUSTER_SCOPE, which no namespace can be named (DNS labels have no '_')."""
        return CLUSTER_SCOPE if self.cluster else self.namespace

    def __str__(self) -> str:
        return self.name if self.cluster else f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class BuiltinSource:
    """A program from the built-in catalogue."""

    name: str


@dataclass(frozen=True)
class ConfigMapSource:
    """A BPF object in `binaryData[key]` of ConfigMap `namespace/name` (the policy's own)."""

    namespace: str
    name: str
    key: str
    section: str
    sha256: str | None = None


ProgramSource = BuiltinSource | ConfigMapSource


@dataclass(frozen=True)
class HookSpec:
    """What one hook of a policy runs. `field_path` is e.g. `spec.hooks.xmit`."""

    hook: str
    program: ProgramSource
    config: Mapping[str, Any] = field(default_factory=dict)
    headroom: int | None = None
    field_path: str = ""


@dataclass(frozen=True)
class PolicySpec:
    pod_selector: LabelSelector | None
    pod_subnets: frozenset[str]
    node_selector: LabelSelector
    failure_policy: schema.FailurePolicy
    priority: int
    hooks: Mapping[str, HookSpec]
    namespace_selector: LabelSelector | None = None  # ClusterLwtRoutePolicy only


# CRD field -> model attribute. tests/policy check these against the schema and the dataclasses,
# so a field added to one and not the other fails the suite.
SPEC_FIELDS = {
    "podSelector": "pod_selector",
    "podSubnets": "pod_subnets",
    "nodeSelector": "node_selector",
    "failurePolicy": "failure_policy",
    "priority": "priority",
    "hooks": "hooks",
}
CLUSTER_SPEC_FIELDS = {
    **{k: v for k, v in SPEC_FIELDS.items() if k != "podSubnets"},
    "podSubnets": "pod_subnets",
    "namespaceSelector": "namespace_selector",
}
HOOK_FIELDS = {"program": "program", "config": "config", "headroom": "headroom"}
CONFIGMAP_PROGRAM_FIELDS = {"configMap": ("name", "key"), "section": "section",
                            "sha256": "sha256"}


@dataclass(frozen=True)
class LwtRoutePolicy:
    ref: PolicyRef
    uid: str
    generation: int
    spec: PolicySpec
    deleting: bool = False  # metadata.deletionTimestamp is set: detach, attach nothing new
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def namespace(self) -> str:
        return self.ref.namespace

    @property
    def name(self) -> str:
        return self.ref.name


ConfigEncoder = Callable[[str, Mapping[str, Any]], Any]


@dataclass(frozen=True)
class Catalogue:
    """The built-ins a policy may name, and how their config is encoded (injectable)."""

    programs: Mapping[str, Any]  # name -> lwt_policy.catalogue.BuiltinProgram
    encode_config: ConfigEncoder
    config_error: type[Exception]

    @classmethod
    def default(cls) -> Catalogue:
        from lwt_policy.catalogue import CATALOGUE
        from lwt_policy.program_config import ProgramConfigError, encode_config

        return cls(CATALOGUE, encode_config, ProgramConfigError)


def is_cluster_kind(obj: Mapping[str, Any]) -> bool:
    return isinstance(obj, Mapping) and obj.get("kind") == cluster_schema.KIND


def policy_location(obj: Mapping[str, Any]) -> str:
    if not isinstance(obj, Mapping):
        return f"{schema.KIND} <not an object: {type(obj).__name__}>"
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    if is_cluster_kind(obj):
        return f"{cluster_schema.KIND} {meta.get('name', '<no name>')}"
    ns = meta.get("namespace") or DEFAULT_NAMESPACE
    return f"{schema.KIND} {ns}/{meta.get('name', '<no name>')}"


def validate_policy(
    obj: Mapping[str, Any],
    *,
    admin_namespace: str = DEFAULT_ADMIN_NAMESPACE,
    catalogue: Catalogue | None = None,
) -> list[Problem]:
    """Every problem of an LwtRoutePolicy object dict ([] when it is valid)."""
    return _validate(obj, admin_namespace, catalogue)[1]


def parse_policy(
    obj: Mapping[str, Any],
    *,
    admin_namespace: str = DEFAULT_ADMIN_NAMESPACE,
    catalogue: Catalogue | None = None,
) -> LwtRoutePolicy:
    """The typed policy; raises PolicyValidationError listing every problem."""
    defaulted, problems = _validate(obj, admin_namespace, catalogue)
    if problems:
        raise PolicyValidationError(policy_location(obj), problems)
    return _build(defaulted, admin_namespace)


def _validate(
    obj: Mapping[str, Any], admin_namespace: str, catalogue: Catalogue | None
) -> tuple[dict[str, Any], list[Problem]]:
    if not isinstance(obj, Mapping):
        return {}, [Problem("", f"expected a {schema.KIND} object (a mapping), "
                                f"got {type(obj).__name__}", "schema:type")]
    # Before anything recursive (copying, schema, CEL) walks it: a hostile object nested
    # thousands deep must be a refusal, not a RecursionError in the operator or an agent.
    bounded = _bound_problems(obj)
    if bounded:
        return {}, bounded
    problems = _identity_problems(obj)
    cluster = is_cluster_kind(obj)
    if cluster:
        defaulted, found = _validate_cluster_object(obj)
    else:
        defaulted, found = validate_object(dict(obj))
    problems += found
    if problems:
        return defaulted, problems
    spec = defaulted["spec"]
    problems += _selector_problems(spec)
    if not cluster:
        problems += _admin_problems(defaulted, admin_namespace)
    problems += _program_problems(spec, catalogue or Catalogue.default())
    return defaulted, problems


def _bound_problems(obj: Mapping[str, Any]) -> list[Problem]:
    problem = depth_problem(obj, "the object")
    if problem is not None:
        return [Problem("", problem, "depth-limit")]
    spec = obj.get("spec")
    problem = spec_size_problem(spec) if spec is not None else None
    if problem is not None:
        return [Problem("spec", problem, "size-limit")]
    return []


def _validate_cluster_object(obj: Mapping[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    """The cluster kind's schema and CEL rules, and the ObjectMeta checks the namespaced kind
    gets. A namespace in its metadata is dropped, as the API server drops it for a
    cluster-scoped object."""
    obj = dict(obj)
    meta = obj.get("metadata")
    if isinstance(meta, Mapping) and "namespace" in meta:
        obj["metadata"] = {k: v for k, v in meta.items() if k != "namespace"}
    problems = metadata_problems(obj.get("metadata"))
    defaulted, found = validate_object(obj, cluster_schema.cluster_root_schema())
    return defaulted, problems + found


def _identity_problems(obj: Mapping[str, Any]) -> list[Problem]:
    problems = []
    if obj.get("apiVersion") != schema.API_VERSION:
        problems.append(Problem("apiVersion", f"must be {schema.API_VERSION}, got "
                                f"{obj.get('apiVersion')!r}", "identity"))
    if obj.get("kind") not in (schema.KIND, cluster_schema.KIND):
        problems.append(Problem("kind", f"must be {schema.KIND} or {cluster_schema.KIND}, got "
                                f"{obj.get('kind')!r}", "identity"))
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping) or not meta.get("name"):
        problems.append(Problem("metadata.name", "required field is missing", "identity"))
    return problems


def _selector_problems(spec: Mapping[str, Any]) -> list[Problem]:
    problems = []
    for name in ("podSelector", "nodeSelector", "namespaceSelector"):
        if name in spec:
            problems += selector_problems(spec[name], join_path("spec", name))
    return problems


def _admin_problems(obj: Mapping[str, Any], admin_namespace: str) -> list[Problem]:
    namespace = obj["metadata"].get("namespace") or DEFAULT_NAMESPACE
    if "podSubnets" in obj["spec"] and namespace != admin_namespace:
        return [Problem(
            "spec.podSubnets",
            f"podSubnets targets carry every tenant's traffic and are accepted only in the "
            f"admin namespace {admin_namespace!r}; this policy is in {namespace!r}: move it "
            f"there or use podSelector",
            "pod-subnets-admin-only",
        )]
    return []


def _program_problems(spec: Mapping[str, Any], catalogue: Catalogue) -> list[Problem]:
    problems: list[Problem] = []
    for hook, hook_spec in spec["hooks"].items():
        base = join_path("spec", "hooks", hook)
        builtin = hook_spec["program"].get("builtin")
        if builtin is not None:
            problems += _builtin_problems(builtin, hook, hook_spec.get("config") or {}, base,
                                          catalogue)
        if spec["failurePolicy"] == schema.FailurePolicy.FAIL_CLOSED:
            fallback = catalogue.programs.get(FAIL_CLOSED_BUILTIN)
            if fallback is None or hook not in fallback.hooks:
                problems.append(Problem(
                    "spec.failurePolicy",
                    f"FailClosed needs the {FAIL_CLOSED_BUILTIN} builtin on the {hook} hook, "
                    "which this agent's catalogue does not offer: use FailOpen",
                    "fail-closed-supported",
                ))
    return problems


def _builtin_problems(
    builtin: str, hook: str, config: Mapping[str, Any], base: str, catalogue: Catalogue
) -> list[Problem]:
    program = catalogue.programs.get(builtin)
    if program is None:
        known = ", ".join(sorted(catalogue.programs))
        return [Problem(join_path(base, "program", "builtin"),
                        f"unknown builtin {builtin!r}: choose one of {known}",
                        "builtin-exists")]
    if hook not in program.hooks:
        allowed = ", ".join(sorted(program.hooks))
        return [Problem(join_path(base, "program", "builtin"),
                        f"builtin {builtin!r} cannot run on the {hook} hook (it supports: "
                        f"{allowed})", "builtin-hook")]
    config_path = join_path(base, "config")
    schema_errors = json_schema_problems(config, program.config_schema, config_path)
    if schema_errors:
        return [Problem(p.path, f"{p.message} (config of builtin {builtin!r})",
                        "builtin-config-schema") for p in schema_errors]
    try:
        catalogue.encode_config(builtin, config)
    except catalogue.config_error as err:
        # ProgramConfigError.field is relative to the hook ("config.denyTCPPorts[0]").
        field_name = getattr(err, "field", None)
        path = f"{base}.{field_name}" if field_name else config_path
        return [Problem(path, getattr(err, "message", str(err)), "builtin-config")]
    return []


def _build(obj: Mapping[str, Any], admin_namespace: str) -> LwtRoutePolicy:
    meta = obj["metadata"]
    ref = PolicyRef("" if is_cluster_kind(obj) else meta.get("namespace") or DEFAULT_NAMESPACE,
                    meta["name"])
    spec = obj["spec"]
    # A cluster policy has no namespace: its ConfigMaps live in the admin namespace, which
    # only cluster admins write (docs/policies.md#cluster-policies-clusterlwtroutepolicy).
    home = admin_namespace if ref.cluster else ref.namespace
    hooks = {hook: _build_hook(home, hook, hook_spec)
             for hook, hook_spec in spec["hooks"].items()}
    return LwtRoutePolicy(
        ref=ref,
        uid=str(meta.get("uid", "")),
        generation=int(meta.get("generation", 0) or 0),
        spec=PolicySpec(
            pod_selector=(LabelSelector.from_dict(spec["podSelector"])
                          if "podSelector" in spec else None),
            pod_subnets=frozenset(spec.get("podSubnets", ())),
            node_selector=LabelSelector.from_dict(spec.get("nodeSelector")),
            failure_policy=schema.FailurePolicy(spec["failurePolicy"]),
            priority=int(spec["priority"]),
            hooks={h: hooks[h] for h in schema.HOOKS if h in hooks},
            namespace_selector=(LabelSelector.from_dict(spec["namespaceSelector"])
                                if "namespaceSelector" in spec else None),
        ),
        deleting=bool(meta.get("deletionTimestamp")),
        raw=obj,
    )


def _build_hook(home: str, hook: str, spec: Mapping[str, Any]) -> HookSpec:
    program = spec["program"]
    source: ProgramSource
    if "builtin" in program:
        source = BuiltinSource(program["builtin"])
    else:
        source = ConfigMapSource(
            namespace=home,
            name=program["configMap"]["name"],
            key=program["configMap"]["key"],
            section=program["section"],
            sha256=program.get("sha256"),
        )
    return HookSpec(
        hook=hook,
        program=source,
        config=dict(spec.get("config") or {}),
        headroom=spec.get("headroom"),
        field_path=join_path("spec", "hooks", hook),
    )
