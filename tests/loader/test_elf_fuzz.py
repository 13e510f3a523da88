"""The bounded ELF fuzz run of the normal suite (issue 12): tests/loader/elf_fuzz.py with a
fixed seed, at most 3,000 objects or 25 s, in a child process so its memory is its own.

Every mutated object must end in success or a LoaderError (never another exception), the
child's ru_maxrss must grow by at most 64 MiB over the whole run, and the run must have
reached each stage (parsing, limits, instruction checks, prepared programs) so it cannot
pass by refusing everything at the ELF header. A failure names its iteration: replay it
with `python -m tests.loader.elf_fuzz --seed 0 --only I`.
"""
from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

from .elf_fuzz import MUTATORS, SHAPES

SEED = 0
BUDGET = 64 << 20


def test_elf_fuzz_run_only_typed_errors_and_bounded_memory() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tests.loader.elf_fuzz", "--seed", str(SEED),
         "--iterations", "3000", "--seconds", "25"],
        cwd=REPO, capture_output=True, text=True, timeout=180, check=True)
    report = json.loads(out.stdout)
    print({k: report[k] for k in ("iterations", "outcomes", "start_rss", "end_rss")})
    assert report["failure_count"] == 0, json.dumps(report["failures"][:3], indent=1)
    assert report["iterations"] >= 500
    assert set(report["mutators"]) >= set(MUTATORS)
    assert set(report["mutators"]) & set(SHAPES)
    outcomes = report["outcomes"]
    for stage in ("parsed", "refused:MalformedObjectError", "refused:LimitError",
                  "program prepared", "program refused:ForbiddenInstructionError"):
        assert outcomes.get(stage, 0) > 0, (stage, outcomes)
    assert report["end_rss"] - report["start_rss"] <= BUDGET
