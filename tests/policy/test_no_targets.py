"""Zero targeted routes is Ready with its own reason, for the operator and standalone alike
(one `ready_condition`): a selector typo or pods on another node must not look like success."""
from __future__ import annotations

from lwt_policy import contract
from lwt_policy.status import ready_condition


def test_no_targeted_route_is_its_own_reason() -> None:
    nothing = ready_condition({"node-a": None, "node-b": None}, 3, 0, 0)
    assert nothing.status and nothing.reason == contract.NO_TARGETS
    assert "no route is targeted" in nothing.message and "podSelector" in nothing.message
    some = ready_condition({"node-a": None}, 3, 4, 4)
    assert some.status and some.reason == contract.ALL_NODES_READY
    failing = ready_condition({"node-a": "error: x"}, 3, 0, 0)
    assert not failing.status and failing.reason == contract.NODES_NOT_READY
