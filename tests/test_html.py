"""`--html FILE`: the page parses, its links and inlined pictures resolve, and names from files are escaped."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote_to_bytes

import numpy as np
import pytest
import soundfile as sf
import test_audio_tag
from makers.audio import write_tone
from makers.images import draw_shapes_image, write_image
from makers.points import cube_points, write_npy
from makers.report import json_rows
from makers.video import write_video
from PIL import Image
from typer.testing import CliRunner

from clipcli.cli import app
from clipcli.cli.html_pages import write_html
from clipcli.render.html import Links, bar_chart, element, text
from clipcli.runner import Report, Result

runner = CliRunner()
audioclip_state, audioclip_file = test_audio_tag.audioclip_state, test_audio_tag.audioclip_file  # its tiny AudioCLIP

NASTY = "a<b>&\"q'"  # a name that would break markup unescaped
LATIN1 = os.fsdecode(b"caf\xe9")  # a name that is not UTF-8
VOID = {"meta", "img", "br", "link", "input", "hr"}


class StrictPage(HTMLParser):
    """Parses a page, failing on a tag closed out of order; collects every href and src."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.links: list[str] = []
        self.sources: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.links += [attributes["href"]] if "href" in attributes else []
        self.sources += [attributes["src"]] if "src" in attributes else []
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()

    def handle_data(self, data):
        self.text.append(data)


def checked_page(path: Path) -> StrictPage:
    """The parsed page, after checking its tags balance, its relative links exist and its data: images decode."""
    parser = StrictPage()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    assert parser.open == [], f"unclosed {parser.open}"
    for link in parser.links + parser.sources:
        if link.startswith("data:"):
            continue
        assert "://" not in link, f"external resource {link}"
        target = os.path.join(os.fsencode(path.parent), unquote_to_bytes(link.split("#")[0]))
        assert os.path.isfile(target), f"{link} does not resolve"
    for source in parser.sources:
        assert source.startswith("data:image/"), source
        with Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))) as image:
            image.load()
            assert max(image.size) <= 256
    return parser


def run(*args) -> object:
    return runner.invoke(app, [*map(str, args), "--device", "cpu"])


@pytest.fixture
def named_images(tmp_path) -> list[Path]:
    """Two images with names that need escaping and percent-encoding, and one that cannot be read."""
    folder = tmp_path / "in"
    folder.mkdir()
    images = [folder / f"{NASTY}.png", folder / f"{LATIN1}.png"]
    for seed, path in enumerate(images):
        write_image(path, draw_shapes_image((64, 96), seed=seed))
    broken = folder / "broken<i>.png"
    broken.write_bytes(b"not a png")
    return [*images, broken]


def test_depth_page_shows_each_image_beside_its_depth_and_the_failed_one(tiny_rn_path, tmp_path, named_images):
    page = tmp_path / "report" / "depth.html"
    result = run("depth", *named_images, "--model", tiny_rn_path, "--out", tmp_path / "out", "--json", "--html", page)
    assert result.exit_code == 4, result.output
    failed = json_rows(result.stdout)[2]
    parser = checked_page(page)
    document = page.read_text(encoding="utf-8")
    assert "<b>" not in document and "<i>" not in document  # the names' markup is escaped
    assert "a&lt;b&gt;&amp;&quot;q&#x27;.png" in document and "caf\ufffd.png" in document
    hrefs = {unquote_to_bytes(link) for link in parser.links}
    assert b"../in/caf\xe9.png" in hrefs and b"../out/caf\xe9_depth_color.png" in hrefs
    assert b"../out/a<b>&\"q'_depth.npy" in hrefs
    assert sum(source.startswith("data:image/") for source in parser.sources) == 4  # 2 images, 2 depth pictures
    assert "1.00 m to 3.00 m (magma)" in document
    assert {failed["input"], "failed", failed["error"]} <= set(parser.text)


def test_writing_the_page_leaves_stdout_and_the_json_as_they_were(tiny_rn_path, tmp_path, named_images):
    common = [named_images[0], "--model", tiny_rn_path, "--json", "--overwrite"]
    plain = run("depth", *common, "--out", tmp_path / "a")
    paged = run("depth", *common, "--out", tmp_path / "a", "--html", tmp_path / "page.html")
    assert plain.exit_code == paged.exit_code == 0, paged.output
    rows = [[{k: v for k, v in row.items() if k != "seconds"} for row in json_rows(r.stdout)] for r in (plain, paged)]
    assert rows[0] == rows[1] and (tmp_path / "page.html").is_file()
    assert {key for key in json.loads(paged.stdout)} == {key for key in json.loads(plain.stdout)}


def test_sketch_page_shows_original_beside_sketch_with_loss_seed_and_steps(tiny_rn_path, tiny_vit_path, tmp_path):
    image = tmp_path / f"{NASTY}.png"
    write_image(image, draw_shapes_image((64, 64), seed=1))
    page = tmp_path / "sketch.html"
    result = run("sketch", image, "--model", tiny_rn_path, "--saliency-model", tiny_vit_path, "--strokes", 3,
                 "--iterations", 2, "--seeds", 1, "--augmentations", 1, "--size", 64, "--seed", 7,
                 "--no-early-stop", "--out", tmp_path / "out", "--json", "--html", page)  # fmt: skip
    assert result.exit_code == 0, result.output
    (row,) = json_rows(result.stdout)
    parser = checked_page(page)
    assert {"out/a%3Cb%3E%26%22q%27_sketch.svg", "out/a%3Cb%3E%26%22q%27_sketch.png"} <= set(parser.links)
    cells = [piece.strip() for piece in parser.text if piece.strip()]
    assert f"{row['loss']:.4f}" in cells and "7" in cells and "2" in cells
    assert len(parser.sources) == 2


def test_audio_page_lists_tags_and_a_timeline_bar_per_window(audioclip_file, tmp_path):
    tone, empty = tmp_path / f"{NASTY}.wav", tmp_path / "empty.wav"
    write_tone(tone, 440.0, 2.5, 44100)
    sf.write(empty, np.zeros(0, np.int16), 44100, subtype="PCM_16")
    page = tmp_path / "tags.html"
    result = run("audio-tag", tone, empty, "--checkpoint", audioclip_file, "--labels", "us8k", "--window", "1",
                 "--top-k", "3", "--json", "--html", page)  # fmt: skip
    assert result.exit_code == 4, result.output
    rows = json_rows(result.stdout)
    parser = checked_page(page)
    document = page.read_text(encoding="utf-8")
    assert document.count("<rect ") == len(rows[0]["windows"]) == 3
    cells = [piece.strip() for piece in parser.text if piece.strip()]
    for tag in rows[0]["tags"]:
        assert cells[cells.index(tag["label"]) + 1] == f"{tag['score']:.4f}"
    assert str(empty) in cells and rows[1]["error"] in cells


def test_point_page_shows_the_views_and_top_labels_of_each_cloud(tiny_vit_path, tmp_path):
    cloud = write_npy(tmp_path / f"{NASTY}.npy", cube_points(300, 0))
    page = tmp_path / "points.html"
    result = run("point-classify", cloud, "--labels", "cube,ball,can", "--points", 64, "--save-views",
                 "--out", tmp_path / "views", "--model", tiny_vit_path, "--json", "--html", page)  # fmt: skip
    assert result.exit_code == 0, result.output
    (row,) = json_rows(result.stdout)
    parser = checked_page(page)
    cells = [piece.strip() for piece in parser.text if piece.strip()]
    assert [cells[cells.index(p["label"]) + 1] for p in row["predictions"]] == [
        f"{p['probability']:.4f}" for p in row["predictions"]
    ]
    assert "views/a%3Cb%3E%26%22q%27_views.png" in parser.links and len(parser.sources) == 1


def test_action_page_shows_the_timeline_plot_and_each_windows_top_labels(tiny_vit_path, tmp_path):
    video = write_video(tmp_path / "long.mp4", 40, fps=10)
    page = tmp_path / "actions.html"
    options = ["--frames", 2, "--window", 2, "--plot", "--out", tmp_path / "plots", "--json", "--html", page]
    result = run("classify-action", video, "--model", tiny_vit_path, "--labels", "juggling,riding,playing", *options)
    assert result.exit_code == 0, result.output
    (row,) = json_rows(result.stdout)
    parser = checked_page(page)
    assert "plots/long_actions.png" in parser.links and "long.mp4" in parser.links and len(parser.sources) == 1
    spans = [f"{window[key]:.2f}" for window in row["windows"] for key in ("start", "end")]
    assert [piece for piece in parser.text if piece in spans] == spans == ["0.00", "2.00", "2.00", "4.00"]


def test_vqa_page_shows_the_question_and_each_images_ranked_answers(tiny_vit_path, tmp_path, named_images):
    page = tmp_path / "vqa.html"
    result = run("vqa", *named_images, "What colour is the <car>?", "--answers", "red,blue", "--model", tiny_vit_path,
                 "--json", "--html", page)  # fmt: skip
    assert result.exit_code == 4, result.output
    rows = json_rows(result.stdout)
    parser = checked_page(page)
    assert "What colour is the <car>?" in parser.text and "<car>" not in page.read_text(encoding="utf-8")
    statements = [answer["statement"] for row in rows[:2] for answer in row["top"]]
    assert [piece for piece in parser.text if piece in statements] == statements
    assert len(parser.sources) == 2 and rows[2]["error"] in parser.text


def test_retrieve_page_shows_each_hits_best_frames_linking_to_the_video_at_their_time(tmp_path):
    (tmp_path / "clips").mkdir()
    video = write_video(tmp_path / "clips" / "clip.mp4", 40, fps=10).rename(tmp_path / "clips" / f"{NASTY}.mp4")
    segment = {"start": 1.0, "end": 3.0, "peak": 2.0, "peak_score": 0.3}
    hits = [{"rank": 1, "score": 0.31, "path": str(video), "duration": 4.0, "segment": segment},
            {"rank": 2, "score": 0.12, "path": str(tmp_path / "gone.mp4"), "duration": 2.0}]  # fmt: skip
    results = [Result.skipped(tmp_path / f"{n}.mp4", "already indexed") for n in range(30)]
    results.append(Result("bad.mp4", "failed", error="bad.mp4: no video stream"))
    write_html(tmp_path / "page" / "hits.html", Report("retrieve", results, {"hits": hits}))
    parser = checked_page(tmp_path / "page" / "hits.html")
    quoted = "../clips/a%3Cb%3E%26%22q%27.mp4"
    assert [link for link in parser.links if link.startswith(quoted + "#")] == [
        f"{quoted}#t={t}" for t in ("1.00", "2.00", "3.00")
    ]
    assert (
        len(set(parser.sources)) == 3 and "no preview" in parser.text
    )  # three different frames and "1.00-3.00 s" in parser.text
    assert {"30 inputs", "already indexed", "bad.mp4: no video stream"} <= set(parser.text)  # 30 skipped, counted


def test_retrieve_command_page_ranks_the_hits_under_the_query(tiny_vit_path, tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPCLI_INDEX_HOME", str(tmp_path / "indexes"))
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("one", "two"):
        write_video(folder / f"{name}.mp4", 20, fps=10)
    page = tmp_path / "hits.html"
    result = run("retrieve", folder, "a <square>", "--model", tiny_vit_path, "--segments", "--json", "--html", page)
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)["hits"]
    parser = checked_page(page)
    assert "a <square>" in parser.text and [piece for piece in parser.text if piece.endswith(".mp4")] == [
        str(Path(hit["path"])) for hit in hits
    ]
    starts = [f"videos/{Path(hit['path']).name}#t={hit['segment']['start']:.2f}" for hit in hits]
    assert all(start in parser.links for start in starts) and len(parser.sources) == 3 * len(hits) == 6


def test_a_page_that_cannot_be_written_names_the_file_and_exits_2(tiny_rn_path, tmp_path, named_images):
    (tmp_path / "file").write_text("")
    result = run(
        "depth", named_images[0], "--model", tiny_rn_path, "--out", tmp_path, "--html", tmp_path / "file" / "x.html"
    )
    assert result.exit_code == 2 and "x.html" in result.stderr and "cannot write the page" in result.stderr


def test_names_and_links_are_escaped_and_percent_encoded_from_their_bytes(tmp_path):
    links = Links(tmp_path / "pages")
    assert links.href(tmp_path / f"{LATIN1} #1.mp4", "t=2.5") == "../caf%E9%20%231.mp4#t=2.5"
    assert text(f"{NASTY}{LATIN1}") == text(Path(NASTY + LATIN1)) == "a&lt;b&gt;&amp;&quot;q&#x27;caf\ufffd"
    assert (
        element("a", NASTY, href='x" onclick="y')
        == '<a href="x&quot; onclick=&quot;y">a&lt;b&gt;&amp;&quot;q&#x27;</a>'
    )


def test_bar_chart_draws_one_bar_per_value_scaled_to_its_height():
    chart = bar_chart([0.0, 0.5, 1.0], ["a", "b<", "c"], width=30, height=52)
    assert chart.count("<rect ") == 3 and 'height="20.0"' in chart and 'height="40.0"' in chart
    assert "<title>b&lt;</title>" in chart


def test_skipped_inputs_appear_with_their_reason(tmp_path):
    report = Report("depth", [Result.skipped(tmp_path / "old.png")], {"bins": [1.0, 2.0], "colormap": "magma"})
    write_html(tmp_path / "page.html", report)
    parser = checked_page(tmp_path / "page.html")
    assert "outputs exist (use --overwrite)" in parser.text and "skipped" in parser.text


def test_the_page_renders_in_a_headless_browser(tiny_rn_path, tmp_path, named_images):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed; the page is not rendered by a browser here")
    page = tmp_path / "depth.html"
    run("depth", *named_images[:2], "--model", tiny_rn_path, "--out", tmp_path / "out", "--html", page)
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=900,700", page.as_uri()], check=True, capture_output=True, timeout=120)  # fmt: skip
    with Image.open(shot) as picture:
        colours = picture.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # the thumbnails drew, not a blank page
