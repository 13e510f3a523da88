"""`lwt-agent attach`: load a program once and attach it to one route, then exit.

There is no bpf_link for LWT: the route holds the program. So the command loads the
program, writes its label and fd onto the route and exits; the program (and its maps)
live as long as a route carries it.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from lwt_agent.bpf import Hook, LoadedProgram, LoaderError, ObjectSpec
from lwt_agent.commands.load import exit_code as loader_exit_code
from lwt_agent.route import ProgramRef, RouteEngine, RouteError, labels
from lwt_agent.route.resolve import parse_destination

NAME = "attach"
HELP = "Attach an LWT program to the route of a pod IP or prefix (loads it once, then exits)."
DESCRIPTION = (
    "Attach an LWT program to the host route of a destination (a pod IP or a route prefix): "
    "the route is replaced keeping every attribute and gains a bpf encap on the hook; a pod "
    "IP reached only through a subnet route gets its own /32 (/128), marked proto 76. Other "
    "hooks already attached by lwt-operator stay. Exit 0 attached (or already attached), 1 "
    "refused by the kernel or the route (foreign encap without --force, multipath, no "
    "device), 2 bad usage, unknown destination, bad object or headroom."
)


def register(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.add_argument("--dst", required=True, metavar="CIDR",
                        help="pod IP (10.244.1.7, fd00::7) or exact route prefix")
    parser.add_argument("--hook", required=True, choices=[h.value for h in Hook],
                        help="which LWT hook of the route runs the program: in (packets "
                             "routed in), out (sent locally, may drop), xmit (just before "
                             "the neighbour layer, may rewrite/encapsulate)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--builtin", metavar="NAME",
                        help="a built-in program (counters, port-filter, drop-all, ...)")
    source.add_argument("--object", metavar="OBJ", help="a BPF ELF object file")
    parser.add_argument("--section", metavar="S", help="ELF section of --object's program")
    parser.add_argument("--config", metavar="JSON", default=None,
                        help="configuration of a --builtin, as in a policy's hooks.<h>.config "
                             "(e.g. '{\"denyTCPPorts\": [8080]}')")
    parser.add_argument("--headroom", type=int, default=0, metavar="N",
                        help="bytes reserved for headers an xmit program pushes (0..256)")
    parser.add_argument("--netns", metavar="NAME", default=None,
                        help="network namespace of the routes (default: this one)")
    parser.add_argument("--table", type=int, default=254, help="routing table (default main)")
    parser.add_argument("--owner", default="cli",
                        help="owner written in the label (default cli); see docs/route-engine.md")
    parser.add_argument("--force", action="store_true",
                        help="replace an LWT encap that lwt-operator did not put there")
    parser.add_argument("--json", action="store_true",
                        help='print one JSON object: {"ok", "dst", "hook", "label", "prog_id", '
                             '"tag", "counts", "error": null | {"kind", "message"}}')


def check_config(args: argparse.Namespace) -> dict[str, Any] | None:
    """The --builtin's config, checked before anything is loaded (UsageError naming the
    option, the field and the allowed keys)."""
    if not args.builtin:
        if args.config:
            raise UsageError("--config is for --builtin programs only")
        if not args.section:
            raise UsageError("--object needs --section (list them with `lwt-agent inspect "
                             "OBJ`)")
        return None
    from lwt_policy.catalogue import CATALOGUE
    from lwt_policy.program_config import ProgramConfigError, encode_config

    builtin = CATALOGUE.get(args.builtin)
    if builtin is None:
        raise UsageError(f"unknown built-in {args.builtin!r}; choose one of "
                         f"{', '.join(sorted(CATALOGUE))}")
    if args.hook not in builtin.hooks:
        raise UsageError(f"built-in {builtin.name} does not run on hook {args.hook} "
                         f"(it runs on {', '.join(sorted(builtin.hooks))})")
    try:
        config = json.loads(args.config) if args.config else None
    except json.JSONDecodeError as exc:
        raise UsageError(f"--config is not valid JSON ({exc.msg} at line {exc.lineno} "
                         f"column {exc.colno}): give an object such as "
                         "'{\"denyTCPPorts\": [8080]}'") from None
    try:
        encode_config(builtin.name, config)
    except ProgramConfigError as exc:
        raise UsageError(f"--config: {exc}") from None
    return config


def load_program(args: argparse.Namespace, config: dict[str, Any] | None) -> LoadedProgram:
    """Load the program named by --builtin (with its checked config) or --object/--section
    for --hook."""
    hook = Hook.parse(args.hook)
    if args.builtin:
        from lwt_policy.catalogue import CATALOGUE
        from lwt_policy.program_config import sync_config

        builtin = CATALOGUE[args.builtin]
        prog = ObjectSpec.from_file(builtin.object_path()).load(builtin.section, hook)
        try:
            sync_config(builtin.name, config, prog.maps)
        except BaseException:
            prog.close()
            raise
        return prog
    return ObjectSpec.from_file(args.object).load(args.section, hook)


class UsageError(Exception):
    exit_code = 2


def run(args: argparse.Namespace) -> int:
    result: dict[str, Any] = {"ok": False, "dst": args.dst, "hook": args.hook, "label": None,
                              "prog_id": None, "tag": None, "counts": None, "error": None}
    try:
        dst = parse_destination(args.dst)
        labels.check_headroom(args.hook, args.headroom)
        config = check_config(args)  # bad input is refused before any program is loaded
        with RouteEngine(args.netns, args.table) as engine:
            prog = load_program(args, config)
            try:
                label = labels.program_label(args.owner, args.hook, prog.tag, prog.id)
                outcome = engine.attach([dst], args.hook, ProgramRef(prog.fd, label),
                                        headroom=args.headroom, force=args.force)
            finally:
                prog.close()  # the route holds the program now (or nothing does)
        result.update(ok=True, label=label, prog_id=prog.id, tag=prog.tag,
                      counts=outcome.counts)
    except (RouteError, LoaderError, UsageError, ValueError) as exc:
        code = _exit_code(exc)
        result["error"] = {"kind": type(exc).__name__, "message": str(exc)}
        if args.json:
            print(json.dumps(result))
        else:
            print(f"lwt-agent attach: {exc}", file=sys.stderr)
        return code
    if args.json:
        print(json.dumps(result))
    else:
        unchanged = outcome.counts.get("unchanged", 0) == 1
        verb = "already attached" if unchanged else "attached"
        print(f"{verb}: {args.dst} {args.hook} -> {label} (prog id {prog.id}, tag {prog.tag})")
    return 0


def _exit_code(exc: Exception) -> int:
    if isinstance(exc, RouteError):
        return exc.exit_code
    if isinstance(exc, LoaderError):
        return loader_exit_code(exc)
    return 2  # UsageError, bad --config JSON, bad hook
