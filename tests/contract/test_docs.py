"""The README and the docs, as a reader meets them: the two commands first, and every link
pointing at something inside the repository that exists, the heading of an anchor included."""

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


def _heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower-cased, punctuation dropped (letters,
    digits, spaces, '-' and '_' kept), spaces to '-'; a repeated one gets -1, -2, ..."""
    anchors: set[str] = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not re.match(r"#{1,6} ", line):
            continue
        text = re.sub(r"`|\*\*", "", line.lstrip("#").strip())
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading: its text
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        anchor, n = slug, 0
        while anchor in anchors:
            n += 1
            anchor = f"{slug}-{n}"
        anchors.add(anchor)
    return anchors


LINKED_MARKDOWN = sorted({*DOCS, ROOT / "bench" / "README.md"})


@pytest.mark.parametrize("doc", LINKED_MARKDOWN, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_link_to_a_heading_finds_it(doc: Path) -> None:
    """A link with #anchor into a Markdown page names a heading that page has (headings get
    reworded; the link then silently lands at the top)."""
    for target in LINK.findall(doc.read_text()):
        if re.match(r"[a-z]+:", target) or "#" not in target:
            continue
        page, _, anchor = target.partition("#")
        path = (doc.parent / page).resolve() if page else doc
        if path.suffix != ".md" or not path.exists():
            continue  # not a Markdown page (a file's line, say), or the other test's failure
        assert anchor in _heading_anchors(path.read_text()), f"{doc.relative_to(ROOT)}: {target} names no heading"
