"""Pure route resolution: which host route delivers to a destination.

- A destination that is exactly the prefix of a route (the CNI's ``/32 dev caliX scope
  link``, or any CIDR given exactly) resolves to that route.
- A host address (bare IP, /32, /128) that only a wider route reaches (bridge CNIs:
  ``10.244.1.0/24 dev cni0``) resolves to an *owned* host route: a /32 (/128) the engine
  creates with the wider route's device, scope, gateway and table, marked ``RTPROT_LWT``.
- Anything else (no route, only the default route, a wider CIDR that is no route) is an
  unknown destination.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .errors import BadRequestError, UnknownDestinationError
from .model import Destination, IPNetwork, ObservedRoute


@dataclass(frozen=True, slots=True)
class Resolved:
    """Where an attachment for ``dst`` lives.

    ``route`` is the existing host route (CNI or owned) when there is one; otherwise
    ``template`` is the wider route an owned host route would be copied from.
    """

    dst: Destination
    route: ObservedRoute | None
    template: ObservedRoute | None


def parse_destination(value: str | IPNetwork | Destination) -> Destination:
    """'10.1.2.3', '10.1.2.3/32', 'fd00::5', '10.1.0.0/24' -> Destination (host bits refused)."""
    try:
        return Destination.of(value)
    except ValueError as exc:
        raise BadRequestError(
            f"destination {value!r} is not an IP address or CIDR ({exc}); "
            "give a pod IP or a route prefix such as 10.244.1.7 or 10.244.1.0/24"
        ) from None


class RouteIndex:
    """Routes of one table, indexed for exact and longest-prefix lookups."""

    def __init__(self, routes: Iterable[ObservedRoute]) -> None:
        self.exact: dict[tuple[bytes, int], ObservedRoute] = {}
        wider: list[ObservedRoute] = []
        exact = self.exact
        for route in routes:
            key = route.dst.key
            best = exact.get(key)
            # Several routes may share a prefix (metric/tos): the kernel uses the lowest metric.
            if best is None or (route.metric or 0) < (best.metric or 0):
                exact[key] = route
            if not route.dst.is_host:
                wider.append(route)
        wider.sort(key=lambda r: r.dst.prefixlen, reverse=True)
        self._wider = wider

    def routes(self) -> Iterable[ObservedRoute]:
        return self.exact.values()

    def covering(self, dst: Destination) -> ObservedRoute | None:
        """The longest non-default prefix strictly containing ``dst`` (same family)."""
        for route in self._wider:
            if 0 < route.dst.prefixlen < dst.prefixlen and dst.within(route.dst):
                return route
        return None

    def resolve(self, dst: Destination) -> Resolved:
        route = self.exact.get(dst.key)
        if route is not None:
            return Resolved(dst, route, None)
        if dst.is_host:
            template = self.covering(dst)
            if template is not None:
                return Resolved(dst, None, template)
        raise UnknownDestinationError(
            f"no route delivers to {dst} in this table (only the default route or none); "
            "check the pod IP, the --netns and that the CNI has created the pod's route"
        )
