"""`lwt-agent load OBJ --section S --hook H`: load one program (and the maps it uses)."""
from __future__ import annotations

import argparse
import json
import sys

from lwt_agent.bpf import (
    Hook,
    KernelError,
    LoaderError,
    MalformedObjectError,
    ObjectSpec,
    UnsupportedFeatureError,
    VerifierError,
)

NAME = "load"
HELP = "Load one program of a BPF object (with its maps) on an LWT hook; print id and tag."
DETAILS = (
    "Loads the program of --section as the program type of --hook, with the maps it uses, "
    "and prints its id, tag and map ids, or the error with the verifier log. Without "
    "--pin-dir the program is unloaded again when the command exits (a dry run against the "
    "real verifier). With --pin-dir DIR (a directory on a mounted bpffs) the program is "
    "pinned as DIR/<program name> and every map as DIR/<map name>, so they outlive the "
    "command; a map declared with pinning by name reuses a compatible pin already there, "
    "and an incompatible one is refused. Exit 0 loaded, 1 rejected by the kernel or the "
    "verifier, 2 unreadable or malformed input, unsupported feature, pin conflict or bad "
    "usage. See docs/loader.md."
)

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_BAD_INPUT = 2


def register(parser: argparse.ArgumentParser) -> None:
    parser.epilog = DETAILS
    parser.add_argument("object", metavar="OBJ", help="BPF ELF object file (clang -target bpf)")
    parser.add_argument("--section", required=True, metavar="S",
                        help="ELF section of the program (see `lwt-agent inspect OBJ`)")
    parser.add_argument("--hook", required=True, choices=[h.value for h in Hook],
                        help="LWT hook: sets the program type (in=LWT_IN, out=LWT_OUT, "
                             "xmit=LWT_XMIT)")
    parser.add_argument("--pin-dir", metavar="DIR", default=None,
                        help="bpffs directory to pin the program and its maps in; without "
                             "it nothing outlives the command")
    parser.add_argument("--json", action="store_true",
                        help='print exactly one JSON object: {"ok", "section", "hook", '
                             '"prog_id", "tag", "maps": [{"name", "id", "type"}], '
                             '"core_relocations": {"applied", "poisoned"}, '
                             '"error": null | {"kind", "message", "verifier_log"}}')


def run(args: argparse.Namespace) -> int:
    result: dict[str, object] = {
        "ok": False, "section": args.section, "hook": args.hook,
        "prog_id": None, "tag": None, "maps": [], "core_relocations": None, "error": None,
    }
    try:
        spec = ObjectSpec.from_file(args.object)
        with spec.load(args.section, Hook.parse(args.hook), pin_dir=args.pin_dir) as prog:
            core = {"applied": len(prog.core_relocations),
                    "poisoned": sum(a.poisoned for a in prog.core_relocations)}
            result.update(
                ok=True, prog_id=prog.id, tag=prog.tag,
                maps=[{"name": name, "id": m.id, "type": m.type_name}
                      for name, m in prog.maps.items()],
                core_relocations=core,
            )
            pinned = prog.pinned
    except LoaderError as exc:
        verifier_log = exc.log if isinstance(exc, VerifierError) else None
        result["error"] = {"kind": type(exc).__name__, "message": str(exc),
                           "verifier_log": verifier_log}
        if not args.json:
            print(f"lwt-agent load: {exc}", file=sys.stderr)
            if verifier_log:
                print("verifier log:", file=sys.stderr)
                print(verifier_log.rstrip("\n"), file=sys.stderr)
        else:
            print(json.dumps(result))
        return exit_code(exc)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"loaded {args.section} as {args.hook}: prog_id {result['prog_id']} "
              f"tag {result['tag']}")
        for m in result["maps"]:  # type: ignore[attr-defined]
            print(f"  map {m['name']}: id {m['id']} ({m['type']})")
        if core["applied"]:
            print(f"  CO-RE: {core['applied']} relocation(s) applied, "
                  f"{core['poisoned']} poisoned (only allowed in dead code)")
        if pinned:
            print(f"pinned at {pinned} (remove the pins to unload)")
        else:
            print("not pinned: unloaded now that the command exits")
    return EXIT_OK


def exit_code(exc: LoaderError) -> int:
    if isinstance(exc, MalformedObjectError | UnsupportedFeatureError):
        return EXIT_BAD_INPUT
    if isinstance(exc, KernelError):
        return EXIT_REJECTED
    # PinConflictError, a missing pin dir, an ambiguous section: the request cannot work
    return EXIT_BAD_INPUT
