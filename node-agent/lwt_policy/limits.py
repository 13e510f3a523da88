"""Bounds on what one hostile API object may cost the operator and the agents.

A tenant who may create an LwtRoutePolicy or a ConfigMap must not be able to stop the
operator or any agent from serving everyone else. So, before anything recursive (copying,
comparing, schema and CEL validation) touches an object:

- nesting depth is capped (`MAX_DEPTH`): `loads` never raises RecursionError, whatever the
  interpreter's recursion limit, and `nesting_depth` measures without recursion;
- a policy's spec is capped in size (`MAX_SPEC_BYTES`, on its compact JSON);
- a ConfigMap program's object is capped in size (`MAX_PROGRAM_BYTES`).

The CRD (lwt_policy.schema) refuses deep or large configs at the API server already; these
caps also cover objects stored before the CRD was upgraded and API servers that skip
validation. Pure Python, no I/O.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

# A valid LwtRoutePolicy nests at most ~8 containers (status.conditions[i]...), and
# metadata.managedFields mirrors that shape a few levels deeper. Everything past this is junk.
MAX_DEPTH = 32
# The largest spec the CRD admits (three hooks of port-filter at every list's maxItems) is
# ~200 KB of JSON; anything larger was stored before the CRD bounded config.
MAX_SPEC_BYTES = 512 * 1024
# A ConfigMap holds at most 1 MiB in all; built-in objects are a few KB. LWT programs are
# small (the verifier caps them at a million instructions, real ones are far below).
MAX_PROGRAM_BYTES = 512 * 1024

# What `loads` puts where a container nested too deep was: a string no API object carries.
TOO_DEEP = "\x00lwt.dev/nested-too-deep"


class LimitError(ValueError):
    """An object exceeds one of the caps; the message says which and what to do."""


def nesting_depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """Depth of nested dicts/lists in `value` (a scalar is 0, `{}` is 1), counted without
    recursion. Stops early: returns `limit + 1` as soon as the depth passes `limit`."""
    # No need to look at strings for the TOO_DEEP marker: `loads` puts it only below
    # MAX_DEPTH + 8 containers, so an object holding one is too deep by this count already.
    if not isinstance(value, Mapping | list):
        return 0
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return limit + 1
        deepest = max(deepest, depth)
        children = node.values() if isinstance(node, Mapping) else node
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, Mapping | list))
    return deepest


def depth_problem(value: Any, what: str, limit: int = MAX_DEPTH) -> str | None:
    """None, or why `value` is refused for its nesting depth."""
    if nesting_depth(value, limit) > limit:
        return (f"{what} nests more than {limit} levels of objects/lists: no valid "
                "LwtRoutePolicy is that deep; remove the nested junk")
    return None


def spec_size_problem(spec: Any, limit: int = MAX_SPEC_BYTES) -> str | None:
    """None, or why a spec is refused for its size (compact JSON bytes). Check the depth
    first: encoding a value nested thousands deep would recurse."""
    size = len(json.dumps(spec, separators=(",", ":"), default=str))
    if size > limit:
        return (f"spec is {size} bytes of JSON, more than the {limit} bytes any valid policy "
                "needs (the CRD bounds every list and string): shrink its config")
    return None


_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
_MARKER = json.dumps(TOO_DEEP).encode()


def loads(data: bytes | str, max_depth: int = MAX_DEPTH + 8) -> Any:
    """`json.loads` that never raises RecursionError.

    When the interpreter cannot decode `data` for its depth, every container nested deeper
    than `max_depth` is replaced by the string `TOO_DEEP` and the rest is decoded, so that
    a list keeps its other items: callers drop the objects that contain the marker (see
    `nesting_depth`). Invalid JSON still raises ValueError.
    """
    try:
        return json.loads(data)
    except RecursionError:
        raw = data.encode() if isinstance(data, str) else bytes(data)
        return json.loads(_truncate(raw, max_depth))


def _truncate(raw: bytes, max_depth: int) -> bytes:
    """`raw` with each container opened below `max_depth` replaced by the marker."""
    out: list[bytes] = []
    depth = 0
    copied = 0  # raw[:copied] is accounted for in `out`
    cut_at = -1  # start of the container being cut, while depth > max_depth
    for match in _TOKENS.finditer(raw):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth == max_depth + 1:
                out.append(raw[copied:match.start()])
                cut_at = match.start()
        elif token in (b"]", b"}"):
            if depth == max_depth + 1 and cut_at >= 0:
                out.append(_MARKER)
                copied = match.end()
                cut_at = -1
            depth -= 1
    if cut_at >= 0:  # unbalanced: let json.loads report the truncated document
        out.append(raw[cut_at:])
        copied = len(raw)
    out.append(raw[copied:])
    return b"".join(out)


# --- ConfigMap programs ---------------------------------------------------------------------

MAX_PROGRAM_B64 = (MAX_PROGRAM_BYTES + 2) // 3 * 4
_TOO_LARGE = "\x00lwt.dev/too-large:"


def too_large_marker(size: int) -> str:
    """What a cache holds instead of an object over MAX_PROGRAM_BYTES (its decoded size)."""
    return f"{_TOO_LARGE}{size}"


def decoded_size(encoded: str) -> int:
    """Bytes a base64 string decodes to, without decoding it."""
    return len(encoded) * 3 // 4 - encoded[-2:].count("=")


def program_size_problem(encoded: str) -> str | None:
    """None, or why the base64 `binaryData` value of a ConfigMap program is refused for its
    size (checked before decoding it)."""
    if not isinstance(encoded, str):
        return None
    if encoded.startswith(_TOO_LARGE):
        size = int(encoded[len(_TOO_LARGE):] or 0)
    elif len(encoded) > MAX_PROGRAM_B64 - 4 and decoded_size(encoded) > MAX_PROGRAM_BYTES:
        size = decoded_size(encoded)
    else:
        return None
    return (f"the object is about {size} bytes, more than the {MAX_PROGRAM_BYTES} bytes an "
            "LWT program needs: strip debug sections (llvm-strip -g) or split the object")
