"""The README and the docs, as a reader meets them: the two commands first, and every link
pointing at something inside the repository that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [
    ROOT / "README.md",
    ROOT / "CONTRIBUTING.md",
    ROOT / "clients" / "README.md",
    ROOT / "deploy" / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_readme_opens_with_the_two_commands() -> None:
    lines = [line for line in (ROOT / "README.md").read_text().splitlines() if line.strip()]
    commands = [line.split("#")[0].strip() for line in lines[:6] if line.startswith("bash ")]
    assert commands == ["bash scripts/dev.sh", "bash scripts/test.sh"], lines[:6]
    assert lines[0].startswith("# "), "the title comes first"


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_links_stay_inside_the_repository_and_resolve(doc: Path) -> None:
    text = doc.read_text()
    assert "/work/" not in text and "shared/API.md" not in text, f"{doc} points outside the repository"
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a URL, or an anchor in the same page
        path = (doc.parent / target.split("#")[0]).resolve()
        assert path.is_relative_to(ROOT), f"{doc}: {target} leaves the repository"
        assert path.exists(), f"{doc}: {target} does not exist"
