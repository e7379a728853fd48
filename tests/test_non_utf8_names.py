"""Every command that writes files, run on inputs whose names are not UTF-8 (`caf\\xe9` in Latin-1).

Such names reach Python as surrogate escapes; a library that encodes them
strictly, or OpenCV's imwrite (which crashes on them), must never see one.
Outputs are found by globbing, so the test holds whatever the naming scheme.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import test_audio_tag
from makers.audio import write_noise
from makers.images import draw_shapes_image, write_image
from makers.points import cube_points, write_xyz
from makers.video import write_video
from typer.testing import CliRunner

from clipcli.cli import app
from clipcli.media.images import load_image_unchanged
from clipcli.render.svg import read_svg

runner = CliRunner()
CAFE = os.fsdecode(b"caf\xe9")
audioclip_state, audioclip_file = test_audio_tag.audioclip_state, test_audio_tag.audioclip_file  # its tiny AudioCLIP


def invoke(*args):
    result = runner.invoke(app, [*map(str, args), "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    return result


def outputs_by_kind(folder: Path) -> dict[str, Path]:
    """Every file under `folder`, keyed by its relative path with the input's name as NAME; no temp file anywhere."""
    files = [path for path in folder.rglob("*") if path.is_file()]
    assert not [path for path in files if ".tmp" in path.name], files
    return {str(path.relative_to(folder)).replace(CAFE, "NAME", 1): path for path in files}


@pytest.fixture
def photo(tmp_path) -> Path:
    return write_image_under(tmp_path / f"{CAFE}.png")


def write_image_under(path: Path) -> Path:
    write_image(path, draw_shapes_image((60, 80), seed=7))
    return path


def write_video_under(path: Path, frames: int) -> Path:
    """The test video writer hands OpenCV a name, so it writes an ASCII one that is then renamed."""
    return write_video(path.with_name("video.mp4"), frames, fps=10).rename(path)


@pytest.mark.parametrize("animate", ["gif", "mp4"])
def test_sketch_writes_svg_png_json_and_animation(photo, tmp_path, tiny_rn_path, tiny_vit_path, animate):
    out = tmp_path / "out"
    invoke("sketch", photo, "--model", tiny_rn_path, "--saliency-model", tiny_vit_path, "--strokes", 4,
           "--iterations", 2, "--seeds", 1, "--augmentations", 1, "--size", 64, "--animate", animate,
           "--out", out)  # fmt: skip
    kinds = outputs_by_kind(out)
    assert all(kind.startswith("NAME") for kind in kinds)
    assert sorted(Path(kind).suffix for kind in kinds) == sorted([".svg", ".png", ".json", f".{animate}"])
    svg, png = (next(path for kind, path in kinds.items() if kind.endswith(ext)) for ext in (".svg", ".png"))
    assert read_svg(svg)[0].shape == (4, 4, 2)
    assert load_image_unchanged(png).shape == (64, 64)


def test_depth_writes_metres_millimetres_and_colour(photo, tmp_path, tiny_rn_path):
    out = tmp_path / "out"
    invoke("depth", photo, "--model", tiny_rn_path, "--out", out)
    kinds = outputs_by_kind(out)
    assert all(kind.startswith("NAME") for kind in kinds) and len(kinds) == 3
    depth = np.load(next(path for path in kinds.values() if path.suffix == ".npy"))
    pictures = [load_image_unchanged(path) for path in kinds.values() if path.suffix == ".png"]
    assert depth.shape == (60, 80)
    assert sorted(picture.dtype.name for picture in pictures) == ["uint16", "uint8"]
    millimetres = next(picture for picture in pictures if picture.dtype == np.uint16)
    np.testing.assert_array_equal(millimetres, np.clip(np.round(depth * 1000), 0, 65535))


def test_point_classify_saves_the_views_picture(tmp_path, tiny_vit_path):
    cloud = write_xyz(tmp_path / f"{CAFE}.xyz", cube_points(256))
    out = tmp_path / "out"
    invoke("point-classify", cloud, "--model", tiny_vit_path, "--labels", "modelnet40", "--points", 128,
           "--save-views", "--out", out)  # fmt: skip
    ((kind, views),) = outputs_by_kind(out).items()
    assert kind.startswith("NAME") and kind.endswith(".png")
    picture = load_image_unchanged(views)
    assert picture.ndim == 3 and picture.shape[2] == 3 and picture.std() > 0


def test_classify_action_plots_the_timeline(tmp_path, tiny_vit_path):
    video = write_video_under(tmp_path / f"{CAFE}.mp4", 30)
    out = tmp_path / "out"
    invoke("classify-action", video, "--model", tiny_vit_path, "--labels", "juggling,cycling", "--frames", 2,
           "--window", 1, "--plot", "--out", out)  # fmt: skip
    ((kind, plot),) = outputs_by_kind(out).items()
    assert kind.startswith("NAME") and kind.endswith(".png") and load_image_unchanged(plot).ndim == 3


@pytest.mark.parametrize(
    ("layout", "shapes"),
    [
        ("vqa", {"NAME.npy": (1, 18, 31, 512)}),
        ("caption", {"att/NAME.npz": (14, 14, 512), "fc/NAME.npy": (256,)}),
    ],
)
def test_features_writes_one_file_per_kind(photo, tmp_path, tiny_rn_path, layout, shapes):
    out = tmp_path / "out"
    invoke("features", photo, "--model", tiny_rn_path, "--layout", layout, "--out", out)
    written = outputs_by_kind(out)
    assert set(written) == set(shapes)
    for kind, path in written.items():
        array = np.load(path)
        assert (array["feat"] if path.suffix == ".npz" else array).shape == shapes[kind]


def test_features_pooled_lists_the_input_by_name(photo, tmp_path, tiny_rn_path):
    out = tmp_path / "out"
    invoke("features", photo, "--model", tiny_rn_path, "--layout", "pooled", "--out", out)
    assert not [path for path in out.rglob("*") if ".tmp" in path.name]
    (matrix,) = out.glob("*.npy")
    (description,) = out.glob("*.json")
    assert np.load(matrix).shape[0] == 1
    assert json.loads(description.read_text())["images"] == [str(photo)]


def test_retrieve_indexes_and_finds_the_video(tmp_path, tiny_vit_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    video = write_video_under(folder / f"{CAFE}.mp4", 12)
    index = tmp_path / "index"
    result = invoke("retrieve", folder, "a square", "--model", tiny_vit_path, "--index", index, "--json")
    hits = json.loads(result.stdout)["hits"]
    assert [hit["path"] for hit in hits] == [str(video)]
    assert any(index.iterdir()) and not [path for path in index.rglob("*") if ".tmp" in path.name]


def test_audio_tag_ranks_and_caches_the_image(tmp_path, audioclip_file, isolated_home):
    sound = tmp_path / f"{CAFE}.wav"
    write_noise(sound, 0.4, 44100, amplitude=0.2)
    images = tmp_path / "images"
    write_image_under(images / f"{CAFE}.png")
    result = invoke("audio-tag", sound, "--checkpoint", audioclip_file, "--window", 0.4, "--images", images, "--json")
    (row,) = json.loads(result.stdout)["results"]
    assert [entry["image"] for entry in row["images"]] == [str(images / f"{CAFE}.png")]
    cache = isolated_home / ".cache" / "clipcli"
    assert list(cache.rglob("*.npz")) and not [path for path in cache.rglob("*") if ".tmp" in path.name]


def test_a_bad_input_is_named_in_a_one_line_error(tmp_path, tiny_rn_path):
    notes = tmp_path / f"{CAFE}.png"
    notes.write_text("not a picture")
    result = runner.invoke(app, ["depth", str(notes), "--model", str(tiny_rn_path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line.endswith(".png: not an image (or an unsupported image format)") and "caf" in line


def test_tables_print_the_name_as_stored(tmp_path, tiny_rn_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a short relative name, so the table shows it whole
    write_image_under(tmp_path / f"{CAFE}.png")
    result = invoke("features", f"{CAFE}.png", "--model", tiny_rn_path, "--out", "out")
    assert b"caf\xe9.png" in result.stdout_bytes
