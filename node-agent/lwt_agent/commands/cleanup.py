"""`lwt-agent cleanup`: remove everything lwt-operator left on this node (routes and pins).

`run --once` leaves its programs attached and pinned on purpose (a one-shot apply), and
`detach` restores routes but does not touch pins; an agent stopped with --keep-on-exit
leaves both for the next agent. This is how a user undoes all of that without an agent.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

NAME = "cleanup"
HELP = ("Remove every program lwt-operator attached to the routes of this node, and its "
        "pins (what `run --once`, `attach` or a stopped agent left).")
DESCRIPTION = (
    HELP + " By default every owner of ours (every policy, and `cli` for `lwt-agent attach`); "
    "--policy NS/NAME or --owner TOKEN limits it to one. Routes are restored exactly (a /32 "
    "or /128 lwt-operator created is deleted); foreign encaps and other tools' pins are never "
    "touched. Stop a running agent first (it would put its programs back). Exit 0 done (or "
    "nothing to do), 1 the kernel refused a route change, 2 bad usage."
)


def register(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--policy", metavar="NS/NAME", default=None,
                       help="only this policy's programs and pins")
    which.add_argument("--owner", metavar="TOKEN", default=None,
                       help="only routes labelled with this owner (e.g. cli); pins are kept")
    parser.add_argument("--netns", metavar="NAME", default=None,
                        help="network namespace of the routes (default: this one)")
    parser.add_argument("--table", type=int, default=254, help="routing table (default main)")
    parser.add_argument("--pin-dir", type=Path, default=None, metavar="DIR",
                        help="the agent's pin root (default $LWT_BPFFS/lwt-operator, as "
                             "`lwt-agent run` uses)")
    parser.add_argument("--json", action="store_true",
                        help='print one JSON object: {"ok", "owners", "counts", "pins", '
                             '"error"}')


class UsageError(Exception):
    exit_code = 2


def _policy_ref(text: str) -> Any:
    from lwt_policy.model import PolicyRef

    namespace, slash, name = text.partition("/")
    if not slash or not namespace or not name:
        raise UsageError(f"--policy {text!r}: give NAMESPACE/NAME, e.g. shop/web-counters")
    return PolicyRef(namespace, name)


def run(args: argparse.Namespace) -> int:
    from lwt_agent.agent.runtime import default_pin_root
    from lwt_agent.agent.store import ProgramStore
    from lwt_agent.route import LabelError, RouteEngine, RouteError, labels

    result: dict[str, Any] = {"ok": False, "owners": [], "counts": None, "pins": [],
                              "error": None}
    try:
        ref = _policy_ref(args.policy) if args.policy else None
        try:
            wanted = (labels.policy_owner(ref) if ref is not None
                      else labels.owner_token(args.owner) if args.owner else None)
        except LabelError as exc:
            raise UsageError(str(exc)) from None
        with RouteEngine(args.netns, args.table) as engine:
            found = {parsed.owner for text in engine.labels_in_use()
                     if (parsed := labels.parse(text)) is not None}
            owners = sorted(found if wanted is None else found & {wanted})
            outcome = engine.converge([], owners)
        result.update(owners=owners, counts=outcome.counts)
        if outcome.failures:
            first = next(iter(outcome.failures.values()))
            raise RouteError(f"{len(outcome.failures)} route(s) could not be restored, e.g. "
                             f"{first}")
        if args.owner is None:
            store = ProgramStore(args.pin_dir or default_pin_root())
            result["pins"] = [str(p) for p in store.unpin_all(ref)]
    except (UsageError, RouteError) as exc:
        result["error"] = {"kind": type(exc).__name__, "message": str(exc)}
        if args.json:
            print(json.dumps(result))
        else:
            print(f"lwt-agent cleanup: {exc}", file=sys.stderr)
        return exc.exit_code
    result["ok"] = True
    if args.json:
        print(json.dumps(result))
    else:
        changed = {k: n for k, n in (result["counts"] or {}).items() if n and k != "unchanged"}
        print(f"owners: {', '.join(owners) or 'none found on the routes'}; routes: "
              f"{', '.join(f'{k} {n}' for k, n in changed.items()) or 'nothing to change'}; "
              f"pin directories removed: {len(result['pins'])}")
    return 0
