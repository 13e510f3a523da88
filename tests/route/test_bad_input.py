"""Bad input gets a typed error with advice, and changes nothing."""
from __future__ import annotations

import pytest
from lwt_agent.route import (
    ForeignEncapError,
    HeadroomError,
    MissingDeviceError,
    MultipathRouteError,
    NetnsNotFoundError,
    RouteEngine,
    UnknownDestinationError,
)
from lwt_agent.route.errors import BadRequestError
from lwt_agent.route.inventory import route_status
from pyroute2 import IPRoute

from tests.route.programs import TestPrograms
from tests.topology import Node, in_netns, ip, route_dump

pytestmark = pytest.mark.kernel


def test_refusals_change_nothing(node: Node, programs: TestPrograms) -> None:
    pod = node.pods[0]
    ip(node.host, "route", "add", "10.213.50.0/24", "nexthop", "dev", "cali0",
       "nexthop", "dev", "cali1")
    ip(node.host, "route", "add", "blackhole", "10.213.60.1/32")
    ip(node.host, "-6", "route", "add", "unreachable", "fd00:213:60::1/128")
    before = route_dump(node.host)
    ref = programs.out["drop_a"].ref()
    cases: list[tuple[list[str], type[Exception], str]] = [
        (["10.99.99.99"], UnknownDestinationError, "no route delivers"),
        ([pod.ipv4, "10.99.99.99"], UnknownDestinationError, "no route delivers"),  # all or none
        (["10.213.1.0/24"], UnknownDestinationError, "no route delivers"),
        (["not-an-ip"], BadRequestError, "not an IP address"),
        (["10.213.50.0/24"], MultipathRouteError, "multipath"),
        (["10.213.50.7"], MultipathRouteError, "multipath"),
        (["10.213.60.1"], MissingDeviceError, "blackhole"),
        (["fd00:213:60::1"], MissingDeviceError, "unreachable"),
    ]
    with RouteEngine(node.host) as engine:
        for dsts, error, text in cases:
            with pytest.raises(error, match=text):
                engine.attach(dsts, "out", ref)
        with pytest.raises(HeadroomError, match=r"outside 0\.\.256"):
            engine.attach([pod.ipv4], "xmit", programs.xmit.ref(), headroom=257)
        with pytest.raises(HeadroomError, match="only meaningful on the xmit hook"):
            engine.attach([pod.ipv4], "out", ref, headroom=14)
    assert route_dump(node.host) == before
    with pytest.raises(NetnsNotFoundError, match="ip netns list"):
        RouteEngine("lwtR-no-such-netns")


def test_foreign_encap_refused_unless_forced(node: Node, programs: TestPrograms) -> None:
    pod = node.pods[0]
    prog = programs.out["drop_b"]
    # Another tool's attachment: the same kind of encap, with a label that is not ours.
    with in_netns(node.host, IPRoute) as ipr:
        index = ipr.link_lookup(ifname=pod.host_if)[0]
        ipr.route("replace", dst=f"{pod.ipv4}/32", oif=index, scope=253,
                  encap={"type": "bpf", "out": {"fd": prog.fd, "name": "other-tool"}})
    before = route_dump(node.host)
    (foreign,) = [r for r in route_status(node.host) if r.dst == f"{pod.ipv4}/32"]
    assert [(h.hook, h.label, h.ours, h.program) for h in foreign.hooks] == [
        ("out", "other-tool", False, None)]
    with RouteEngine(node.host) as engine:
        with pytest.raises(ForeignEncapError, match="--force"):
            engine.attach([pod.ipv4], "out", programs.out["drop_a"].ref())
        assert route_dump(node.host) == before
        with pytest.raises(ForeignEncapError):  # detach does not touch it either
            engine.detach([pod.ipv4])
        assert route_dump(node.host) == before
        ref = programs.out["drop_a"].ref()
        result = engine.attach([pod.ipv4], "out", ref, force=True)
        assert result.counts["swap"] == 1
        (route,) = [r for r in engine.routes({4}) if str(r.dst) == f"{pod.ipv4}/32"]
        assert dict(route.encap_labels) == {"out": ref.label}
