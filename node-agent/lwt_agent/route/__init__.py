"""Attaching LWT BPF programs to routes: resolution, labels, plan, batches, guard.

No Kubernetes here. ``netlink.py`` is the only netlink I/O; ``plan.py`` is pure.
"""
from .engine import ApplyResult, RouteEngine
from .errors import (
    BadRequestError,
    BatchError,
    FailurePolicyError,
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
from .model import RTPROT_LWT, FailurePolicy, ObservedRoute, ProgramRef, Unavailable
from .plan import Kind, Plan, RouteIntent, apply_failure_policy, make_plan

__all__ = [
    "RTPROT_LWT",
    "ApplyResult",
    "BadRequestError",
    "BatchError",
    "FailurePolicy",
    "FailurePolicyError",
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
    "Unavailable",
    "UnknownDestinationError",
    "UnsupportedRouteError",
    "apply_failure_policy",
    "make_plan",
]
