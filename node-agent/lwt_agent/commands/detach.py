"""`lwt-agent detach`: remove lwt-operator's programs from a route, restoring it."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from lwt_agent.bpf import Hook
from lwt_agent.route import RouteEngine, RouteError

NAME = "detach"
HELP = "Remove lwt-operator's programs from a route, restoring it exactly."
DESCRIPTION = (
    "Remove the programs lwt-operator attached to the route of a destination (all hooks, or "
    "--hook): the route is restored exactly as it was, and a /32 (/128) lwt-operator created "
    "for a pod behind a subnet route is deleted. Foreign encaps are never touched. Exit 0 "
    "detached (or nothing was attached), 1 refused, 2 bad usage."
)


def register(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.add_argument("--dst", required=True, metavar="CIDR",
                        help="pod IP or exact route prefix")
    parser.add_argument("--hook", choices=[h.value for h in Hook], default=None,
                        help="only this hook (default: every hook of ours)")
    parser.add_argument("--netns", metavar="NAME", default=None,
                        help="network namespace of the routes (default: this one)")
    parser.add_argument("--table", type=int, default=254, help="routing table (default main)")
    parser.add_argument("--json", action="store_true",
                        help='print one JSON object: {"ok", "dst", "counts", "error"}')


def run(args: argparse.Namespace) -> int:
    result: dict[str, Any] = {"ok": False, "dst": args.dst, "counts": None, "error": None}
    try:
        with RouteEngine(args.netns, args.table) as engine:
            outcome = engine.detach([args.dst], [args.hook] if args.hook else None)
    except RouteError as exc:
        result["error"] = {"kind": type(exc).__name__, "message": str(exc)}
        if args.json:
            print(json.dumps(result))
        else:
            print(f"lwt-agent detach: {exc}", file=sys.stderr)
        return exc.exit_code
    result.update(ok=True, counts=outcome.counts)
    if args.json:
        print(json.dumps(result))
    elif outcome.changed == 0:
        print(f"nothing of lwt-operator's attached to {args.dst}")
    else:
        done = ", ".join(f"{k} {n}" for k, n in outcome.counts.items() if n and k != "unchanged")
        print(f"detached {args.dst}: {done}")
    return 0
