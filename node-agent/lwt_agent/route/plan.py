"""Pure planning: (what is wanted, what the kernel has) -> the route changes to make.

No I/O here: the planner works on ObservedRoute values (from netlink.py or built by a unit
test) and returns RouteAction values that netlink.py turns into messages. Every refusal is
decided here, before anything is sent, so a refused destination is never touched.

Batches of 10,000 routes go through here in tens of milliseconds: everything shared by
many routes (wire labels, the encap of a set of programs) is computed once and memoized.
"""
from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from . import labels
from .errors import (
    BadRequestError,
    ForeignEncapError,
    MissingDeviceError,
    MultipathRouteError,
    RouteError,
    UnknownDestinationError,
    UnsupportedRouteError,
)
from .model import (
    HOOK_ORDER,
    LWTUNNEL_ENCAP_BPF,
    RTN_UNICAST,
    Destination,
    EncapSpec,
    HookProgram,
    ObservedRoute,
    ProgramRef,
)
from .resolve import RouteIndex

# rtm_type values of routes that deliver nothing (no device to carry an encap).
_NO_DEVICE_TYPES = {6: "blackhole", 7: "unreachable", 8: "prohibit", 9: "throw"}


class Kind(enum.Enum):
    ATTACH = "attach"  # plain route -> route with encap
    SWAP = "swap"  # encap -> other encap, one atomic replace
    DETACH = "detach"  # encap -> the plain route it was
    CREATE_OWNED = "create-owned"  # new /32 (/128) with encap, copied from a subnet route
    DELETE_OWNED = "delete-owned"  # remove our /32 (/128)
    UNCHANGED = "unchanged"  # already right (adopted): nothing is sent


@dataclass(slots=True)
class RouteIntent:
    """What one destination should carry.

    ``hooks`` maps a hook to the program it must run, or to None to remove our program
    from that hook. Hooks not named keep what they have (unless a ``gc_owners`` owner put
    it there: see :func:`make_plan`). ``headroom`` applies to ``xmit``.
    Share one ``hooks`` mapping between the intents of a batch: the planner memoizes by it.
    """

    dst: Destination
    hooks: Mapping[str, ProgramRef | None]
    headroom: int = 0
    force: bool = False


@dataclass(slots=True)
class RouteAction:
    kind: Kind
    dst: Destination
    route: ObservedRoute  # the route to rewrite/delete, or the template of an owned route
    encap: EncapSpec | None


@dataclass
class Plan:
    actions: list[RouteAction] = field(default_factory=list)
    refusals: dict[Destination, RouteError] = field(default_factory=dict)

    @property
    def changes(self) -> list[RouteAction]:
        return [a for a in self.actions if a.kind is not Kind.UNCHANGED]

    def counts(self) -> dict[str, int]:
        counts = {kind.value: 0 for kind in Kind}
        for action in self.actions:
            counts[action.kind.value] += 1
        return counts


def check_route_shape(route: ObservedRoute, links: Collection[int] | None) -> None:
    """Refuse routes a bpf encap cannot (or must not) be put on."""
    if route.multipath:
        raise MultipathRouteError(
            f"route {route.dst} has several nexthops (multipath): an LWT encap cannot be "
            "attached per nexthop (pyroute2 would silently drop it); give the pod a "
            "single-nexthop route"
        )
    if route.nh_id is not None:
        raise UnsupportedRouteError(
            f"route {route.dst} uses nexthop object {route.nh_id}; the kernel does not allow "
            "an encap beside a nexthop id — put the encap on the nexthop or use a plain route"
        )
    if route.type in _NO_DEVICE_TYPES:
        raise MissingDeviceError(
            f"route {route.dst} is a {_NO_DEVICE_TYPES[route.type]} route: it has no device "
            "to carry a program; the pod's route must point at its interface"
        )
    if route.type != RTN_UNICAST:
        raise UnsupportedRouteError(
            f"route {route.dst} has type {route.type}; only unicast routes carry programs"
        )
    if route.oif is None or (links is not None and route.oif not in links):
        raise MissingDeviceError(
            f"the device of route {route.dst} (ifindex {route.oif}) does not exist; the pod "
            "interface is gone or being re-created — retry once the CNI has set it up"
        )


class _Planner:
    """make_plan's memo: wire labels and encaps are computed once per distinct input."""

    def __init__(self, gc_owners: frozenset[str]) -> None:
        self.gc_owners = gc_owners
        self._wanted: dict[tuple[int, int], dict[str, HookProgram | None]] = {}
        self._held: list[object] = []
        self.known_fds: dict[str, int] = {}  # wire label -> fd of programs the intents carry
        self._wanted_encap: dict[int, EncapSpec | None] = {}
        self._label_items: dict[int, tuple[tuple[str, str], ...]] = {}
        self._encaps: dict[tuple[object, ...], EncapSpec] = {}
        self._current: dict[tuple[tuple[str, str], ...], tuple[dict[str, str], list[str]]] = {}

    def wanted(
        self, hooks: Mapping[str, ProgramRef | None], headroom: int
    ) -> dict[str, HookProgram | None]:
        key = (id(hooks), headroom)
        found = self._wanted.get(key)
        if found is None:
            found = {}
            for hook, program in hooks.items():
                if hook not in HOOK_ORDER:
                    raise BadRequestError(f"hook {hook!r} is not one of in, out, xmit")
                room = headroom if hook == "xmit" else 0
                labels.check_headroom(hook, room)
                if program is None:
                    found[hook] = None
                else:
                    found[hook] = HookProgram(
                        labels.wire_label(program.label, hook, room), fd=program.fd
                    )
            if headroom and "xmit" not in hooks:
                labels.check_headroom("out", headroom)  # raises: headroom is for xmit only
            self._wanted[key] = found
            self._held.append(hooks)  # keeps id(hooks) unique while memoized
        return found

    def current(self, route: ObservedRoute) -> tuple[dict[str, str], list[str]]:
        """(our hooks -> label, foreign hook descriptions) of a route's encap."""
        if route.encap_type is None:
            return {}, []
        if route.encap_type != LWTUNNEL_ENCAP_BPF:
            return {}, [f"encap type {route.encap_type}"]
        key = tuple(route.encap_labels.items())
        found = self._current.get(key)
        if found is None:
            ours: dict[str, str] = {}
            foreign: list[str] = []
            for hook, label in key:
                parsed = labels.parse(label)
                if parsed is None or parsed.hook != hook:
                    foreign.append(f"{hook}={label!r}")
                else:
                    ours[hook] = label
            found = (ours, foreign)
            self._current[key] = found
        return found

    def encap(self, hooks: Mapping[str, HookProgram]) -> EncapSpec | None:
        if not hooks:
            return None
        ordered = tuple((hook, hooks[hook]) for hook in HOOK_ORDER if hook in hooks)
        key = tuple((h, p.label, p.fd, p.prog_id) for h, p in ordered)
        found = self._encaps.get(key)
        if found is None:
            headroom = 0
            if "xmit" in hooks:
                parsed = labels.parse(hooks["xmit"].label)
                headroom = parsed.headroom if parsed else 0
            found = EncapSpec(ordered, headroom)
            self._encaps[key] = found
            self._label_items[id(found)] = tuple((h, p.label) for h, p in ordered)
        return found

    def route(
        self,
        dst: Destination,
        route: ObservedRoute | None,
        template: ObservedRoute | None,
        wanted: Mapping[str, HookProgram | None],
        force: bool,
    ) -> RouteAction | None:
        ours, foreign = self.current(route) if route is not None else ({}, [])
        if foreign and not force:
            raise ForeignEncapError(
                f"route {dst} carries an LWT encap that is not ours ({', '.join(foreign)}); "
                "another tool manages it — detach it there, or pass --force to replace it"
            )
        kept: dict[str, HookProgram] = {}
        for hook, label in ours.items():
            if hook in wanted:
                continue  # replaced or removed below
            parsed = labels.parse(label)
            assert parsed is not None
            if parsed.owner in self.gc_owners:
                continue  # ours, managed by this caller, no longer wanted
            fd = self.known_fds.get(label)
            if fd is not None:  # a program this request holds open: no open-by-id needed
                kept[hook] = HookProgram(label=label, fd=fd)
            else:  # re-opened by id when applied (BPF_PROG_GET_FD_BY_ID: CAP_SYS_ADMIN)
                kept[hook] = HookProgram(label=label, prog_id=parsed.prog_id)
        if kept:
            hooks = kept
            for hook, program in wanted.items():
                if program is not None:
                    hooks[hook] = program
            encap = self.encap(hooks)
        else:  # the common case: the intent names every hook; memoized per intent mapping
            key = id(wanted)
            if key in self._wanted_encap:
                encap = self._wanted_encap[key]
            else:
                encap = self.encap({h: p for h, p in wanted.items() if p is not None})
                self._wanted_encap[key] = encap
        if route is None:
            if encap is None:
                return None  # nothing attached and nothing wanted
            assert template is not None
            return RouteAction(Kind.CREATE_OWNED, dst, template, encap)
        if route.encap_type is None:
            if encap is None:
                return RouteAction(Kind.UNCHANGED, dst, route, None)
            return RouteAction(Kind.ATTACH, dst, route, encap)
        if (
            encap is not None
            and route.encap_type == LWTUNNEL_ENCAP_BPF
            and tuple(route.encap_labels.items()) == self._label_items[id(encap)]
        ):
            return RouteAction(Kind.UNCHANGED, dst, route, encap)
        if encap is None:
            return RouteAction(
                Kind.DELETE_OWNED if route.owned else Kind.DETACH, dst, route, None
            )
        return RouteAction(Kind.SWAP, dst, route, encap)


def make_plan(
    intents: Iterable[RouteIntent],
    routes: Iterable[ObservedRoute] | RouteIndex,
    links: Collection[int] | None = None,
    *,
    gc_owners: Collection[str] = (),
) -> Plan:
    """Plan the changes that make ``routes`` carry what ``intents`` ask.

    ``links``: ifindexes that exist (None: do not check). ``gc_owners``: owner tokens
    (labels.owner_token) whose attachments the caller manages completely: a hook of theirs
    that no intent asks for is removed, on every route of the table (garbage collection
    after a restart). Destinations are refused one by one; refusals never stop the others.
    """
    index = routes if isinstance(routes, RouteIndex) else RouteIndex(routes)
    planner = _Planner(frozenset(gc_owners))
    intents = list(intents)
    _collect_known_fds(intents, planner)
    plan = Plan()
    seen: set[tuple[bytes, int]] = set()
    actions = plan.actions
    exact = index.exact
    for intent in intents:
        dst = intent.dst
        if dst.key in seen:
            plan.refusals[dst] = BadRequestError(f"destination {dst} is given twice")
            continue
        seen.add(dst.key)
        try:
            wanted = planner.wanted(intent.hooks, intent.headroom)
            existing = exact.get(dst.key)
            if existing is not None:  # fast path: the host route exists
                check_route_shape(existing, links)
                action = planner.route(dst, existing, None, wanted, intent.force)
            else:
                resolved = index.resolve(dst)
                template = resolved.route or resolved.template
                check_route_shape(template, links)  # type: ignore[arg-type]
                action = planner.route(dst, resolved.route, resolved.template, wanted,
                                       intent.force)
        except UnknownDestinationError as exc:
            if all(p is None for p in intent.hooks.values()):
                continue  # removing from a route that is gone: nothing to do
            plan.refusals[dst] = exc
            continue
        except RouteError as exc:
            plan.refusals[dst] = exc
            continue
        if action is not None:
            actions.append(action)
    if gc_owners:
        _plan_garbage(index, planner, seen, plan)
    return plan


def _collect_known_fds(intents: list[RouteIntent], planner: _Planner) -> None:
    """Every program the intents carry, by wire label: a hook kept on one route may be a
    program another intent names (two policies, two hooks, one route)."""
    seen: set[tuple[int, int]] = set()
    for intent in intents:
        key = (id(intent.hooks), intent.headroom)
        if key in seen:
            continue
        seen.add(key)
        for hook, program in intent.hooks.items():
            if program is None or hook not in HOOK_ORDER:
                continue
            try:
                room = intent.headroom if hook == "xmit" else 0
                planner.known_fds[labels.wire_label(program.label, hook, room)] = program.fd
            except RouteError:
                continue  # make_plan refuses this intent with the same error


def _plan_garbage(
    index: RouteIndex, planner: _Planner, keep: set[tuple[bytes, int]], plan: Plan
) -> None:
    """Remove hooks of managed owners from routes no intent names."""
    for route in index.routes():
        if route.dst.key in keep or route.encap_type != LWTUNNEL_ENCAP_BPF:
            continue
        mine = [
            hook
            for hook, label in route.encap_labels.items()
            if (parsed := labels.parse(label)) is not None and parsed.owner in planner.gc_owners
        ]
        if not mine:
            continue
        try:
            # force=False: a route mixing foreign hooks with ours is reported, not wiped.
            action = planner.route(route.dst, route, None, dict.fromkeys(mine), False)
        except RouteError as exc:
            plan.refusals[route.dst] = exc
            continue
        if action is not None:
            plan.actions.append(action)
