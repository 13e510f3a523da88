"""Whatever a user applies, validation answers with problems, never with a crash."""
from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lwt_policy.errors import Problem
from lwt_policy.model import validate_policy

from tests.policy.conftest import base_policy

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-300, 70000) | st.text(max_size=8)
    | st.sampled_from(["in", "out", "xmit", "In", "Exists", "local", "counters", "encap"]),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(["program", "builtin", "configMap", "headroom",
                                       "config", "matchLabels", "matchExpressions", "key",
                                       "operator", "values", "name", "section", "sha256",
                                       "x"]), children, max_size=3),
    max_leaves=8,
)

# cel-python raises the recursion limit when its environment is created: do it before
# hypothesis runs, which warns about limits changed under it.
validate_policy(base_policy())

PATHS = [(), ("spec",), ("spec", "hooks"), ("spec", "hooks", "out"),
         ("spec", "hooks", "out", "program"), ("spec", "hooks", "out", "config"),
         ("spec", "podSelector"), ("spec", "podSelector", "matchLabels"),
         ("spec", "nodeSelector"), ("spec", "priority"), ("metadata",),
         ("spec", "hooks", "xmit"), ("spec", "podSubnets")]


def replace_at(obj: dict[str, Any], path: tuple[str, ...], value: Any) -> Any:
    """A deep copy of `obj` with `value` at `path` (intermediate non-objects become {})."""
    if not path:
        return value
    out = copy.deepcopy(obj)
    node = out
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[path[-1]] = value
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(PATHS), value=JSON)
def test_validation_never_crashes(path: tuple[str, ...], value: Any) -> None:
    problems = validate_policy(replace_at(base_policy(), path, value))
    assert all(isinstance(p, Problem) and p.message for p in problems)
