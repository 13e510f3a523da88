"""Issue 12: a bounded fuzz run over hostile policies and documents (the policy half; the ELF
half is tests/loader/test_fuzz.py).

Mutated LwtRoutePolicy objects and YAML documents, with the shapes of the attacks (objects
nested thousands deep, tens of thousands of keys, wrong types everywhere, configMap sources,
podSubnets, odd addresses), go through everything a policy meets before the kernel: the
manifest reader, validation (schema, CEL, semantics, the custom-program rule), the agent's
slim cache view and bounded decoding, and targeting with random pods and nodes. Every outcome
must be a typed refusal or a result, never another exception. Fixed seed and example count:
the run is the same every time and takes about 20 s.
"""
from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from lwt_agent.agent.slim import slim_policy
from lwt_policy import limits
from lwt_policy.custom_programs import CustomProgramRule, custom_program_problems
from lwt_policy.errors import ManifestError, PolicyValidationError, Problem
from lwt_policy.manifests import load_cluster_objects
from lwt_policy.model import parse_policy, validate_policy
from lwt_policy.targets import desired_attachments

from tests.policy.test_robustness import replace_at

ADMIN = "lwt-system"
SEED = 20261202
EXAMPLES = 150

KEYS = ["program", "builtin", "configMap", "headroom", "config", "matchLabels",
        "matchExpressions", "key", "operator", "values", "name", "section", "sha256",
        "denyTCPPorts", "denySourceCIDRs", "oneIn", "remote", "source", "mode", "udpPort",
        "podSelector", "podSubnets", "hooks", "in", "out", "xmit", "priority", "x"]
SCALARS = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True)
           | st.text(max_size=12)
           | st.sampled_from(["in", "out", "xmit", "In", "Exists", "local", "remote",
                              "counters", "encap", "port-filter", "sampler", "drop-all",
                              "10.0.0.0/8", "::/0", "255.255.255.255", "udp", "ipip",
                              "a" * 300, "../../etc", "lwt/x", "FailClosed"]))
JSON = st.recursive(SCALARS, lambda children: st.lists(children, max_size=4)
                    | st.dictionaries(st.sampled_from(KEYS), children, max_size=4),
                    max_leaves=12)


# cel-python raises the recursion limit when its environment is created: do it before
# hypothesis runs, which warns about limits changed under it.
validate_policy({"apiVersion": "lwt.dev/v1alpha1", "kind": "LwtRoutePolicy",
                 "metadata": {"name": "p"},
                 "spec": {"podSelector": {}, "hooks": {"out": {"program": {"builtin": "x"}}}}})


def _deep(depth: int) -> Any:
    value: Any = 1
    for index in range(depth):
        value = {"a": value} if index % 2 else [value]
    return value


BOMBS = (st.integers(limits.MAX_DEPTH - 2, 3000).map(_deep)
         | st.integers(1000, 20000).map(lambda n: {f"k{i}": i for i in range(n)})
         | st.integers(1, 5000).map(lambda n: list(range(n))))

PATHS = [(), ("spec",), ("spec", "hooks"), ("spec", "hooks", "out"),
         ("spec", "hooks", "out", "program"), ("spec", "hooks", "out", "config"),
         ("spec", "hooks", "xmit", "config"), ("spec", "hooks", "in"),
         ("spec", "podSelector"), ("spec", "podSelector", "matchExpressions"),
         ("spec", "nodeSelector"), ("spec", "priority"), ("spec", "podSubnets"),
         ("metadata",), ("metadata", "name"), ("metadata", "namespace"), ("status",)]


def _base(namespace: str) -> dict[str, Any]:
    return {"apiVersion": "lwt.dev/v1alpha1", "kind": "LwtRoutePolicy",
            "metadata": {"name": "p", "namespace": namespace, "generation": 1},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "hooks": {
                "out": {"program": {"builtin": "port-filter"},
                        "config": {"denyTCPPorts": [22]}},
                "xmit": {"program": {"configMap": {"name": "cm", "key": "p.o"},
                                     "section": "lwt/x"}}}}}


ADDRESSES = st.one_of(st.ip_addresses().map(str), st.text(max_size=8),
                      st.sampled_from(["10.244.1.7", "10.244.1.0", "fd00::1", ""]))
PODS = st.lists(st.fixed_dictionaries({
    "metadata": st.fixed_dictionaries({"name": st.text(max_size=4),
                                       "namespace": st.sampled_from(["shop", ADMIN, "x"]),
                                       "labels": st.dictionaries(st.sampled_from(["app", "a"]),
                                                                 st.sampled_from(["web", ""]),
                                                                 max_size=2)}),
    "spec": st.fixed_dictionaries({"nodeName": st.sampled_from(["n1", "n2"]),
                                   "hostNetwork": st.booleans()}),
    "status": st.fixed_dictionaries({"phase": st.sampled_from(["Running", "Pending"]),
                                     "podIPs": st.lists(st.fixed_dictionaries(
                                         {"ip": ADDRESSES}), max_size=3)}),
}), max_size=6)
NODES = st.lists(st.fixed_dictionaries({
    "metadata": st.fixed_dictionaries({"name": st.sampled_from(["n1", "n2", "n3"])}),
    "spec": st.fixed_dictionaries({"podCIDRs": st.lists(st.one_of(
        st.tuples(st.ip_addresses(), st.integers(0, 128)).map(lambda t: f"{t[0]}/{t[1]}"),
        st.text(max_size=6),
        st.sampled_from(["10.244.1.0/24", "0.0.0.0/0", "::/0"])), max_size=3)}),
}), max_size=3)


def _through_everything(obj: Any, pods: list[Any], nodes: list[Any]) -> None:
    problems = validate_policy(obj, admin_namespace=ADMIN)
    assert all(isinstance(p, Problem) and p.message for p in problems)
    if isinstance(obj, dict):
        for rule in (CustomProgramRule(), CustomProgramRule(True)):
            found = custom_program_problems(obj, rule, {"lwt.dev/custom-programs": "allowed"})
            assert all(isinstance(p, Problem) for p in found)
        try:
            slim_policy(obj, "n1")
        except ValueError:
            pass  # the agent's cache refuses it: a typed refusal
        except RecursionError:
            # Only past the depth cap, which the informer checks before slim_policy runs.
            assert limits.nesting_depth(obj) > limits.MAX_DEPTH
    try:
        policy = parse_policy(obj, admin_namespace=ADMIN)
    except PolicyValidationError:
        return
    assert not problems
    state = desired_attachments([policy], pods, nodes, "n1", ADMIN)
    for prefix, hooks in state.attachments.items():
        assert isinstance(prefix, ipaddress.IPv4Network | ipaddress.IPv6Network)
        assert set(hooks) <= {"in", "out", "xmit"}


@seed(SEED)
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(path=st.sampled_from(PATHS), value=JSON | BOMBS,
       namespace=st.sampled_from(["shop", ADMIN, "", "default"]), pods=PODS, nodes=NODES)
def test_hostile_policies_get_typed_refusals(path: tuple[str, ...], value: Any,
                                            namespace: str, pods: list[Any],
                                            nodes: list[Any]) -> None:
    _through_everything(replace_at(_base(namespace), path, value), pods, nodes)


@seed(SEED)
@settings(max_examples=EXAMPLES // 5, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(value=JSON | BOMBS, path=st.sampled_from(PATHS))
def test_hostile_wire_and_yaml_documents(tmp_path_factory: Any, value: Any,
                                         path: tuple[str, ...]) -> None:
    """The same objects as the API would send them (JSON, decoded without recursion) and as
    standalone files (YAML, through the manifest reader)."""
    obj = replace_at(_base("shop"), path, value)
    depth = limits.nesting_depth(obj, 5000)
    text = json.dumps(obj) if depth < 900 else None  # json.dumps itself recurses
    if text is not None:
        decoded = limits.loads(text)
        _through_everything(decoded, [], [])
        directory: Path = tmp_path_factory.mktemp("docs")
        path_ = directory / "policy.yaml"
        path_.write_text(yaml.safe_dump(decoded) if depth < 200 else text)
        try:
            objects = load_cluster_objects([path_])
        except ManifestError:
            return
        for located in objects.policies:
            _through_everything(located.obj, [], [])
