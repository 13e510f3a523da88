"""The reconciler's pure steps (agent/steps.py): no kernel, no engine, no store."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from lwt_agent.agent.admission import PolicyView
from lwt_agent.agent.steps import attached_programs, node_result, route_intents
from lwt_agent.route import ProgramRef, RouteError
from lwt_agent.route.model import Destination
from lwt_policy.status import NodeError

from tests.policy.test_targets import desired, pod, policy

NOW = dt.datetime(2026, 12, 2, 1, 0, tzinfo=dt.UTC)
XMIT = {"xmit": {"program": {"builtin": "counters"}, "headroom": 24}}


@dataclass(frozen=True)
class Program:
    id: int
    label: str
    fallback: bool = False
    tag: str = "ab" * 8

    @property
    def ref(self) -> ProgramRef:
        return ProgramRef(100 + self.id, self.label)


def view(p, **kw) -> PolicyView:  # type: ignore[no-untyped-def]
    return PolicyView(p.ref, p, p.generation, **kw)


def test_intents_carry_each_hooks_program_and_share_one_mapping() -> None:
    web = policy("web")
    state = desired([web], [pod("a", ["10.244.1.7"]), pod("b", ["10.244.1.8", "fd00::8"])])
    prog = Program(7, "lwt/shop/web/out/abababab.7")
    intents = route_intents(state, {(web.ref, "out"): prog})
    assert sorted(str(i.dst) for i in intents) == ["10.244.1.7/32", "10.244.1.8/32",
                                                    "fd00::8/128"]
    assert all(i.hooks == {"out": prog.ref} for i in intents)
    assert len({id(i.hooks) for i in intents}) == 1  # the planner memoizes per mapping


def test_a_hook_without_a_program_stays_plain_and_fallbacks_get_no_headroom() -> None:
    web = policy("web", hooks=XMIT)
    state = desired([web], [pod("a", ["10.244.1.7"])])
    (plain,) = route_intents(state, {(web.ref, "xmit"): None})
    assert plain.hooks == {"xmit": None} and plain.headroom == 0
    own = Program(7, "lwt/shop/web/xmit/abababab.7")
    (mine,) = route_intents(state, {(web.ref, "xmit"): own})
    assert mine.headroom == 24
    drop = Program(8, "lwt/shop/web/xmit/abababab.8", fallback=True)
    (closed,) = route_intents(state, {(web.ref, "xmit"): drop})
    assert closed.hooks == {"xmit": drop.ref} and closed.headroom == 0


def test_node_result_counts_routes_with_the_policys_own_program() -> None:
    web = policy("web")
    state = desired([web], [pod("a", ["10.244.1.7"]), pod("b", ["10.244.1.8"])])
    prog = Program(7, "lwt/shop/web/out/abababab.7")
    ok = node_result(view(web), state, {(web.ref, "out"): prog}, {}, {}, False, NOW)
    assert (ok.routes, ok.attached_routes, ok.last_error) == (2, 2, None)
    assert ok.programs["out"].id == 7 and ok.updated_at == NOW
    failed = {Destination.of("10.244.1.8/32"): RouteError("no such device")}
    half = node_result(view(web), state, {(web.ref, "out"): prog}, {}, failed, False, NOW)
    assert half.attached_routes == 1
    assert half.last_error == NodeError("route 10.244.1.8/32: no such device")
    closed = Program(8, "lwt/shop/web/out/abababab.8", fallback=True)
    broken = {web.ref: NodeError("verifier: no")}
    entry = node_result(view(web), state, {(web.ref, "out"): closed}, broken, failed, False,
                        NOW)
    assert entry.attached_routes == 0 and entry.programs == {}  # drop-all is not its program
    assert entry.last_error == NodeError("verifier: no")  # the program's error comes first
    refused = node_result(view(web, error=NodeError("refused: x")), state, {}, broken, {},
                          False, NOW)
    assert refused.last_error == NodeError("refused: x")


def test_node_result_of_a_deleting_policy_says_whether_it_is_detached() -> None:
    web = policy("web", deleting=True)
    gone = PolicyView(web.ref, None, 3, deleting=True)
    assert node_result(gone, desired([], []), {}, {}, {}, False, NOW).detached
    assert not node_result(gone, desired([], []), {}, {}, {}, True, NOW).detached


def test_node_result_counts_lost_routes_as_conflicts_not_as_missing() -> None:
    strong, weak = policy("a", priority=1), policy("b", priority=5)
    state = desired([strong, weak], [pod("a", ["10.244.1.7"])])
    progs = {(strong.ref, "out"): Program(1, "lwt/shop/a/out/abababab.1")}
    entry = node_result(view(weak), state, progs, {}, {}, False, NOW)
    assert (entry.routes, entry.attached_routes) == (1, 0)
    assert [(c.hook, c.winner, c.routes) for c in entry.conflicts] == [("out", "shop/a", 1)]


def test_attached_programs_name_the_pods_they_run_for() -> None:
    web = policy("web")
    state = desired([web], [pod("a", ["10.244.1.7", "fd00::7"])])
    prog = Program(7, "lwt/shop/web/out/abababab.7")
    (item,) = attached_programs(state, {(web.ref, "out"): prog, (web.ref, "in"): None})
    assert (item.policy, item.hook, item.program) == (web.ref, "out", prog)
    assert item.destinations == {"10.244.1.7": "shop/a", "fd00::7": "shop/a"}
