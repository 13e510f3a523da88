"""The `lwt-agent` command line: a thin dispatcher over `lwt_agent.commands`.

Exit codes shared by every verb: 0 success, 1 the kernel or the cluster refused the request,
2 bad usage or unreadable/malformed input.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from types import ModuleType

# Verb modules, in --help order. Add a verb by adding its module here.
COMMANDS: tuple[str, ...] = ("inspect", "load", "attach", "detach", "status", "run", "cleanup",
                             "validate")

EXIT_USAGE = 2


def _load_commands() -> list[ModuleType]:
    return [importlib.import_module(f"lwt_agent.commands.{name}") for name in COMMANDS]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lwt-agent",
        description=(
            "Node agent of lwt-operator: loads LWT BPF programs and attaches them to the "
            "routes of pods. Needs root, or CAP_BPF and CAP_NET_ADMIN (every built-in loads "
            "without CAP_PERFMON; do not grant it: it would let ConfigMap programs read "
            "kernel memory)."
        ),
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _load_commands():
        verb = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        # `lwt-agent run -v` as well as `lwt-agent -v run`: counted together.
        verb.add_argument("-v", "--verbose", action="count", default=0, dest="verb_verbose",
                          help="more log output (-vv for debug)")
        module.register(verb)
        verb.set_defaults(_run=module.run)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lwt-operator")  # pyproject.toml's, the one source of the version
    except PackageNotFoundError:
        return "(not installed)"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = args.verbose + getattr(args, "verb_verbose", 0)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return int(args._run(args))


if __name__ == "__main__":
    sys.exit(main())
