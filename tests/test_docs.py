"""The README and docs/: every relative link resolves (file and heading), every test file they
name exists, the README shows the two commands and lists every `dfe` command, and the docs
index lists every page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)


def _prose(text: str) -> str:
    """The text without fenced code blocks (a `# comment` there is no heading)."""
    return FENCE.sub("", text)


def _anchors(path: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation but `-` and `_` dropped, spaces to `-`,
    repeats numbered."""
    seen: dict[str, int] = {}
    out = set()
    for line in _prose(path.read_text()).splitlines():
        match = re.match(r"#{1,6} (.+)", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match[1].strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def test_the_docs_exist():
    assert len(PAGES) > 2, PAGES


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page: Path):
    bad = []
    for target in LINK.findall(_prose(page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked offline
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            bad.append(f"{target}: no file {dest}")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target}: no heading #{anchor} in {dest.relative_to(REPO)}")
    assert not bad, "\n".join(bad)


TEST_PATH = re.compile(r"\btests/[\w/]+\.py(?:::\w+)?")


def _current(text: str) -> str:
    """The text without the sections about history ("What moved ..."), whose tables name
    where files were."""
    return re.sub(r"^(#{1,6}) What moved.*?(?=^#{1,6} |\Z)", "", text, flags=re.M | re.S)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_named_test_files_exist(page: Path):
    """Every ``tests/...py`` (and ``::test_name``) a page names exists."""
    bad = []
    for named in sorted(set(TEST_PATH.findall(_current(page.read_text())))):
        path, _, func = named.partition("::")
        file = REPO / path
        if not file.is_file():
            bad.append(f"{named}: no file")
        elif func and not re.search(rf"^\s*(?:async )?def {func}\(", file.read_text(), re.M):
            bad.append(f"{named}: no test {func} in {path}")
    assert not bad, "\n".join(bad)


def test_readme_shows_the_two_commands():
    readme = (REPO / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme


def test_readme_lists_every_dfe_command():
    import argparse

    from engine.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    readme = (REPO / "README.md").read_text()
    missing = [name for name in sub.choices if f"| `dfe {name}` |" not in readme]
    assert not missing, f"README's command table lacks {missing}"


def test_docs_index_lists_every_page():
    index = (REPO / "docs" / "README.md").read_text()
    pages = [p.name for p in PAGES if p.parent.name == "docs" and p.name != "README.md"]
    missing = [name for name in pages if f"]({name})" not in index]
    assert not missing, f"docs/README.md does not link {missing}"
