"""The repository stands alone: nothing cites files users do not have, and every citation
of docs/kernel-facts.md names a section that exists."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEXT_SUFFIXES = {".py", ".md", ".c", ".h", ".sh", ".yaml", ".yml", ".toml", ".txt", ""}


def tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    return [REPO / n for n in names
            if Path(n).suffix in TEXT_SUFFIXES and (REPO / n).is_file()
            and not n.startswith("tests/test_docs_stand_alone")]


def anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def test_no_file_cites_the_design_notes_outside_the_repository() -> None:
    offenders = [str(p.relative_to(REPO)) for p in tracked_text_files()
                 if re.search(r"DESIGN\.md|DESIGN §|\.\./shared/",
                              p.read_text(errors="replace"))]
    assert offenders == []


def test_kernel_facts_citations_name_existing_sections() -> None:
    facts = (REPO / "docs" / "kernel-facts.md").read_text()
    sections = {anchor(h) for h in re.findall(r"^## (.+)$", facts, re.M)}
    cited = {m for p in tracked_text_files()
             for m in re.findall(r"kernel-facts\.md#([a-z0-9-]+)", p.read_text(errors="replace"))}
    assert cited, "nothing cites docs/kernel-facts.md"
    assert cited <= sections, sorted(cited - sections)
