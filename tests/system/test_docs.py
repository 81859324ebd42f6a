"""The README is a front page and the docs hold the rest: its length, relative links (files and heading anchors),
every docs page reachable from another page, and the source paths the docs name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest


def _repo_root() -> Path:
    """The checkout's root: the nearest folder above this file with a pyproject.toml (wherever tests/ puts us)."""
    here = Path(__file__).resolve()
    return next(p for p in here.parents if (p / "pyproject.toml").is_file())


ROOT = _repo_root()
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 200

FENCE = re.compile(r"^```.*?^```[ \t]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`]*`")  # a span may wrap onto the next line
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
# A repo path in code (`plugin/inference/pose.py`, `packaging/dev/zoneminder.sh ...`); placeholders in capitals
# (`tests/system/scenarios/NAME.yaml`) are templates, not files.
SOURCE_PATH = re.compile(r"(?<![\w./-])(?:plugin|adapters|tests|packaging|triton_models|docs)/[\w./-]*")
PLACEHOLDER = re.compile(r"[A-Z]{2,}")


def _pages() -> list[Path]:
    """README.md and every Markdown page under docs/."""
    return [README, *sorted(DOCS.rglob("*.md"))]


def _prose(text: str) -> str:
    """The text with fenced code blocks and inline code removed, so only real Markdown links remain."""
    return CODE_SPAN.sub("code", FENCE.sub("", text))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading anchors on its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    """Every heading anchor of a page, with GitHub's -1, -2 suffixes for repeated headings."""
    seen: dict[str, int] = {}
    anchors = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        slug = _slug(heading)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def _relative_links(page: Path) -> list[str]:
    """The page's link targets that point inside the repository (not http(s), mail or pure in-page anchors)."""
    targets = LINK.findall(_prose(page.read_text(encoding="utf-8")))
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.IGNORECASE)]


def _resolve(page: Path, target: str) -> tuple[Path, str]:
    """The file a link points to and its anchor ('' when none)."""
    path, _, anchor = target.partition("#")
    return ((page.parent / path).resolve() if path else page.resolve()), anchor


def _rel(path: Path) -> str:
    """A path relative to the checkout, for messages."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def test_readme_is_a_front_page() -> None:
    """README.md stays a front page: at most 200 lines, the rest lives in docs/."""
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"


def test_docs_exist() -> None:
    """There is a docs/ folder with pages (otherwise the link checks below check nothing)."""
    assert len(_pages()) > 1, "docs/ has no Markdown pages"


@pytest.mark.parametrize("page", _pages(), ids=_rel)
def test_relative_links_resolve(page: Path) -> None:
    """Every relative link points to a file in the checkout, and an anchor to a heading of that file."""
    broken = []
    for target in _relative_links(page):
        path, anchor = _resolve(page, target)
        if not path.exists():
            broken.append(f"{target}: no file {_rel(path)}")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{target}: {_rel(path)} has no heading with anchor #{anchor}")
        elif not path.is_relative_to(ROOT):
            broken.append(f"{target}: outside the checkout")
    assert not broken, f"{_rel(page)}: broken links:\n" + "\n".join(broken)


def test_every_docs_page_is_linked() -> None:
    """Each page under docs/ is linked from README.md or from another docs page, so a reader can reach it."""
    linked: set[Path] = set()
    for page in _pages():
        for target in _relative_links(page):
            path, _ = _resolve(page, target)
            if path != page.resolve():
                linked.add(path)
    orphans = [_rel(p) for p in sorted(DOCS.rglob("*.md")) if p.resolve() not in linked]
    assert not orphans, f"docs pages no other page links to: {orphans}"


@pytest.mark.parametrize("page", _pages(), ids=_rel)
def test_source_paths_named_exist(page: Path) -> None:
    """Every repository path the page names in code (`plugin/...`, `tests/...`) exists, so a move cannot strand it."""
    text = page.read_text(encoding="utf-8")
    code = FENCE.findall(text) + CODE_SPAN.findall(FENCE.sub("", text))
    missing = sorted(
        {
            p.rstrip(".")
            for chunk in code
            for p in SOURCE_PATH.findall(chunk)
            if not PLACEHOLDER.search(p) and not (ROOT / p.rstrip(".")).exists()
        }
    )
    assert not missing, f"{_rel(page)} names paths that do not exist: {missing}"
