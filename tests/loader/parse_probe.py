"""Child process of the parse-bound tests and the fuzz run: parses objects and reports what
each cost, as JSON on stdout.

    python -m tests.loader.parse_probe [--no-trace] FILE...

For each file: the outcome ("parsed", or the exception's class name), whether that class is
a LoaderError, and tracemalloc's peak while parsing it and preparing each of its programs
for the `out` hook (everything a load does before bpf(2)). Also ru_maxrss after the imports
and at the end (with --no-trace, tracemalloc stays off so ru_maxrss is the parser's own;
run one file per process then). A 2 GiB address-space limit keeps a bomb from hurting the
machine when the bounds are missing: it then shows as MemoryError.
"""
from __future__ import annotations

import contextlib
import json
import resource
import sys
import tracemalloc
from pathlib import Path

from lwt_agent.bpf import LoaderError, ObjectSpec
from lwt_agent.bpf.loader import prepare


def probe(data: bytes, name: str) -> tuple[str, bool]:
    try:
        spec = ObjectSpec.from_bytes(data, name)
        spec.describe()
        for program in spec.programs:
            with contextlib.suppress(LoaderError):
                prepare(spec, program.name, "out")
    except LoaderError as exc:
        return type(exc).__name__, True
    except MemoryError:
        return "MemoryError", False
    return "parsed", True


def main(paths: list[str], trace: bool = True) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    start_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    results = []
    for path in paths:
        data = Path(path).read_bytes()
        if trace:
            tracemalloc.start()
        outcome, typed = probe(data, Path(path).name)
        peak = tracemalloc.get_traced_memory()[1] if trace else None
        tracemalloc.stop()
        results.append({"file": Path(path).name, "size": len(data), "outcome": outcome,
                        "typed": typed, "peak": peak})
        del data
    end_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    json.dump({"start_rss": start_rss, "end_rss": end_rss, "results": results}, sys.stdout)


if __name__ == "__main__":
    args = sys.argv[1:]
    main([a for a in args if a != "--no-trace"], trace="--no-trace" not in args)
