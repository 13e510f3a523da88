"""Typed errors of the route engine.

Every refusal names the destination and tells the operator what to do about it. A refusal
is raised before anything is sent to the kernel, so a refused request changes nothing.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import Destination


class RouteError(Exception):
    """Base class of every route-engine error (CLI exit code 1 unless noted)."""

    exit_code = 1


class BadRequestError(RouteError):
    """The request itself is wrong (CLI exit code 2)."""

    exit_code = 2


class UnknownDestinationError(BadRequestError):
    """No route in the table delivers to the destination."""


class ForeignEncapError(RouteError):
    """The route already carries an LWT encap that this project did not put there."""


class HeadroomError(BadRequestError):
    """Headroom outside 0..256, or headroom asked for a hook other than xmit."""


class MultipathRouteError(RouteError):
    """The route has several nexthops; a bpf encap on it would be silently dropped."""


class MissingDeviceError(RouteError):
    """The route has no output device (blackhole/unreachable/prohibit) or it vanished."""


class UnsupportedRouteError(RouteError):
    """A route shape the engine refuses to touch (nexthop objects, non-unicast types...)."""


class NetnsNotFoundError(BadRequestError):
    """The named network namespace does not exist."""


class LabelError(BadRequestError):
    """A label cannot be built from the given owner/program."""


class NetlinkError(RouteError):
    """The kernel refused a netlink request."""

    def __init__(self, errno: int, message: str, extack: str | None = None) -> None:
        self.errno = errno
        self.extack = extack
        detail = f" ({extack})" if extack else ""
        super().__init__(f"{message}: errno {errno}{detail}")


class BatchError(RouteError):
    """Some routes of a batch failed; the rest were applied. .failures maps dst -> error."""

    def __init__(self, failures: dict[Destination, RouteError]) -> None:
        self.failures = failures
        first = next(iter(failures.items()))
        super().__init__(
            f"{len(failures)} route(s) failed, first {first[0]}: {first[1]}; "
            "re-run the request to retry them (applied routes are not touched again)"
        )
