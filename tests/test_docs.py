"""The documentation as a reader meets it: every relative link and image resolves, and README stays a front page.

Checked files: README.md, CONTRIBUTING.md, docs/*.md and benchmarks/RESULTS.md (its table of contents). A link to a
Markdown file's `#anchor` must name one of that file's headings by the slug a repository host gives it (GitHub's:
lower case, punctuation dropped, spaces to hyphens, `-1`, `-2` ... for repeated headings).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 150
PICTURE_WITHIN = 25  # lines: the shipped styles' picture comes before any detail

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_SOURCE = re.compile(r"<(?:img|a)\b[^>]*?\b(?:src|href)=\"([^\"]+)\"", re.IGNORECASE)
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
ISSUE_NUMBER = re.compile(r"\bissues?\s*#?\d+", re.IGNORECASE)


def doc_files() -> list[Path]:
    """The Markdown pages whose links are checked."""
    files = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "benchmarks" / "RESULTS.md"]
    return files + sorted((ROOT / "docs").glob("*.md"))


def _lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    lines, in_fence = [], False
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            lines.append((number, line))
    return lines


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, inline code spans removed."""
    return [(number, INLINE_CODE.sub("", line)) for number, line in _lines(text)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: Markdown marks and punctuation dropped, lower case, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())  # \w: letters and digits of any script, and _
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, repeated headings numbered as GitHub numbers them."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in _lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every link and image in `path` outside code (a link's text may hold code)."""
    found = []
    for number, line in _lines(path.read_text(encoding="utf-8")):
        blanked = INLINE_CODE.sub(lambda m: " " * len(m.group(0)), line)  # positions kept, code spans blank
        found += [(number, m.group(1)) for pattern in (LINK, HTML_SOURCE) for m in pattern.finditer(blanked)]
    return found


def broken_link(source: Path, target: str, root: Path = ROOT) -> str | None:
    """Why `target` (as written in `source`) does not resolve, or None when it does (external links are not fetched)."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # https:, mailto: ...
        return None
    root = root.resolve()
    file_part, _, anchor = target.partition("#")
    resolved = (source.parent / unquote(file_part)).resolve() if file_part else source
    if not resolved.is_relative_to(root):
        return f"{target}: points outside the repository"
    if not resolved.exists():
        return f"{target}: no file {resolved.relative_to(root)}"
    if anchor and resolved.suffix == ".md" and unquote(anchor) not in anchors(resolved):
        return f"{target}: no heading with the anchor #{anchor} in {resolved.relative_to(root)}"
    return None


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_image_resolves(path):
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing"
    problems = [f"line {n}: {why}" for n, target in links(path) if (why := broken_link(path, target))]
    assert not problems, f"{path.relative_to(ROOT)}:\n" + "\n".join(problems)


def test_readme_is_a_front_page():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; keep it within {README_MAX_LINES}"
    pictures = [n for n, t in links(ROOT / "README.md") if t.lower().endswith((".jpg", ".jpeg", ".png", ".gif"))]
    assert pictures and pictures[0] <= PICTURE_WITHIN, f"README.md shows no picture in its first {PICTURE_WITHIN} lines"


@pytest.mark.parametrize("name", ["README.md", "CONTRIBUTING.md", "docs"])
def test_user_pages_speak_of_no_issue_numbers(name):
    paths = [ROOT / name] if name.endswith(".md") else sorted((ROOT / name).glob("*.md"))
    hits = [
        f"{p.relative_to(ROOT)}:{n}: {m.group(0)}"
        for p in paths
        for n, line in prose_lines(p.read_text(encoding="utf-8"))
        for m in ISSUE_NUMBER.finditer(re.sub(r"\]\([^)]*\)", "]", line))  # link targets may hold RESULTS' anchors
    ]
    assert not hits, "user-facing pages name tracker issues:\n" + "\n".join(hits)


def test_the_slugs_are_githubs():
    assert slug("Quick start") == "quick-start"
    assert slug("`composition_vii`: the new default stage, then the objective alone at 320 px") == (
        "composition_vii-the-new-default-stage-then-the-objective-alone-at-320-px"
    )
    assert slug("The teacher's objective alone: `the_scream_slim` at 1.06×") == (
        "the-teachers-objective-alone-the_scream_slim-at-106"
    )
    assert slug("A CPU with native bf16: AVX512-BF16, no AMX") == "a-cpu-with-native-bf16-avx512-bf16-no-amx"


def test_a_broken_link_is_found(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other page\n\n## Twice\n\n## Twice\n")
    page.write_text(
        "# Title\n\n[ok](#title) [gone](missing.md) [bad anchor](#nothing) `[code](nowhere.md)`\n"
        "![img](pic.png) [`code` text](other.md#twice-1) [no](other.md#twice-2) [web](https://example.org/x)\n"
        "```\n[fenced](fenced.md)\n```\n"
    )
    problems = [why for _, target in links(page) if (why := broken_link(page, target, root=tmp_path))]
    assert len(problems) == 4, problems
    assert ["missing.md" in problems[0], "#nothing" in problems[1], "pic.png" in problems[2]] == [True] * 3
    assert "#twice-2" in problems[3]
