"""The LwtRoutePolicy openAPIV3Schema: the single source of the CRD and of offline validation.

`crds/lwt.dev_lwtroutepolicies.yaml` is generated from `root_schema()` (see `lwt_policy.crd`),
and `lwt_policy.validation` validates policies against the very same dict, CEL rules included,
so the API server and the agent/operator can never disagree about what is valid.

Schema rules that Kubernetes imposes and this module respects:
- structural: every node has a `type`, no `uniqueItems` (use `x-kubernetes-list-type: set`);
  nothing preserves unknown fields: a hook's `config` is typed, generated from the built-in
  catalogue (`builtin_config_schema`: every built-in's fields, each bounded, plus one CEL
  rule per built-in saying which of them it takes and which it needs), so the API server
  itself refuses unknown, deep or oversized configs;
- every string a CEL rule looks at and every list has a max size, so the API server's CEL cost
  estimate stays within budget;
- CEL property names that are CEL reserved words are escaped: `self.in` is written
  `self.__in__` (Kubernetes' escaping; `validation.escape_cel_names` mirrors it offline).
"""
from __future__ import annotations

import copy
import enum
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

GROUP = "lwt.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "LwtRoutePolicy"
LIST_KIND = "LwtRoutePolicyList"
PLURAL = "lwtroutepolicies"
SINGULAR = "lwtroutepolicy"
SHORT_NAMES = ("lrp",)
CATEGORIES = ("lwt",)
CRD_NAME = f"{PLURAL}.{GROUP}"

# Per-node state (docs/policies.md#node-state): one cluster-scoped object per node, named after
# the node, holding that node's entry for every policy. Written by that node's agent only.
NODE_STATE_KIND = "LwtNodeState"
NODE_STATE_LIST_KIND = "LwtNodeStateList"
NODE_STATE_PLURAL = "lwtnodestates"
NODE_STATE_SINGULAR = "lwtnodestate"
NODE_STATE_SHORT_NAMES = ("lns",)
NODE_STATE_CRD_NAME = f"{NODE_STATE_PLURAL}.{GROUP}"
# Policy entries one node state holds at most (a node acts on at most this many policies).
MAX_NODE_POLICIES = 2048
# Nodes a policy's status names (the rest are counted): its size must not grow with nodes.
MAX_LISTED_NODES = 10
MAX_NODE_PROBLEM_MESSAGE = 256
NODE_PROBLEM_REASONS = ("Error", "Behind", "Attaching", "NoReport")

HOOKS = ("in", "out", "xmit")


class FailurePolicy(enum.StrEnum):
    """What a hook gets while its program cannot be made ready (and no earlier version of it
    is attached): the one definition, used by the schema, the model and the reconciler."""

    FAIL_OPEN = "FailOpen"  # the hook stays plain
    FAIL_CLOSED = "FailClosed"  # the hook runs the drop-all built-in


FAILURE_POLICIES = tuple(policy.value for policy in FailurePolicy)
DEFAULT_FAILURE_POLICY = FailurePolicy.FAIL_OPEN.value
DEFAULT_PRIORITY = 100
MIN_PRIORITY = 0
MAX_PRIORITY = 10000
MAX_HEADROOM = 256  # ERANGE above: docs/kernel-facts.md#headroom
POD_SUBNETS = ("local", "remote")
SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
# Policy names end up in route labels (`lwt/<ns>/<policy>/<hook>/<tag>`, at most 255 bytes):
# a DNS label (63) keeps the longest label well inside that limit.
MAX_POLICY_NAME = 63

SHA256_PATTERN = "^[0-9a-f]{64}$"


@dataclass(frozen=True)
class CelRule:
    """One `x-kubernetes-validations` entry.

    `name` never reaches the CRD: it is this project's stable handle for the rule (tests assert
    which rule rejected a policy, docs list them). The API server reports `message`, which is
    unique per rule, so a rejection can be mapped back to its name (`rule_by_message`).
    """

    name: str
    rule: str
    message: str
    reason: str = "FieldValueInvalid"
    field_path: str | None = None

    def to_crd(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"rule": self.rule, "message": self.message, "reason": self.reason}
        if self.field_path is not None:
            entry["fieldPath"] = self.field_path
        return entry


EXACTLY_ONE_TARGET = CelRule(
    name="exactly-one-target",
    rule="has(self.podSelector) != has(self.podSubnets)",
    message="set exactly one target: podSelector (pods of this namespace) "
    "or podSubnets (node pod-CIDR routes, admin namespace only)",
)
AT_LEAST_ONE_HOOK = CelRule(
    name="at-least-one-hook",
    rule="has(self.__in__) || has(self.out) || has(self.xmit)",
    message="set at least one hook: in, out or xmit",
    reason="FieldValueRequired",
)
HEADROOM_ONLY_ON_XMIT = CelRule(
    name="headroom-only-on-xmit",
    rule="!has(self.headroom)",
    message="headroom is only allowed on the xmit hook: in and out programs cannot push headers",
    reason="FieldValueForbidden",
    field_path=".headroom",
)
HEADROOM_RANGE = CelRule(
    name="headroom-range",
    rule=f"!has(self.headroom) || (self.headroom >= 0 && self.headroom <= {MAX_HEADROOM})",
    message=f"headroom must be between 0 and {MAX_HEADROOM} bytes "
    "(the kernel refuses more with ERANGE)",
    field_path=".headroom",
)
CONFIG_ONLY_FOR_BUILTIN = CelRule(
    name="config-only-for-builtin",
    rule="!has(self.config) || has(self.program.builtin)",
    message="config is only for builtin programs: a configMap program has no config schema",
    reason="FieldValueForbidden",
    field_path=".config",
)
EXACTLY_ONE_PROGRAM_SOURCE = CelRule(
    name="exactly-one-program-source",
    rule="has(self.builtin) != has(self.configMap)",
    message="set exactly one program source: builtin or configMap",
)
CONFIGMAP_NEEDS_SECTION = CelRule(
    name="configmap-needs-section",
    rule="!has(self.configMap) || has(self.section)",
    message="section is required with configMap: name the ELF section that holds the program",
    reason="FieldValueRequired",
    field_path=".section",
)
SECTION_ONLY_WITH_CONFIGMAP = CelRule(
    name="section-only-with-configmap",
    rule="has(self.configMap) || !has(self.section)",
    message="section is only for configMap programs: a builtin names its own section",
    reason="FieldValueForbidden",
    field_path=".section",
)
SHA256_ONLY_WITH_CONFIGMAP = CelRule(
    name="sha256-only-with-configmap",
    rule="has(self.configMap) || !has(self.sha256)",
    message="sha256 is only for configMap programs: builtins ship with the agent image",
    reason="FieldValueForbidden",
    field_path=".sha256",
)
SHA256_FORMAT = CelRule(
    name="sha256-format",
    rule=f"!has(self.sha256) || self.sha256.matches('{SHA256_PATTERN}')",
    message="sha256 must be 64 lowercase hex digits, as `sha256sum FILE` prints them",
    field_path=".sha256",
)
SELECTOR_VALUES_MATCH_OPERATOR = CelRule(
    name="selector-values-match-operator",
    rule="self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0)"
    " : (!has(self.values) || size(self.values) == 0)",
    message="values must be non-empty for operators In and NotIn, "
    "and empty for Exists and DoesNotExist",
    field_path=".values",
)

ALL_CEL_RULES: tuple[CelRule, ...] = (
    EXACTLY_ONE_TARGET,
    AT_LEAST_ONE_HOOK,
    HEADROOM_ONLY_ON_XMIT,
    HEADROOM_RANGE,
    CONFIG_ONLY_FOR_BUILTIN,
    EXACTLY_ONE_PROGRAM_SOURCE,
    CONFIGMAP_NEEDS_SECTION,
    SECTION_ONLY_WITH_CONFIGMAP,
    SHA256_ONLY_WITH_CONFIGMAP,
    SHA256_FORMAT,
    SELECTOR_VALUES_MATCH_OPERATOR,
)


def rule_by_message(message: str) -> CelRule:
    """The rule whose CRD `message` this is (what the API server reports back)."""
    from lwt_policy.cluster_schema import CLUSTER_CEL_RULES  # built from this module

    for rule in (*ALL_CEL_RULES, *builtin_config_rules(), *builtin_hook_rules(),
                 *CLUSTER_CEL_RULES):
        if rule.message == message:
            return rule
    raise KeyError(f"no CEL rule has the message {message!r}")


# --- typed config of the built-ins, generated from the catalogue ----------------------------

# Bounds the generator adds where the catalogue gives none (every config string and list is
# bounded, so a config can never be large or expensive for the API server).
CONFIG_STRING_MAX = 253
_CEL_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CEL_WORDS = frozenset({"true", "false", "null", "in", "as", "break", "const", "continue",
                        "else", "for", "function", "if", "import", "let", "loop", "package",
                        "namespace", "return", "var"})


class ConfigSchemaError(ValueError):
    """The catalogue's config schemas cannot become one structural CRD schema."""


def _structural(node: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A catalogue (JSON schema) node as a structural, bounded CRD node.

    `default` is dropped: the API server would apply it to every built-in's config, and
    `program_config.validate_config` fills each built-in's own defaults. `uniqueItems`
    becomes `x-kubernetes-list-type: set`; `additionalProperties: false` is the CRD's
    pruning anyway."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("default", "uniqueItems", "additionalProperties"):
            continue
        if key == "properties":
            out[key] = {name: _structural(sub, f"{where}.{name}") for name, sub in value.items()}
        elif key == "items":
            out[key] = _structural(value, f"{where}[]")
        else:
            out[key] = copy.deepcopy(value)
    kind = out.get("type")
    if kind is None:
        raise ConfigSchemaError(f"{where}: every config field needs a type (structural CRD)")
    if "default" in node:
        out["description"] = (out.get("description", "") + f" Default: {node['default']!r}."
                              ).strip()
    if kind == "string" and "enum" not in out:
        out.setdefault("maxLength", CONFIG_STRING_MAX)
    if kind == "array":
        if "maxItems" not in out:
            raise ConfigSchemaError(f"{where}: a config list needs maxItems (catalogue.py)")
        if node.get("uniqueItems"):
            out["x-kubernetes-list-type"] = "set"
        else:
            out.setdefault("x-kubernetes-list-type", "atomic")
    if kind == "object":
        if "properties" not in out:
            raise ConfigSchemaError(f"{where}: a config object needs properties")
        out.setdefault("maxProperties", len(out["properties"]))
    return out


@functools.cache
def _config_fields() -> tuple[tuple[str, dict[str, Any], tuple[str, ...]], ...]:
    """(field, structural schema, built-ins that take it), in catalogue order."""
    from lwt_policy.catalogue import CATALOGUE  # the catalogue imports this module

    fields: dict[str, dict[str, Any]] = {}
    takers: dict[str, list[str]] = {}
    for program in CATALOGUE.values():
        for name, sub in program.config_schema.get("properties", {}).items():
            if not _CEL_IDENTIFIER.match(name) or name in _CEL_WORDS:
                raise ConfigSchemaError(
                    f"config field {name!r} of built-in {program.name!r}: CEL rules name "
                    "config fields, so they must be identifiers and not CEL reserved words")
            node = _structural(sub, f"{program.name}.config.{name}")
            known = fields.get(name)
            if known is not None and _without_description(known) != _without_description(node):
                raise ConfigSchemaError(
                    f"config field {name!r} has different schemas in built-ins "
                    f"{', '.join(takers[name])} and {program.name}: one CRD field cannot hold "
                    "both; rename one of them in catalogue.py")
            fields.setdefault(name, node)
            takers.setdefault(name, []).append(program.name)
    return tuple((name, fields[name], tuple(takers[name])) for name in fields)


def _without_description(node: Mapping[str, Any]) -> Any:
    if isinstance(node, Mapping):
        return {k: _without_description(v) for k, v in node.items() if k != "description"}
    return node


def builtin_config_schema() -> dict[str, Any]:
    """A hook's `config`: the fields of every built-in, each typed and bounded; which of them
    a given built-in takes is checked by `builtin_config_rules`."""
    properties: dict[str, Any] = {}
    for name, node, takers in _config_fields():
        node = copy.deepcopy(node)
        node["description"] = f"({', '.join(takers)}) " + node.get("description", "")
        properties[name] = node
    return {
        "type": "object",
        "description": "Configuration of a builtin program, written into its maps. Each "
        "builtin takes its own fields (docs/builtins.md); fields of other builtins are "
        "refused. The operator and the agent also check it against the builtin's map layout.",
        "maxProperties": max(len(properties), 1),
        "properties": properties,
    }


@functools.cache
def builtin_config_rules() -> tuple[CelRule, ...]:
    """Per built-in: the config fields it does not take are absent; the ones it needs are
    present. Evaluated on a hook (`self.program`, `self.config`)."""
    from lwt_policy.catalogue import CATALOGUE

    fields = [name for name, _, _ in _config_fields()]
    rules: list[CelRule] = []
    for program in CATALOGUE.values():
        own = list(program.config_schema.get("properties", {}))
        foreign = [f for f in fields if f not in own]
        is_it = f"has(self.program.builtin) && self.program.builtin == '{program.name}'"
        if foreign:
            absent = " && ".join(f"!has(self.config.{f})" for f in foreign)
            takes = ", ".join(own) if own else "no config fields"
            rules.append(CelRule(
                name=f"config-fields-{program.name}",
                rule=f"!has(self.config) || !({is_it}) || ({absent})",
                message=f"builtin {program.name} takes {takes}: remove the other builtins' "
                "fields from config",
                reason="FieldValueForbidden",
                field_path=".config",
            ))
        required = list(program.config_schema.get("required", []))
        if required:
            present = " && ".join(f"has(self.config.{f})" for f in required)
            rules.append(CelRule(
                name=f"config-required-{program.name}",
                rule=f"!({is_it}) || (has(self.config) && {present})",
                message=f"builtin {program.name} needs config fields {', '.join(required)}",
                reason="FieldValueRequired",
                field_path=".config",
            ))
    return tuple(rules)


# --- which built-ins exist and on which hooks they run, generated from the catalogue --------


@functools.cache
def builtin_names() -> tuple[str, ...]:
    """The built-ins, in catalogue order: `program.builtin`'s enum."""
    from lwt_policy.catalogue import CATALOGUE

    return tuple(CATALOGUE)


def builtin_hook_rule(builtin: str, hook: str) -> CelRule | None:
    """The rule refusing `builtin` on `hook` (None when the built-in runs there)."""
    from lwt_policy.catalogue import CATALOGUE

    allowed = CATALOGUE[builtin].hooks
    if hook in allowed:
        return None
    return CelRule(
        name=f"builtin-hook-{builtin}-{hook}",
        rule=f"!has(self.builtin) || self.builtin != '{builtin}'",
        message=f"builtin {builtin} cannot run on the {hook} hook: it runs on "
        f"{', '.join(h for h in HOOKS if h in allowed)} (docs/builtins.md)",
        # A real API server accepts only FieldValueInvalid/Forbidden/Required/Duplicate here.
        reason="FieldValueInvalid",
        field_path=".builtin",
    )


@functools.cache
def builtin_hook_rules() -> tuple[CelRule, ...]:
    """Every (built-in, hook) the kernel refuses, as a CEL rule on that hook's `program`."""
    return tuple(rule for hook in HOOKS for builtin in builtin_names()
                 if (rule := builtin_hook_rule(builtin, hook)) is not None)


# --- building blocks -----------------------------------------------------------------------


def _string(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


def _integer(description: str, fmt: str = "int32", **extra: Any) -> dict[str, Any]:
    return {"type": "integer", "format": fmt, "description": description, **extra}


def _object(
    description: str,
    properties: dict[str, Any],
    *,
    required: list[str] | None = None,
    rules: tuple[CelRule, ...] = (),
    **extra: Any,
) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "object", "description": description}
    if required:
        node["required"] = required
    node["properties"] = properties
    node.update(extra)
    if rules:
        node["x-kubernetes-validations"] = [r.to_crd() for r in rules]
    return node


def label_selector_schema(description: str) -> dict[str, Any]:
    """metav1.LabelSelector, as Kubernetes' own types publish it (plus a values/operator rule).

    Key and value syntax is checked by `lwt_policy.selectors` (a CEL regex per key would cost
    more than the API server's budget allows on a map of unbounded keys).
    """
    requirement = _object(
        "A label selector requirement: a key, an operator and (for In/NotIn) values.",
        {
            "key": _string("The label key the selector applies to.", maxLength=317),
            "operator": _string(
                "How the key relates to the values: In, NotIn, Exists or DoesNotExist.",
                enum=list(SELECTOR_OPERATORS),
            ),
            "values": {
                "type": "array",
                "description": "Label values. Non-empty for In and NotIn, empty for Exists and "
                "DoesNotExist.",
                "maxItems": 64,
                "items": {"type": "string", "maxLength": 63},
                "x-kubernetes-list-type": "atomic",
            },
        },
        required=["key", "operator"],
        rules=(SELECTOR_VALUES_MATCH_OPERATOR,),
    )
    return _object(
        description,
        {
            "matchLabels": {
                "type": "object",
                "description": "Labels that must all be present with exactly these values "
                "(equivalent to In requirements with one value each).",
                "maxProperties": 64,
                "additionalProperties": {"type": "string", "maxLength": 63},
            },
            "matchExpressions": {
                "type": "array",
                "description": "Requirements that must all hold (ANDed with matchLabels).",
                "maxItems": 64,
                "items": requirement,
                "x-kubernetes-list-type": "atomic",
            },
        },
        **{"x-kubernetes-map-type": "atomic"},
    )


def program_schema(hook: str | None = None) -> dict[str, Any]:
    """A hook's `program`; with `hook`, the rules refusing the built-ins that cannot run on
    it are attached (the API server reports them at `...program.builtin`)."""
    hook_rules = tuple(rule for builtin in builtin_names()
                       if hook is not None
                       and (rule := builtin_hook_rule(builtin, hook)) is not None)
    return _object(
        "Where the BPF program comes from: exactly one of builtin or configMap.",
        {
            "builtin": _string(
                "Name of a built-in program shipped with the agent (see docs/builtins.md).",
                maxLength=63,
                enum=list(builtin_names()),
            ),
            "configMap": _object(
                "A BPF ELF object stored in binaryData of a ConfigMap of the policy's own "
                "namespace (`kubectl create configmap NAME --from-file=prog.o`).",
                {
                    "name": _string("Name of the ConfigMap.", maxLength=253),
                    "key": _string("Key in the ConfigMap's binaryData.", maxLength=253),
                },
                required=["name", "key"],
            ),
            "section": _string(
                "ELF section of the program in the object (configMap programs only).",
                maxLength=255,
            ),
            "sha256": _string(
                "Optional sha256 (64 lowercase hex digits) of the object; the agent refuses an "
                "object whose digest differs (configMap programs only).",
                maxLength=64,
            ),
        },
        rules=(
            EXACTLY_ONE_PROGRAM_SOURCE,
            CONFIGMAP_NEEDS_SECTION,
            SECTION_ONLY_WITH_CONFIGMAP,
            SHA256_ONLY_WITH_CONFIGMAP,
            SHA256_FORMAT,
            *hook_rules,
        ),
    )


_HOOK_DESCRIPTIONS = {
    "in": "Program run on the input/forward path of packets routed by the route "
    "(read-only; may drop).",
    "out": "Program run on the output path of locally generated packets using the route "
    "(read-only; may drop).",
    "xmit": "Program run just before neighbour output (may rewrite packets, push an "
    "encapsulation header, reroute or redirect).",
}


def hook_schema(hook: str) -> dict[str, Any]:
    rules: tuple[CelRule, ...] = (CONFIG_ONLY_FOR_BUILTIN,)
    rules += (HEADROOM_RANGE,) if hook == "xmit" else (HEADROOM_ONLY_ON_XMIT,)
    rules += builtin_config_rules()
    return _object(
        _HOOK_DESCRIPTIONS[hook],
        {
            "program": program_schema(hook),
            "config": builtin_config_schema(),
            "headroom": _integer(
                f"xmit only: bytes of headroom (0..{MAX_HEADROOM}) reserved for headers the "
                "program pushes (encapsulation)."
            ),
        },
        required=["program"],
        rules=rules,
    )


def spec_schema() -> dict[str, Any]:
    return _object(
        "Which routes get which LWT BPF programs.",
        {
            "podSelector": label_selector_schema(
                "Target: the per-pod routes of Running, non-hostNetwork pods of the policy's "
                "own namespace whose labels match. An empty selector matches every pod of the "
                "namespace."
            ),
            "podSubnets": {
                "type": "array",
                "description": "Target: node pod-CIDR routes. `local`: the route to this "
                "node's own Node.spec.podCIDRs; `remote`: the routes to other nodes' pod CIDRs "
                "(bridge and host-gw CNIs). They carry every tenant's traffic, so they are "
                "accepted only in the operator's admin namespace.",
                "minItems": 1,
                "maxItems": len(POD_SUBNETS),
                "items": {"type": "string", "enum": list(POD_SUBNETS)},
                "x-kubernetes-list-type": "set",
            },
            "nodeSelector": label_selector_schema(
                "Nodes (by Node labels) on which the policy applies. Absent or empty: every "
                "node."
            ),
            "failurePolicy": _string(
                "What a route gets when its program cannot be loaded or attached on a node: "
                "FailOpen leaves the route without a program (traffic flows unfiltered), "
                "FailClosed attaches the drop-all builtin (traffic to the target is dropped).",
                enum=list(FAILURE_POLICIES),
                default=DEFAULT_FAILURE_POLICY,
            ),
            "priority": _integer(
                "When two policies target the same route and hook, the lower number wins; "
                "ties go to a ClusterLwtRoutePolicy, then to the policy whose namespace/name sorts "
                "first. The loser reports a "
                f"Conflict. {MIN_PRIORITY}..{MAX_PRIORITY}.",
                default=DEFAULT_PRIORITY,
                minimum=MIN_PRIORITY,
                maximum=MAX_PRIORITY,
            ),
            "hooks": _object(
                "Programs per LWT hook; at least one of in, out, xmit.",
                {hook: hook_schema(hook) for hook in HOOKS},
                rules=(AT_LEAST_ONE_HOOK,),
            ),
        },
        required=["hooks"],
        rules=(EXACTLY_ONE_TARGET,),
    )


def condition_schema() -> dict[str, Any]:
    """metav1.Condition, as Kubernetes publishes it."""
    return _object(
        "One aspect of the policy's state (Accepted, Ready, Degraded, Progressing, Reconciling, "
        "Stalled).",
        {
            "type": _string("Condition type.", maxLength=316),
            "status": _string("True, False or Unknown.", enum=["True", "False", "Unknown"]),
            "observedGeneration": _integer(
                "metadata.generation the condition was computed from.", "int64", minimum=0
            ),
            "lastTransitionTime": _string(
                "When status last changed.", format="date-time"
            ),
            "reason": _string("CamelCase machine-readable reason.", maxLength=1024),
            "message": _string("Human-readable detail.", maxLength=32768),
        },
        required=["type", "status", "lastTransitionTime", "reason", "message"],
    )


def program_status_schema(hook: str) -> dict[str, Any]:
    return _object(
        f"The program attached on the {hook} hook on this node.",
        {
            "id": _integer("Kernel program id (bpftool prog show id ID).", "int64"),
            "tag": _string("Kernel program tag (16 hex digits)."),
            "label": _string("LWT label the routes carry for this program version."),
        },
    )


def node_status_schema() -> dict[str, Any]:
    """One policy's entry in a node state (`status.policies[]` of an LwtNodeState)."""
    return _object(
        "What this node's agent did for one policy. Written by that agent only.",
        {
            "namespace": _string("Namespace of the policy.", maxLength=63),
            "name": _string("Name of the policy.", maxLength=MAX_POLICY_NAME),
            "observedGeneration": _integer(
                "metadata.generation this entry reflects.", "int64", minimum=0
            ),
            "routes": _integer("Routes on this node the policy targets.", minimum=0),
            "attachedRoutes": _integer(
                "Targeted routes that carry the policy's programs now.", minimum=0
            ),
            "programs": _object(
                "Programs loaded for this policy, per hook.",
                {hook: program_status_schema(hook) for hook in HOOKS},
            ),
            "conflicts": {
                "type": "array",
                "description": "Hooks on which another policy won routes this policy targets.",
                "maxItems": 64,
                "x-kubernetes-list-type": "atomic",
                "items": _object(
                    "Routes of one hook lost to a higher-priority policy.",
                    {
                        "hook": _string("The hook.", enum=list(HOOKS)),
                        "winner": _string("namespace/name of the policy that won."),
                        "routes": _integer("Routes lost to it.", minimum=0),
                        "reason": _string("Why it won."),
                    },
                    required=["hook", "winner", "routes"],
                ),
            },
            "overrides": {
                "type": "array",
                "description": "Hooks on which this policy won routes another policy also "
                "targets (that policy lists them under conflicts).",
                "maxItems": 64,
                "x-kubernetes-list-type": "atomic",
                "items": _object(
                    "Routes of one hook won over another policy.",
                    {
                        "hook": _string("The hook.", enum=list(HOOKS)),
                        "loser": _string("The policy that lost (namespace/name, or the name "
                                         "of a ClusterLwtRoutePolicy)."),
                        "routes": _integer("Routes won over it.", minimum=0),
                    },
                    required=["hook", "loser", "routes"],
                ),
            },
            "lastError": _object(
                "The last failure on this node, or null.",
                {
                    "message": _string("What failed and what to do."),
                    "verifierLog": _string("Excerpt (tail) of the BPF verifier log, if any."),
                },
                required=["message"],
                nullable=True,
            ),
            "detached": {
                "type": "boolean",
                "description": "True once the node has detached everything of a policy being "
                "deleted (the operator's finalizer waits for it).",
            },
            "lastUpdateTime": _string("When the agent wrote this entry.", format="date-time"),
        },
        required=["namespace", "name"],
    )


def status_schema() -> dict[str, Any]:
    return _object(
        "Observed state, written by the operator only, its size independent of the number "
        "of nodes. Each node's own entry is in the LwtNodeState named after the node.",
        {
            "observedGeneration": _integer(
                "metadata.generation the conditions and summary reflect.", "int64", minimum=0
            ),
            "conditions": {
                "type": "array",
                "description": "Accepted, Ready, Degraded and Progressing conditions "
                "(operator-owned).",
                "maxItems": 16,
                "items": condition_schema(),
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
            "summary": _object(
                "Aggregate over nodes.",
                {
                    "nodes": _integer("Nodes that report this policy.", minimum=0),
                    "readyNodes": _integer(
                        "Nodes whose entry is at the current generation, with every targeted "
                        "route attached and no error.",
                        minimum=0,
                    ),
                    "nodesReady": _string(
                        "readyNodes/nodes, for `kubectl get` (e.g. 2/3)."
                    ),
                    "routes": _integer("Targeted routes over all nodes.", minimum=0),
                    "attachedRoutes": _integer(
                        "Attached routes over all nodes.", minimum=0
                    ),
                    "routesLost": _integer(
                        "Present when other policies won some: (route, hook) pairs this "
                        "policy targets that another policy won, over all nodes (which one and "
                        "why: conflicts in the nodes' LwtNodeStates).", minimum=0),
                    "routesWon": _integer(
                        "Present when this policy won some: (route, hook) pairs it won over "
                        "other policies targeting them, over all nodes (overrides in the "
                        "nodes' LwtNodeStates).", minimum=0),
                },
            ),
            "nodesNotReady": {
                "type": "array",
                "description": f"Up to {MAX_LISTED_NODES} nodes that are not ready, errors "
                "first, each with why (the rest are counted in moreNodesNotReady). A node's "
                "whole entry, verifier log included, is in its LwtNodeState.",
                "maxItems": MAX_LISTED_NODES,
                "x-kubernetes-list-type": "atomic",
                "items": _object(
                    "A node that has not applied the current generation.",
                    {
                        "node": _string("Node name (and its LwtNodeState's name).",
                                        maxLength=253),
                        "reason": _string("Why, in one word.",
                                          enum=list(NODE_PROBLEM_REASONS)),
                        "message": _string("Detail.", maxLength=MAX_NODE_PROBLEM_MESSAGE),
                    },
                    required=["node", "reason"],
                ),
            },
            "moreNodesNotReady": _integer(
                "Nodes not ready beyond those listed in nodesNotReady.", minimum=0),
        },
    )


def node_state_status_schema() -> dict[str, Any]:
    return _object(
        "What this node's agent did, for every policy it acts on (written by it only).",
        {
            "policies": {
                "type": "array",
                "description": "One entry per policy, sorted by namespace and name.",
                "maxItems": MAX_NODE_POLICIES,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["namespace", "name"],
                "items": node_status_schema(),
            },
            "summary": _object(
                "Counts over the entries, for `kubectl get lns`.",
                {
                    "policies": _integer("Policies this node acts on.", minimum=0),
                    "errors": _integer("Entries with a lastError.", minimum=0),
                    "attachedRoutes": _integer("Routes carrying a policy's programs.",
                                               minimum=0),
                },
            ),
            "lastUpdateTime": _string("When the agent last changed this object.",
                                      format="date-time"),
        },
    )


def node_state_root_schema() -> dict[str, Any]:
    """The whole openAPIV3Schema of LwtNodeState v1alpha1."""
    return _object(
        "LwtNodeState is one node's state for every LwtRoutePolicy: named after the node, "
        "owned by its Node (garbage-collected with it), written only by that node's agent.",
        {
            "apiVersion": _string("APIVersion of this object (lwt.dev/v1alpha1)."),
            "kind": _string("Kind of this object (LwtNodeState)."),
            "metadata": {"type": "object"},
            "status": node_state_status_schema(),
        },
    )


def node_state_printer_columns() -> list[dict[str, Any]]:
    return [
        {"name": "Policies", "type": "integer", "jsonPath": ".status.summary.policies",
         "description": "Policies this node acts on."},
        {"name": "Errors", "type": "integer", "jsonPath": ".status.summary.errors",
         "description": "Policies with an error on this node."},
        {"name": "Routes", "type": "integer", "jsonPath": ".status.summary.attachedRoutes",
         "description": "Routes carrying a policy's programs."},
        {"name": "Updated", "type": "date", "jsonPath": ".status.lastUpdateTime"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def root_schema() -> dict[str, Any]:
    """The whole openAPIV3Schema of LwtRoutePolicy v1alpha1."""
    return _object(
        "LwtRoutePolicy attaches Linux lightweight-tunnel (LWT) BPF programs to the routes of "
        "selected pods (or of node pod subnets) on selected nodes.",
        {
            "apiVersion": _string("APIVersion of this object (lwt.dev/v1alpha1)."),
            "kind": _string("Kind of this object (LwtRoutePolicy)."),
            "metadata": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": MAX_POLICY_NAME},
                },
            },
            "spec": spec_schema(),
            "status": status_schema(),
        },
        required=["spec"],
    )


def printer_columns() -> list[dict[str, Any]]:
    return [
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
            "description": "Every node has attached the policy at its current generation.",
        },
        {
            "name": "Nodes",
            "type": "string",
            "jsonPath": ".status.summary.nodesReady",
            "description": "Ready nodes / nodes reporting.",
        },
        {
            "name": "Routes",
            "type": "integer",
            "jsonPath": ".status.summary.attachedRoutes",
            "description": "Routes that carry the policy's programs.",
        },
        {
            "name": "Priority",
            "type": "integer",
            "jsonPath": ".spec.priority",
            "priority": 1,
        },
        {
            "name": "FailurePolicy",
            "type": "string",
            "jsonPath": ".spec.failurePolicy",
            "priority": 1,
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
