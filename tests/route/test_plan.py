"""Pure tests of labels and the planner (no kernel: ObservedRoute values built by hand)."""
from __future__ import annotations

import socket

import pytest
from lwt_agent.route import (
    RTPROT_LWT,
    ForeignEncapError,
    HeadroomError,
    Kind,
    LabelError,
    MissingDeviceError,
    MultipathRouteError,
    ProgramRef,
    RouteIntent,
    UnknownDestinationError,
    UnsupportedRouteError,
    labels,
    make_plan,
)
from lwt_agent.route.model import Destination, ObservedRoute

TAG = "fa1ab51cccf40642"


def route(dst: str, *, oif: int | None = 5, proto: int = 80, rtype: int = 1,
          encap: dict[str, str] | None = None, encap_type: int | None = None,
          multipath: bool = False, nh_id: int | None = None, metric: int | None = None
          ) -> ObservedRoute:
    d = Destination.of(dst)
    if encap is not None and encap_type is None:
        encap_type = 6
    return ObservedRoute(d.family, d, 254, proto, 253, rtype, oif, metric=metric,
                         multipath=multipath, nh_id=nh_id, encap_type=encap_type,
                         encap_labels=encap or {})


def ref(owner: str = "shop/web", hook: str = "out", prog_id: int = 42, fd: int = 7) -> ProgramRef:
    return ProgramRef(fd, labels.program_label(owner, hook, TAG, prog_id))


def intent(dst: str, hooks: dict[str, ProgramRef | None], **kw: object) -> RouteIntent:
    return RouteIntent(Destination.of(dst), hooks, **kw)  # type: ignore[arg-type]


# --- labels --------------------------------------------------------------------------------

def test_label_format_and_parse_back() -> None:
    label = labels.program_label("shop/web", "out", TAG, 42)
    assert label == "lwt/shop/web/out/fa1ab51c.42"
    parsed = labels.parse(label)
    assert parsed == labels.Label("shop/web", "out", "fa1ab51c", 42, 0)
    assert labels.wire_label(label, "out", 0) == label
    xmit = labels.wire_label(labels.program_label("cli", "xmit", TAG, 9), "xmit", 34)
    assert xmit == "lwt/cli/xmit/fa1ab51c.9+h34"
    assert labels.parse(xmit).headroom == 34  # type: ignore[union-attr]


def test_long_owner_is_hashed_and_label_fits() -> None:
    owner = "ns-" + "x" * 300 + "/policy"
    label = labels.program_label(owner, "xmit", TAG, 4294967295)
    label = labels.wire_label(label, "xmit", 256)
    assert len(label.encode()) <= 255
    token = labels.owner_token(owner)
    assert "~" in token and labels.parse(label).owner == token  # type: ignore[union-attr]
    assert labels.owner_token(owner + "2") != token  # hashing keeps owners apart


@pytest.mark.parametrize("text", [
    "route_out.o:[lwt_out/drop_a]", "lwt/x/out/zzzzzzzz.1", "lwt/x/in/fa1ab51c.1+h5",
    "lwt/x/xmit/fa1ab51c.1+h300", "lwt//out/fa1ab51c.1x", "other-tool",
])
def test_foreign_labels_do_not_parse(text: str) -> None:
    assert labels.parse(text) is None


def test_label_refusals() -> None:
    with pytest.raises(LabelError):
        labels.program_label("bad owner", "out", TAG, 1)
    with pytest.raises(LabelError):
        labels.program_label("ok", "sideways", TAG, 1)
    with pytest.raises(HeadroomError):
        labels.wire_label(labels.program_label("ok", "xmit", TAG, 1), "xmit", 257)
    with pytest.raises(HeadroomError):
        labels.wire_label(labels.program_label("ok", "out", TAG, 1), "out", 14)


# --- plan ----------------------------------------------------------------------------------

def test_attach_swap_unchanged_detach() -> None:
    a, b = ref(prog_id=1), ref(prog_id=2)
    plain = [route("10.0.0.1/32")]
    (act,) = make_plan([intent("10.0.0.1", {"out": a})], plain).actions
    assert act.kind is Kind.ATTACH and act.encap.labels() == {"out": a.label}  # type: ignore[union-attr]
    with_a = [route("10.0.0.1/32", encap={"out": a.label})]
    assert make_plan([intent("10.0.0.1", {"out": a})], with_a).actions[0].kind is Kind.UNCHANGED
    assert make_plan([intent("10.0.0.1", {"out": b})], with_a).actions[0].kind is Kind.SWAP
    assert make_plan([intent("10.0.0.1", {"out": None})], with_a).actions[0].kind is Kind.DETACH


def test_other_hooks_are_kept_by_program_id() -> None:
    existing = [route("10.0.0.1/32", encap={"in": ref(hook="in", prog_id=3).label})]
    (act,) = make_plan([intent("10.0.0.1", {"out": ref(prog_id=4, fd=9)})], existing).actions
    assert act.kind is Kind.SWAP
    hooks = dict(act.encap.hooks)  # type: ignore[union-attr]
    assert hooks["in"].prog_id == 3 and hooks["in"].fd is None
    assert hooks["out"].fd == 9


def test_owned_route_for_subnet_pod_and_its_removal() -> None:
    subnet = [route("10.1.0.0/24", proto=2)]
    (act,) = make_plan([intent("10.1.0.7", {"out": ref()})], subnet).actions
    assert act.kind is Kind.CREATE_OWNED and str(act.dst) == "10.1.0.7/32"
    owned = [*subnet, route("10.1.0.7/32", proto=RTPROT_LWT, encap={"out": ref().label})]
    (act,) = make_plan([intent("10.1.0.7", {"out": None})], owned).actions
    assert act.kind is Kind.DELETE_OWNED
    # Nothing to remove where nothing was attached.
    assert make_plan([intent("10.1.0.8", {"out": None})], subnet).actions == []


def test_ipv6_resolution() -> None:
    routes = [route("fd00:1::/64"), route("fd00:2::5/128")]
    plan = make_plan([intent("fd00:1::9", {"out": ref()}), intent("fd00:2::5", {"out": ref()})],
                     routes)
    assert [a.kind for a in plan.actions] == [Kind.CREATE_OWNED, Kind.ATTACH]
    assert plan.actions[0].dst.family == socket.AF_INET6


def test_refusals_per_destination() -> None:
    routes = [
        route("10.0.0.1/32"),
        route("10.0.0.2/32", encap={"out": "someone-else"}),
        route("10.0.0.3/32", multipath=True, oif=None),
        route("10.0.0.4/32", rtype=6, oif=None),
        route("10.0.0.5/32", nh_id=12, oif=None),
        route("10.0.0.6/32", oif=99),
        route("10.0.0.7/32", encap_type=1),  # an MPLS encap
        route("0.0.0.0/0"),
    ]
    wanted = {"out": ref()}
    dsts = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6",
            "10.0.0.7", "10.9.9.9", "10.0.0.0/24"]
    plan = make_plan([intent(d, wanted) for d in dsts], routes, links={5})
    assert [str(a.dst) for a in plan.actions] == ["10.0.0.1/32"]
    errors = {str(dst): type(err) for dst, err in plan.refusals.items()}
    assert errors == {
        "10.0.0.2/32": ForeignEncapError, "10.0.0.3/32": MultipathRouteError,
        "10.0.0.4/32": MissingDeviceError, "10.0.0.5/32": UnsupportedRouteError,
        "10.0.0.6/32": MissingDeviceError, "10.0.0.7/32": ForeignEncapError,
        "10.9.9.9/32": UnknownDestinationError, "10.0.0.0/24": UnknownDestinationError,
    }
    forced = make_plan([intent("10.0.0.2", wanted, force=True)], routes, links={5})
    assert forced.actions[0].kind is Kind.SWAP


def test_headroom_only_for_xmit() -> None:
    routes = [route("10.0.0.1/32")]
    plan = make_plan([intent("10.0.0.1", {"out": ref()}, headroom=14)], routes)
    assert isinstance(plan.refusals[Destination.of("10.0.0.1/32")], HeadroomError)
    xmit = ref(hook="xmit")
    (act,) = make_plan([intent("10.0.0.1", {"xmit": xmit}, headroom=20)], routes).actions
    assert act.encap.headroom == 20 and act.encap.labels()["xmit"].endswith("+h20")  # type: ignore[union-attr]


def test_reconcile_adopts_and_collects_garbage() -> None:
    mine, theirs = ref("shop/web", prog_id=1), ref("shop/api", prog_id=2)
    routes = [
        route("10.0.0.1/32", encap={"out": mine.label}),  # right already
        route("10.0.0.2/32", encap={"out": mine.label}),  # no longer wanted
        route("10.0.0.3/32", encap={"out": theirs.label}),  # another owner: kept
        route("10.0.0.4/32", proto=RTPROT_LWT, encap={"out": mine.label}),  # owned, unwanted
        route("10.0.0.5/32"),
    ]
    plan = make_plan([intent("10.0.0.1", {"out": mine}), intent("10.0.0.5", {"out": mine})],
                     routes, gc_owners={"shop/web"})
    kinds = {str(a.dst): a.kind for a in plan.actions}
    assert kinds == {"10.0.0.1/32": Kind.UNCHANGED, "10.0.0.5/32": Kind.ATTACH,
                     "10.0.0.2/32": Kind.DETACH, "10.0.0.4/32": Kind.DELETE_OWNED}


def test_duplicate_destinations_refused() -> None:
    plan = make_plan([intent("10.0.0.1", {"out": ref()}), intent("10.0.0.1/32", {"out": ref()})],
                     [route("10.0.0.1/32")])
    refused = plan.refusals[Destination.of("10.0.0.1/32")]
    assert len(plan.actions) == 1 and "given twice" in str(refused)


def test_kept_hook_uses_an_fd_the_request_holds() -> None:
    """Two owners, two hooks, one route: no open-by-id (CAP_SYS_ADMIN) when the request
    carries both programs."""
    web_in, api_out = ref("shop/web", "in", prog_id=5, fd=50), ref("shop/api", prog_id=6, fd=60)
    routes = [route("10.0.0.1/32", encap={"in": web_in.label}), route("10.0.0.2/32")]
    plan = make_plan([intent("10.0.0.1", {"out": api_out}), intent("10.0.0.2", {"in": web_in})],
                     routes)
    hooks = dict(plan.actions[0].encap.hooks)  # type: ignore[union-attr]
    assert hooks["in"].fd == 50 and hooks["in"].prog_id is None
    assert hooks["out"].fd == 60
