"""What is attached where: every route with an LWT encap, its labels and programs.

The kernel dumps only the label of each hook (LWT_BPF_PROG_NAME), never the program. Our
labels carry the program id (see labels.py), and a route holds a reference on its program,
so the id in a label on a live route names that very program: it is opened (by the
caller's ``open_program``: from the agent's pins, else by id, which needs CAP_SYS_ADMIN)
and its info read back; the tag in the label is checked against the kernel's. Foreign
labels carry no id: their program cannot be identified.
"""
from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import labels, netlink
from .model import LWTUNNEL_ENCAP_BPF, ObservedRoute

if TYPE_CHECKING:
    from lwt_agent.bpf.syscall import ProgInfo


@dataclass
class HookStatus:
    hook: str
    label: str
    ours: bool
    owner: str | None = None
    headroom: int = 0
    program: ProgInfo | None = None
    problem: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "hook": self.hook,
            "label": self.label,
            "ours": self.ours,
            "owner": self.owner,
            "headroom": self.headroom,
            "prog_id": self.program.id if self.program else None,
            "tag": self.program.tag if self.program else None,
            "prog_name": self.program.name if self.program else None,
            "problem": self.problem,
        }


@dataclass
class RouteStatus:
    dst: str
    family: int
    table: int
    dev: str | None
    protocol: int
    owned: bool
    encap_type: int
    hooks: list[HookStatus] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "dst": self.dst,
            "table": self.table,
            "dev": self.dev,
            "protocol": self.protocol,
            "owned": self.owned,
            "encap_type": self.encap_type,
            "hooks": [h.to_json() for h in self.hooks],
        }


ProgramOpener = Callable[[int], int]  # program id -> a new fd the caller closes


def open_by_id(prog_id: int) -> int:
    """A new fd of a loaded program (BPF_PROG_GET_FD_BY_ID: needs CAP_SYS_ADMIN)."""
    from lwt_agent.bpf import syscall  # the loader owns the bpf(2) syscall

    return syscall.prog_get_fd_by_id(prog_id)


def program_info(prog_id: int, open_program: ProgramOpener = open_by_id) -> ProgInfo:
    from lwt_agent.bpf import syscall

    fd = open_program(prog_id)
    try:
        return syscall.prog_info(fd)
    finally:
        os.close(fd)


def _hook_status(hook: str, label: str, cache: dict[int, ProgInfo | str],
                 open_program: ProgramOpener) -> HookStatus:
    parsed = labels.parse(label)
    if parsed is None:
        return HookStatus(hook, label, False,
                          problem="foreign label: the kernel does not say which program")
    status = HookStatus(hook, label, True, owner=parsed.owner, headroom=parsed.headroom)
    if parsed.prog_id not in cache:
        try:
            cache[parsed.prog_id] = program_info(parsed.prog_id, open_program)
        except OSError as exc:
            cache[parsed.prog_id] = f"program id {parsed.prog_id} cannot be opened: {exc}"
    found = cache[parsed.prog_id]
    if isinstance(found, str):
        status.problem = found
    elif not found.tag.startswith(parsed.tag8):
        status.problem = (f"program id {parsed.prog_id} has tag {found.tag}, the label says "
                          f"{parsed.tag8}: the label was not written by this engine")
    else:
        status.program = found
    return status


def route_status(netns: str | None = None, table: int | None = None,
                 open_program: ProgramOpener = open_by_id) -> list[RouteStatus]:
    """Every route with an LWT encap (all tables unless ``table``), both families."""
    with netlink.RouteSocket(netns) as sock:
        routes: list[ObservedRoute] = []
        for family in (socket.AF_INET, socket.AF_INET6):
            routes.extend(r for r in sock.dump_routes(family, table) if r.encap_type is not None)
        links = sock.dump_links() if routes else {}
    cache: dict[int, ProgInfo | str] = {}
    found: list[RouteStatus] = []
    for route in routes:
        status = RouteStatus(
            dst=str(route.dst),
            family=route.family,
            table=route.table,
            dev=links.get(route.oif) if route.oif is not None else None,
            protocol=route.protocol,
            owned=route.owned,
            encap_type=route.encap_type or 0,
        )
        if route.encap_type == LWTUNNEL_ENCAP_BPF:
            status.hooks = [_hook_status(h, lbl, cache, open_program)
                            for h, lbl in route.encap_labels.items()]
        found.append(status)
    return found
