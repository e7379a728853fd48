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


def worked_example_pipeline() -> str:
    """The pipeline module of adding-a-command.md: the python block of its section 1."""
    guide = (DOCS / "adding-a-command.md").read_text(encoding="utf-8")
    section = guide.split("\n## 1. ", 1)[1].split("\n## 2. ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, flags=re.DOTALL).group(1)


def test_the_worked_example_pipeline_embeds_images_and_fails_a_broken_one_alone(tmp_path, monkeypatch, tiny_vit_path):
    import importlib.util
    import sys

    import numpy as np

    from clipcli.models import load_clip
    from tests.makers.images import draw_shapes_image, write_image

    module_path = tmp_path / "embed_example.py"
    module_path.write_text(worked_example_pipeline(), encoding="utf-8")
    spec = importlib.util.spec_from_file_location("embed_example", module_path)
    embed_example = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "embed_example", embed_example)
    spec.loader.exec_module(embed_example)
    write_image(tmp_path / "good.png", draw_shapes_image(64))
    (tmp_path / "broken.png").write_bytes(b"not a png")

    inputs = [tmp_path / "broken.png", tmp_path / "good.png"]
    report = embed_example.run(inputs, out=tmp_path / "out", model_name=str(tiny_vit_path), device="cpu")
    rerun = embed_example.run(inputs, out=tmp_path / "out", model_name=str(tiny_vit_path), device="cpu")

    width = load_clip(tiny_vit_path, "cpu")[0].visual.output_dim
    assert [(result.input, result.status) for result in report.results] == [
        (str(tmp_path / "broken.png"), "failed"),
        (str(tmp_path / "good.png"), "ok"),
    ]
    assert "broken.png" in report.failed[0].error
    vector = np.load(tmp_path / "out" / "good_embedding.npy")
    assert vector.shape == (width,)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    assert report.ok[0].data == {"dimensions": width, "output": str(tmp_path / "out" / "good_embedding.npy")}
    assert not (tmp_path / "out" / "broken_embedding.npy").exists()
    assert report.as_json()["counts"] == {"ok": 1, "skipped": 0, "failed": 1}
    assert [result.status for result in rerun.results] == ["failed", "skipped"]
