"""The documentation a clone carries: a short README whose links resolve, and a page for every command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer

from clipcli.cli import app

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MARKDOWN_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# Design notes that live outside the repository; spelled in two parts so this file does not cite them.
OUTSIDE_NOTES = ("specs" + "/", "DESIGN" + ".md")


def local_links(page: Path) -> list[str]:
    return [link for link in MARKDOWN_LINK.findall(page.read_text(encoding="utf-8")) if "://" not in link]


def heading_anchors(page: Path) -> set[str]:
    """GitHub's anchors: each heading lower-cased, punctuation dropped, spaces turned into hyphens."""
    headings = re.findall(r"^#+\s+(.*)$", page.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def command_names() -> list[str]:
    """Every runnable subcommand, `models list` style for groups."""

    def walk(group, prefix: str) -> list[str]:
        names = []
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                names += walk(command, f"{prefix}{name} ")
            else:
                names.append(f"{prefix}{name}")
        return names

    return walk(typer.main.get_command(app), "")


def test_readme_is_under_250_lines():
    assert len(README.read_text(encoding="utf-8").splitlines()) < 250


@pytest.mark.parametrize("page", [README, *sorted(DOCS.rglob("*.md"))], ids=lambda page: str(page.relative_to(ROOT)))
def test_every_local_link_resolves_to_a_file_and_heading(page):
    for link in local_links(page):
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        assert path.exists(), f"{page.name} links to missing {link}"
        if anchor:
            assert anchor in heading_anchors(path), f"{page.name} links to missing heading {link}"


def test_no_code_cites_design_notes_outside_the_repository():
    citing = [
        f"{path.relative_to(ROOT)}: {note}"
        for folder in ("clipcli", "tests", "scripts")
        for path in (ROOT / folder).rglob("*.py")
        for note in OUTSIDE_NOTES
        if note in path.read_text(encoding="utf-8")
    ]
    assert citing == []


def test_every_subcommand_has_a_command_page_that_readme_links_to():
    assert len(command_names()) >= 14
    readme_pages = {(ROOT / link.partition("#")[0]).resolve() for link in local_links(README)}
    for name in command_names():
        pages = [page for page in (DOCS / "commands").glob("*.md") if f"`clipcli {name}`" in page.read_text("utf-8")]
        assert pages, f"no docs/commands page names `clipcli {name}`"
        assert any(page.resolve() in readme_pages for page in pages), f"README links no page for clipcli {name}"
