"""examples/README.md says what every example needs, and the chart's NOTES.txt only offers
commands that work on a fresh install (the whole directory does not: issue 10)."""
from __future__ import annotations

import yaml

from tests.policy.conftest import EXAMPLES, REPO


def test_every_example_is_listed_with_its_namespace() -> None:
    readme = (EXAMPLES / "README.md").read_text()
    rows = {line.split("|")[1].strip().strip("`"): line.split("|")[2].strip().strip("`")
            for line in readme.splitlines() if line.startswith("| `")}
    for path in sorted(EXAMPLES.glob("*.yaml")):
        obj = yaml.safe_load(path.read_text())
        namespace = obj["metadata"].get("namespace", "(cluster-scoped)")
        assert rows.get(path.name) == namespace, path.name
    assert set(rows) == {p.name for p in EXAMPLES.glob("*.yaml")}


def test_notes_create_the_namespace_and_apply_only_what_needs_nothing_else() -> None:
    notes = (REPO / "charts" / "lwt-operator" / "templates" / "NOTES.txt").read_text()
    assert "kubectl apply -f examples/ " not in notes and "apply -f examples/\n" not in notes
    assert "kubectl create namespace shop" in notes
    readme = (EXAMPLES / "README.md").read_text()
    for line in notes.splitlines():
        if "kubectl apply" in line:
            for name in (w.removeprefix("examples/") for w in line.split() if
                         w.startswith("examples/")):
                row = next(r for r in readme.splitlines() if r.startswith(f"| `{name}`"))
                assert row.split("|")[3].strip().startswith("the namespace"), row
