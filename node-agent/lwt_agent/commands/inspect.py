"""`lwt-agent inspect OBJ`: what a BPF object holds, without loading anything."""
from __future__ import annotations

import argparse
import json
import sys

from lwt_agent.bpf import LoaderError, ObjectSpec

NAME = "inspect"
HELP = "Show the programs, maps and global data of a BPF object, without loading it."
DETAILS = (
    "Shows programs (ELF section, function, instruction count, reachable .text "
    "sub-programs), maps (name, type, key/value size, max_entries, flags, pinning), global "
    "data sections, the license, whether BTF is present, the CO-RE relocations (kind, "
    "type, access string; applied against the running kernel's BTF at load), and the "
    "unsupported features found (map-in-map, kfuncs, ksyms): a program using one cannot "
    "be loaded. Exit 0 when the object parses, 2 when it is unreadable or malformed (the "
    "message says what is wrong). See docs/loader.md."
)

EXIT_OK = 0
EXIT_MALFORMED = 2


def register(parser: argparse.ArgumentParser) -> None:
    parser.epilog = DETAILS
    parser.add_argument("object", metavar="OBJ", help="BPF ELF object file (clang -target bpf)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object instead of text")


def run(args: argparse.Namespace) -> int:
    try:
        spec = ObjectSpec.from_file(args.object)
        info = spec.describe()
    except LoaderError as exc:
        if args.json:
            print(json.dumps({"ok": False, "object": args.object,
                              "error": {"kind": type(exc).__name__, "message": str(exc)}}))
        else:
            print(f"lwt-agent inspect: {exc}", file=sys.stderr)
        return EXIT_MALFORMED
    if args.json:
        print(json.dumps({"ok": True, **info}, indent=2))
    else:
        print(render_text(info))
    return EXIT_OK


def render_text(info: dict) -> str:  # type: ignore[type-arg]
    lines = [
        f"object:  {info['object']}",
        f"license: {info['license'] or '(none: GPL-only helpers will be refused)'}",
        f"BTF:     {'yes' if info['btf'] else 'no'}",
        "programs:",
    ]
    for p in info["programs"]:
        subs = p["subprograms"]
        sub_text = ", ".join(subs) if subs else "none"
        if subs is None:
            sub_text = "(cannot link)"
        lines.append(f"  section {p['section']!r}: function {p['function']} "
                     f"({p['insns']} insns; kernel name {p['kernel_name']}; "
                     f"sub-programs: {sub_text})")
    if not info["programs"]:
        lines.append("  (none)")
    lines.append("maps:")
    for m in info["maps"]:
        lines.append(f"  {m['name']}: {m['type']} key {m['key_size']} value {m['value_size']} "
                     f"max_entries {m['max_entries']} flags {m['flags']:#x} "
                     f"pinning {m['pinning']} ({m['kind']}, section {m['section']})")
    if not info["maps"]:
        lines.append("  (none)")
    lines.append("global data:")
    for d in info["global_data"]:
        ro = "read-only, frozen" if d["read_only"] else "writable"
        lines.append(f"  {d['section']}: {d['size']} bytes as map {d['map']} ({ro})")
    if not info["global_data"]:
        lines.append("  (none)")
    lines.append("CO-RE relocations:")
    for r in info["core_relocations"]:
        lines.append(f"  section {r['section']!r} insn {r['insn']}: {r['kind']} {r['type']} "
                     f"{r['access']!r} ({r['spec']})")
    if not info["core_relocations"]:
        lines.append("  (none)")
    lines.append("unsupported features:")
    for u in info["unsupported"]:
        lines.append(f"  {u['feature']} in section {u['section']!r}: {u['detail']}")
    if not info["unsupported"]:
        lines.append("  (none)")
    return "\n".join(lines)
