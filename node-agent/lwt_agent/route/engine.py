"""The route engine: resolve, plan, and apply attachments in batches.

It takes programs as ``ProgramRef(fd, label)`` and never loads programs itself (one
program load serves every route:
docs/kernel-facts.md#one-program-per-policy-hook-never-one-per-route). A hook kept on a
route while another hook changes uses the fd of that program when the request carries
it, else the program is re-opened by the id its label carries.
"""
from __future__ import annotations

import logging
import os
import socket
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from . import labels, netlink
from .errors import BatchError, NetlinkError, RouteError
from .inventory import ProgramOpener, open_by_id, program_info
from .model import (
    HOOK_ORDER,
    RT_TABLE_MAIN,
    Destination,
    EncapSpec,
    IPNetwork,
    ObservedRoute,
    ProgramRef,
)
from .plan import Kind, Plan, RouteAction, RouteIntent, make_plan
from .resolve import RouteIndex, parse_destination

log = logging.getLogger(__name__)

FAMILIES = {4: socket.AF_INET, 6: socket.AF_INET6}


@dataclass
class ApplyResult:
    """What an apply did: counts per action kind and the routes that failed."""

    counts: dict[str, int] = field(default_factory=dict)
    failures: dict[Destination, RouteError] = field(default_factory=dict)

    @property
    def changed(self) -> int:
        return sum(n for kind, n in self.counts.items() if kind != Kind.UNCHANGED.value)

    def to_json(self) -> dict[str, object]:
        return {
            "counts": dict(self.counts),
            "failures": {str(dst): str(err) for dst, err in self.failures.items()},
        }


class RouteEngine:
    """Attachments on the routes of one table in one network namespace."""

    def __init__(
        self,
        netns: str | None = None,
        table: int = RT_TABLE_MAIN,
        open_program_by_id: ProgramOpener = open_by_id,
    ) -> None:
        self.netns = netns
        self.table = table
        self._open_by_id = open_program_by_id
        self._sock = netlink.RouteSocket(netns)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> RouteEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- observation ---------------------------------------------------------------------

    def routes(self, versions: Collection[int] = (4, 6)) -> list[ObservedRoute]:
        found: list[ObservedRoute] = []
        for version in sorted(versions):
            found.extend(self._sock.dump_routes(FAMILIES[version], self.table))
        return found

    def links(self) -> dict[int, str]:
        return self._sock.dump_links()

    def labels_in_use(self, owner: str | None = None) -> dict[str, int]:
        """Our labels on routes of this table (only ``owner``'s, an owner token, if given)
        -> how many routes carry each. A restarted agent starts here to adopt programs."""
        found: dict[str, int] = {}
        for route in self.routes():
            for label in route.encap_labels.values():
                parsed = labels.parse(label)
                if parsed is not None and (owner is None or parsed.owner == owner):
                    found[label] = found.get(label, 0) + 1
        return found

    def reopen(self, label: str) -> ProgramRef:
        """A ProgramRef for the program a label of ours names, opened by the id it carries.

        This is how a restarted agent adopts what it attached before instead of loading a
        new copy (which would need a new label, hence a swap on every route). The kernel tag
        is checked against the label. The caller owns (closes) the returned fd.
        """
        parsed = labels.parse(label)
        if parsed is None:
            raise RouteError(f"{label!r} is not a label of ours: cannot find its program")
        try:
            info = program_info(parsed.prog_id, self._open_by_id)
        except OSError as exc:
            raise RouteError(f"program id {parsed.prog_id} of {label} is gone: {exc}") from exc
        if not info.tag.startswith(parsed.tag8):
            raise RouteError(
                f"program id {parsed.prog_id} has tag {info.tag}, not {parsed.tag8} as "
                f"{label} says: the label was not written by this engine"
            )
        fd = self._open_by_id(parsed.prog_id)
        base = labels.Label(parsed.owner, parsed.hook, parsed.tag8, parsed.prog_id)
        return ProgramRef(fd, str(base))

    # --- planning ------------------------------------------------------------------------

    def plan(self, intents: Iterable[RouteIntent], gc_owners: Collection[str] = ()) -> Plan:
        intents = list(intents)
        versions = {i.dst.version for i in intents}
        if gc_owners:
            versions = {4, 6}
        index = RouteIndex(self.routes(versions))
        return make_plan(intents, index, set(self.links()), gc_owners=gc_owners)

    # --- applying ------------------------------------------------------------------------

    def apply(self, plan: Plan) -> ApplyResult:
        """Send the plan's changes in batches; refusals of the plan are reported, not sent."""
        result = ApplyResult(counts=plan.counts(), failures=dict(plan.refusals))
        changes = plan.changes
        if not changes:
            return result
        opened: dict[int, int] = {}  # prog id -> fd opened for kept hooks
        encoded: dict[int, bytes] = {}  # id(EncapSpec) -> bytes: the planner shares encaps
        messages: list[bytes] = []
        sent: list[RouteAction] = []
        try:
            for action in changes:
                try:
                    encap = b""
                    if action.encap is not None:
                        encap = encoded.get(id(action.encap), b"")
                        if not encap:
                            encap = self._encode_encap(action.encap, opened)
                            encoded[id(action.encap)] = encap
                    messages.append(self._message(action, encap))
                    sent.append(action)
                except RouteError as exc:
                    result.failures[action.dst] = exc
                    result.counts[action.kind.value] -= 1
            errors = self._sock.send_batch(messages)
        finally:
            for fd in opened.values():
                os.close(fd)
        for index, error in errors.items():
            action = sent[index]
            result.failures[action.dst] = _explain(action, error)
            result.counts[action.kind.value] -= 1
        return result

    def _encode_encap(self, encap: EncapSpec, opened: dict[int, int]) -> bytes:
        fds: dict[str, int] = {}
        for hook, program in encap.hooks:
            if program.fd is not None:
                fds[hook] = program.fd
                continue
            assert program.prog_id is not None
            if program.prog_id not in opened:
                try:
                    opened[program.prog_id] = self._open_by_id(program.prog_id)
                except OSError as exc:  # the loader's KernelError is an OSError too
                    raise RouteError(
                        f"cannot reopen program id {program.prog_id} ({program.label}) to keep "
                        f"it on hook {hook}: {exc}"
                    ) from exc
            fds[hook] = opened[program.prog_id]
        return netlink.encode_encap(encap, fds)

    @staticmethod
    def _message(action: RouteAction, encap: bytes) -> bytes:
        if action.kind is Kind.CREATE_OWNED:
            return netlink.create_owned_message(action.route, action.dst, encap)
        if action.kind is Kind.DELETE_OWNED:
            return netlink.delete_message(action.route)
        return netlink.replace_message(action.route, encap)

    # --- verbs ---------------------------------------------------------------------------

    def attach(
        self,
        dsts: Iterable[str | IPNetwork | Destination],
        hook: str,
        program: ProgramRef,
        *,
        headroom: int = 0,
        force: bool = False,
    ) -> ApplyResult:
        """Attach ``program`` on ``hook`` of every destination (other hooks are kept).

        All or nothing at planning time: if any destination is refused, nothing is sent and
        the first refusal is raised. Kernel failures of single routes raise BatchError
        after the rest were applied.
        """
        labels.check_headroom(hook, headroom)
        wanted = {hook: program}  # one mapping shared by every intent: the planner memoizes
        intents = [RouteIntent(_dst(d), wanted, headroom, force) for d in dsts]
        return self._apply_strict(self.plan(intents))

    def detach(
        self, dsts: Iterable[str | IPNetwork | Destination], hooks: Collection[str] | None = None
    ) -> ApplyResult:
        """Remove our programs (all hooks, or ``hooks``) and restore the plain route."""
        wanted = tuple(hooks) if hooks else HOOK_ORDER
        removal: dict[str, ProgramRef | None] = dict.fromkeys(wanted)
        intents = [RouteIntent(_dst(d), removal) for d in dsts]
        return self._apply_strict(self.plan(intents))

    def converge(
        self, intents: Iterable[RouteIntent], owners: Collection[str]
    ) -> ApplyResult:
        """Make the table match the complete desired state of ``owners`` (owner tokens).

        Routes already right are not touched (adoption after a restart); hooks of these
        owners that no intent names are removed (garbage collection). Refusals and kernel
        failures are reported per destination; the rest is applied.
        """
        return self.apply(self.plan(intents, gc_owners=owners))

    def _apply_strict(self, plan: Plan) -> ApplyResult:
        if plan.refusals:
            first = next(iter(plan.refusals.values()))
            if len(plan.refusals) > 1:
                log.error("%d destinations refused; first: %s", len(plan.refusals), first)
            raise first
        result = self.apply(plan)
        if result.failures:
            raise BatchError(result.failures)
        return result


def _dst(value: str | IPNetwork | Destination) -> Destination:
    return parse_destination(value)


def _explain(action: RouteAction, error: NetlinkError) -> RouteError:
    """Turn a kernel errno into a message that says what to do."""
    import errno

    hint = {
        errno.ENOENT: "the route vanished meanwhile (the CNI removed it); re-run to re-resolve",
        errno.EEXIST: "a route for this destination appeared meanwhile; re-run to adopt it",
        errno.ERANGE: "headroom above 256 is refused by the kernel",
        errno.EINVAL: "the kernel refused the program (wrong program type for the hook?)",
        errno.EBADF: "the program fd is not open",
    }.get(error.errno, "")
    detail = f"; {hint}" if hint else ""
    return NetlinkError(
        error.errno, f"{action.kind.value} of {action.dst} failed{detail}", error.extack
    )

