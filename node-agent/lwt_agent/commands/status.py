"""`lwt-agent status`: every route with an LWT encap, its labels, programs and counters."""
from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from typing import Any

from lwt_agent.agent.runtime import default_pin_root
from lwt_agent.bpf.pins import PinIndex
from lwt_agent.route import RouteError
from lwt_agent.route.inventory import HookStatus, RouteStatus, route_status

NAME = "status"
HELP = "List routes carrying an LWT encap: labels, program id/tag, built-in counters."
DESCRIPTION = (
    "List every route carrying an LWT encap (all tables, IPv4 and IPv6): destination, device, "
    "and per hook the label, whether lwt-operator put it there, the program id and tag (found "
    "from the label, checked against the kernel) and, for built-in programs, the counters of "
    "that destination. Programs and maps are opened from the agent's pins under --pin-dir "
    "(no CAP_SYS_ADMIN needed, as inside the agent pod), else by id (root only). "
    "Exit 0, 1 when the routes cannot be read, 2 bad usage."
)


def register(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.add_argument("--netns", metavar="NAME", default=None,
                        help="network namespace of the routes (default: this one)")
    parser.add_argument("--table", type=int, default=None, help="only this table")
    parser.add_argument("--pin-dir", metavar="DIR", default=None,
                        help="the agent's pin root to find programs in (default "
                             "$LWT_BPFFS/lwt-operator, as `lwt-agent run` uses)")
    parser.add_argument("--json", action="store_true",
                        help='print one JSON object: {"routes": [{"dst", "table", "dev", '
                             '"owned", "hooks": [{"hook", "label", "ours", "prog_id", "tag", '
                             '"counters", ...}]}]}')


def builtin_counters(hook: HookStatus, dst: str, pins: PinIndex) -> dict[str, Any] | None:
    """Counters of ``dst`` kept by a built-in program (identified by its kernel name)."""
    if hook.program is None:
        return None
    from lwt_policy.catalogue import CATALOGUE
    from lwt_policy.program_config import (
        PER_DESTINATION_MAP,
        DestinationCounters,
        read_destination_counters,
    )

    from lwt_agent.bpf import BpfMap
    from lwt_agent.bpf.maps import kernel_name

    builtin = next((b for b in CATALOGUE.values()
                    if kernel_name(b.function) == hook.program.name), None)
    if builtin is None or builtin.name not in PER_DESTINATION_MAP:
        return None
    maps: dict[str, BpfMap] = {}
    try:
        for map_id in hook.program.map_ids:
            bpf_map = BpfMap(pins.open_map(map_id))
            maps[bpf_map.name] = bpf_map
        if PER_DESTINATION_MAP[builtin.name] not in maps:
            return None
        counters = read_destination_counters(builtin.name, maps)
    except (OSError, KeyError, ValueError):
        return None
    finally:
        for bpf_map in maps.values():
            bpf_map.close()
    network = ipaddress.ip_network(dst)
    total: dict[str, Any] = {"builtin": builtin.name, **DestinationCounters().as_dict()}
    for address, value in counters.items():
        if ipaddress.ip_address(address) in network:
            for key, number in value.as_dict().items():
                if isinstance(number, int):
                    total[key] = total.get(key, 0) + number
    return total


def run(args: argparse.Namespace) -> int:
    with PinIndex(args.pin_dir or default_pin_root()) as pins:
        try:
            routes = route_status(args.netns, args.table, pins.open_program)
        except RouteError as exc:
            print(f"lwt-agent status: {exc}", file=sys.stderr)
            return exc.exit_code
        rows: list[dict[str, Any]] = []
        for route in routes:
            row = route.to_json()
            for hook, hook_row in zip(route.hooks, row["hooks"], strict=True):  # type: ignore[call-overload]
                hook_row["counters"] = builtin_counters(hook, route.dst, pins)
            rows.append(row)
    if args.json:
        print(json.dumps({"routes": rows}))
        return 0
    if not rows:
        print("no route carries an LWT encap")
    for route, row in zip(routes, rows, strict=True):
        _print_route(route, row)
    return 0


def _print_route(route: RouteStatus, row: dict[str, Any]) -> None:
    owned = " (owned /32 of lwt-operator)" if route.owned else ""
    print(f"{route.dst} dev {route.dev} table {route.table}{owned}")
    if route.encap_type != 6:
        print(f"  encap type {route.encap_type} (not bpf): foreign")
    for hook, hook_row in zip(route.hooks, row["hooks"], strict=True):
        who = "ours" if hook.ours else "foreign"
        line = f"  {hook.hook:4s} -> {hook.label}  [{who}]"
        if hook.program:
            line += f" prog id {hook.program.id} tag {hook.program.tag} ({hook.program.name})"
        if hook.problem:
            line += f"  ! {hook.problem}"
        print(line)
        if hook_row.get("counters"):
            fields = ", ".join(f"{k}={v}" for k, v in hook_row["counters"].items())
            print(f"         counters: {fields}")
