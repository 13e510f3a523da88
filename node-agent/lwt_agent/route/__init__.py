"""Attaching LWT BPF programs to routes: resolution, labels, plan, batches, guard.

No Kubernetes here. ``netlink.py`` is the only netlink I/O; ``plan.py`` is pure.
"""
from .engine import ApplyResult, RouteEngine
from .errors import (
    BadRequestError,
    BatchError,
    ForeignEncapError,
    HeadroomError,
    LabelError,
    MissingDeviceError,
    MultipathRouteError,
    NetlinkError,
    NetnsNotFoundError,
    RouteError,
    UnknownDestinationError,
    UnsupportedRouteError,
)
from .model import RTPROT_LWT, ObservedRoute, ProgramRef
from .plan import Kind, Plan, RouteIntent, make_plan

__all__ = [
    "RTPROT_LWT",
    "ApplyResult",
    "BadRequestError",
    "BatchError",
    "ForeignEncapError",
    "HeadroomError",
    "Kind",
    "LabelError",
    "MissingDeviceError",
    "MultipathRouteError",
    "NetlinkError",
    "NetnsNotFoundError",
    "ObservedRoute",
    "Plan",
    "ProgramRef",
    "RouteEngine",
    "RouteError",
    "RouteIntent",
    "UnknownDestinationError",
    "UnsupportedRouteError",
    "make_plan",
]
