"""Issue 12 item 3: parsing any object costs at most 64 MiB, bombs included.

The bombs are the shapes of the issue (a 730 KB object of overlapping section headers, a
BTF string bomb) and one per bound of limits.py. Each is parsed (and every program prepared
up to bpf(2)) in a child process (tests/loader/parse_probe.py): once all together with
tracemalloc's peak per object, and once per bomb alone without tracemalloc, where the growth
of the child's ru_maxrss is the parser's real footprint. On the code before the bounds the
first two bombs end in MemoryError under the child's 2 GiB address-space limit.
"""
from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from lwt_agent.bpf import LimitError, ObjectSpec, limits

from tests.conftest import REPO

from . import elfbuild

BUDGET = 64 << 20
# bomb -> (builder, the bound expected to refuse it; None: within every bound, parsed)
BOMBS: dict[str, tuple[Callable[[bytes], bytes], str | None]] = {
    "overlap_730k": (elfbuild.overlap_bomb, "MAX_SECTIONS"),
    "overlap_under_section_cap": (
        lambda b: elfbuild.overlap_bomb(b, headers=900), "overlapping"),
    "btf_string": (elfbuild.btf_string_bomb, "MAX_NAME"),
    "btf_suffix_names": (elfbuild.btf_suffix_bomb, "names <= 2x"),
    "btf_types_4m": (elfbuild.btf_types_bomb, "MAX_BTF_TYPES"),
    "btf_ext_records": (elfbuild.btf_ext_bomb, "MAX_BTF_EXT_RECORDS"),
    "symbols_730k": (elfbuild.symbols_bomb, None),
    "symbols_4m": (lambda b: elfbuild.symbols_bomb(b, (4 << 20) - 4096), "MAX_SYMBOLS"),
}


def _probe(*args: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-m", "tests.loader.parse_probe", *args],
                         cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def bombs(testobj: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = (testobj / "btf_maps.o").read_bytes()
    where = tmp_path_factory.mktemp("bombs")
    files = {}
    for name, (build, _bound) in BOMBS.items():
        files[name] = where / f"{name}.o"
        files[name].write_bytes(build(base))
    return files


def test_each_bomb_is_refused_by_its_bound(bombs: dict[str, Path]) -> None:
    for name, (_build, bound) in BOMBS.items():
        data = bombs[name].read_bytes()
        assert len(data) <= limits.MAX_OBJECT_BYTES
        if bound is None:
            ObjectSpec.from_bytes(data, name)
            continue
        with pytest.raises(LimitError) as refused:
            ObjectSpec.from_bytes(data, name)
        assert bound in str(refused.value), (name, str(refused.value))
        assert "docs/loader.md" in str(refused.value)


def test_peak_memory_of_parsing_bombs_and_real_objects(bombs: dict[str, Path],
                                                       testobj: Path) -> None:
    real = sorted(testobj.glob("*.o")) + sorted(testobj.parent.glob("*.o"))
    report = _probe(*(str(p) for p in [*bombs.values(), *real]))
    results = report["results"]
    assert isinstance(results, list) and len(results) == len(bombs) + len(real)
    for row in results:
        assert row["typed"], row  # a LoaderError or parsed: never MemoryError or a crash
        assert row["peak"] <= BUDGET, row
    print("peak traced MiB:", {r["file"]: round(r["peak"] / 2**20, 2) for r in results})


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_rss_growth_of_parsing_one_bomb(bombs: dict[str, Path], name: str) -> None:
    report = _probe("--no-trace", str(bombs[name]))
    [row] = report["results"]
    assert row["typed"], row
    growth = int(report["end_rss"]) - int(report["start_rss"])  # type: ignore[call-overload]
    assert growth <= BUDGET, (name, growth)


def test_too_large_a_file_is_refused_before_reading(tmp_path: Path) -> None:
    big = tmp_path / "big.o"
    with big.open("wb") as f:
        f.truncate(limits.MAX_OBJECT_BYTES + 1)
    with pytest.raises(LimitError, match="MAX_OBJECT_BYTES"):
        ObjectSpec.from_file(big)
    with pytest.raises(LimitError, match="MAX_OBJECT_BYTES"):
        ObjectSpec.from_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * limits.MAX_OBJECT_BYTES)


def test_docs_state_the_bounds_the_code_has() -> None:
    doc = (REPO / "docs" / "loader.md").read_text()
    rules = doc[doc.index("**Bounded parsing**"):doc.index("**Fuzzed in CI**")]
    rules = " ".join(rules.split())
    assert f"at most {limits.MAX_OBJECT_BYTES >> 20} MiB per object" in rules
    for value, what in ((limits.MAX_SECTIONS, "sections"), (limits.MAX_SYMBOLS, "symbols"),
                        (limits.MAX_RELOCATIONS, "relocations"),
                        (limits.MAX_BTF_TYPES, "BTF types"),
                        (limits.MAX_BTF_MEMBERS, "members"),
                        (limits.MAX_BTF_EXT_RECORDS, "`.BTF.ext` records")):
        assert f"{value:,} {what}" in rules, what
    assert f"names of at most {limits.MAX_NAME} bytes" in rules
