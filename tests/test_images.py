"""clipcli.media.images: channel order, alpha, palettes, EXIF orientation, bit depth and bad files."""

from __future__ import annotations

import os
import warnings

import cv2
import numpy as np
import pytest
from makers.images import (
    draw_shapes_image,
    quadrants_image,
    write_black_png,
    write_exif_rotated_jpeg,
    write_image,
    write_palette_png,
)
from PIL import EpsImagePlugin, Image, ImageOps
from typer.testing import CliRunner

from clipcli.cli import app
from clipcli.errors import EXIT_BAD_INPUT, BadInputError
from clipcli.media import images
from clipcli.media.images import (
    IMAGE_EXTENSIONS,
    MAX_IMAGE_PIXELS,
    composite_on_white,
    load_image,
    load_image_rgba,
    load_image_unchanged,
    write_png,
)
from clipcli.pipelines.depth_eval import load_ground_truth

RED, GREEN, BLUE, YELLOW = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)


def over_white(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The expected composite, written out independently: c * a + 255 * (1 - a), rounded."""
    a = alpha.astype(np.float64)[..., None] / 255
    return np.rint(color * a + 255 * (1 - a)).astype(np.uint8)


def assert_bad_input(path, *words: str) -> None:
    """Both readers raise a one-line BadInputError naming the file and the problem."""
    for reader in (load_image, load_image_rgba):
        with pytest.raises(BadInputError) as caught:
            reader(path)
        message = str(caught.value)
        assert message.startswith(f"{path}: ")
        assert "\n" not in message
        assert caught.value.exit_code == EXIT_BAD_INPUT
        for word in words:
            assert word in message


@pytest.fixture
def pil_only(monkeypatch):
    """Force the Pillow fallback, as for formats OpenCV cannot decode."""
    monkeypatch.setattr(images, "_decode_opencv", lambda data: None)


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tiff", ".ppm"])
def test_lossless_rgb_round_trip_is_exact(tmp_path, suffix):
    rgb = np.random.default_rng(0).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    path = tmp_path / f"noise{suffix}"
    write_image(path, rgb)
    loaded = load_image(path)
    assert loaded.dtype == np.uint8 and loaded.shape == (17, 23, 3)
    np.testing.assert_array_equal(loaded, rgb)
    rgba = load_image_rgba(path)
    np.testing.assert_array_equal(rgba[..., :3], rgb)
    assert (rgba[..., 3] == 255).all()


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_red_reads_as_red(tmp_path, suffix):
    path = tmp_path / f"red{suffix}"
    write_image(path, np.full((16, 16, 3), RED, np.uint8))
    np.testing.assert_allclose(load_image(path)[8, 8], RED, atol=2)


def test_half_transparent_rgba_is_composited_on_white(tmp_path):
    rgba = np.array([[[255, 0, 0, 128], [0, 0, 255, 0], [10, 200, 30, 255], [0, 0, 0, 64]]], np.uint8)
    path = tmp_path / "alpha.png"
    write_image(path, rgba)
    np.testing.assert_array_equal(load_image_rgba(path), rgba)
    rgb = load_image(path)
    np.testing.assert_array_equal(rgb, over_white(rgba[..., :3], rgba[..., 3]))
    np.testing.assert_array_equal(rgb[0, 0], [255, 127, 127])
    np.testing.assert_array_equal(rgb[0, 1], [255, 255, 255])


def test_gray_alpha_png(tmp_path):
    gray_alpha = np.stack([np.full((2, 3), 40, np.uint8), np.array([[255, 128, 0], [64, 255, 0]], np.uint8)], axis=2)
    path = tmp_path / "la.png"
    write_image(path, gray_alpha)
    rgba = load_image_rgba(path)
    np.testing.assert_array_equal(rgba[..., :3], np.full((2, 3, 3), 40))
    np.testing.assert_array_equal(rgba[..., 3], gray_alpha[..., 1])
    np.testing.assert_array_equal(load_image(path), over_white(np.full((2, 3, 3), 40), gray_alpha[..., 1]))


@pytest.mark.parametrize("decoder", ["opencv", "pil"])
def test_palette_png_with_transparency(tmp_path, request, decoder):
    if decoder == "pil":
        request.getfixturevalue("pil_only")
    palette = np.array([RED, GREEN, BLUE], np.uint8)
    alpha = np.array([255, 128, 0], np.uint8)
    indices = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    path = tmp_path / "palette.png"
    write_palette_png(path, indices, palette, alpha)
    rgba = load_image_rgba(path)
    np.testing.assert_array_equal(rgba[..., :3], palette[indices])
    np.testing.assert_array_equal(rgba[..., 3], alpha[indices])
    np.testing.assert_array_equal(load_image(path), over_white(palette[indices], alpha[indices]))


def test_palette_png_without_transparency(tmp_path):
    palette = np.array([RED, GREEN, BLUE], np.uint8)
    indices = np.array([[0, 1], [2, 0]], np.uint8)
    path = tmp_path / "palette.png"
    write_palette_png(path, indices, palette)
    np.testing.assert_array_equal(load_image(path), palette[indices])


def test_exif_orientation_6_rotates_clockwise(tmp_path):
    stored = quadrants_image(40, 60)
    path = tmp_path / "turned.jpg"
    write_exif_rotated_jpeg(path, stored, orientation=6)
    upright = load_image(path)
    assert upright.shape == (60, 40, 3)
    # turning 90 degrees clockwise brings the stored bottom-left (blue) to the top-left
    np.testing.assert_allclose(upright[2, 2], BLUE, atol=6)
    np.testing.assert_allclose(upright[2, -3], RED, atol=6)
    np.testing.assert_allclose(upright[-3, 2], YELLOW, atol=6)
    np.testing.assert_allclose(upright[-3, -3], GREEN, atol=6)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillow(tmp_path, orientation):
    path = tmp_path / f"o{orientation}.jpg"
    write_exif_rotated_jpeg(path, quadrants_image(40, 60), orientation)
    with Image.open(path) as image:
        expected = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    loaded = load_image(path)
    assert loaded.shape == expected.shape
    assert np.abs(loaded.astype(int) - expected).max() <= 3


def test_grayscale_8_and_16_bit(tmp_path):
    levels = np.array([[0, 1, 128], [200, 254, 255]], np.uint8)
    write_image(tmp_path / "gray8.png", levels)
    write_image(tmp_path / "gray16.png", levels.astype(np.uint16) * 257)
    for name in ("gray8.png", "gray16.png"):
        loaded = load_image(tmp_path / name)
        assert loaded.shape == (2, 3, 3) and loaded.dtype == np.uint8
        np.testing.assert_array_equal(loaded, np.repeat(levels[..., None], 3, axis=2))


def test_16_bit_values_between_levels_round_to_nearest(tmp_path, pil_only):
    samples = np.array([[0, 128, 129, 65535, 32896, 32767]], np.uint16)
    write_image(tmp_path / "gray16.png", samples)
    expected = np.rint(samples / 257).astype(np.uint8)
    np.testing.assert_array_equal(load_image(tmp_path / "gray16.png")[..., 0], expected)


def test_16_bit_rgba(tmp_path):
    rgba16 = np.array([[[65535, 0, 0, 65535], [0, 65535, 0, 32896]]], np.uint16)
    path = tmp_path / "rgba16.png"
    write_image(path, rgba16)
    np.testing.assert_array_equal(load_image_rgba(path), [[[255, 0, 0, 255], [0, 255, 0, 128]]])


def test_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 6), color) for color in (GREEN, BLUE)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    np.testing.assert_array_equal(load_image(path), np.full((6, 8, 3), GREEN))


def test_pillow_fallback_matches_opencv(tmp_path, pil_only, monkeypatch):
    rgba = np.random.default_rng(3).integers(0, 256, (9, 7, 4), dtype=np.uint8)
    path = tmp_path / "noise.png"
    write_image(path, rgba)
    np.testing.assert_array_equal(load_image_rgba(path), rgba)
    np.testing.assert_array_equal(load_image(path), over_white(rgba[..., :3], rgba[..., 3]))


def test_non_utf8_file_name(tmp_path):
    path = tmp_path / os.fsdecode(b"caf\xe9.png")
    rgb = draw_shapes_image(32, seed=1)
    write_image(path, rgb)
    np.testing.assert_array_equal(load_image(path), rgb)


def test_composite_on_white_hand_computed():
    rgba = np.array([[[0, 0, 0, 0], [0, 0, 0, 255], [100, 50, 250, 51]]], np.uint8)
    # 51/255 = 0.2: 100*0.2 + 255*0.8 = 224, 50*0.2 + 204 = 214, 250*0.2 + 204 = 254
    np.testing.assert_array_equal(composite_on_white(rgba), [[[255, 255, 255], [0, 0, 0], [224, 214, 254]]])
    with pytest.raises(ValueError, match="HxWx4 uint8"):
        composite_on_white(np.zeros((2, 2, 3), np.uint8))


def test_draw_shapes_image_is_deterministic():
    first, again, other = draw_shapes_image(64, seed=5), draw_shapes_image(64, seed=5), draw_shapes_image(64, seed=6)
    assert first.shape == (64, 64, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert (first == 255).all(axis=2).any() and (first != 255).any()
    assert draw_shapes_image((30, 50)).shape == (30, 50, 3)


def test_extensions_are_lowercase_suffixes():
    assert {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tiff"} <= set(IMAGE_EXTENSIONS)
    assert all(ext.startswith(".") and ext == ext.lower() for ext in IMAGE_EXTENSIONS)


def test_missing_file(tmp_path):
    assert_bad_input(tmp_path / "absent.png", "no such file")


def test_directory(tmp_path):
    folder = tmp_path / "folder.png"
    folder.mkdir()
    assert_bad_input(folder, "directory")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.png"
    path.touch()
    assert_bad_input(path, "empty file")


def test_text_renamed_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not a picture\n" * 20)
    assert_bad_input(path, "not an image")


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_image(tmp_path, suffix):
    path = tmp_path / f"cut{suffix}"
    write_image(path, draw_shapes_image(96, seed=2))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert_bad_input(path, "truncated or corrupt")


# ---------------------------------------------------------------- decompression bombs


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if any pixel is decoded."""

    def decode(*args):
        raise AssertionError("pixels decoded")

    monkeypatch.setattr(images, "_decode_opencv", decode)
    monkeypatch.setattr(images, "_decode_pil", decode)


@pytest.mark.parametrize(
    ("width", "height"),
    [(9500, 9500), (32000, 32000)],  # past Pillow's bomb warning; past its bomb error
)
def test_image_over_the_pixel_limit_is_refused_from_its_header(tmp_path, no_decoding, width, height):
    path = write_black_png(tmp_path / "bomb.png", width, height)
    assert path.stat().st_size < 3_000_000
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning either
        assert_bad_input(path, f"{width}x{height} image", f"{MAX_IMAGE_PIXELS:,}-pixel limit")


def test_pixel_limit_admits_exactly_the_limit(tmp_path, monkeypatch):
    path = write_black_png(tmp_path / "black.png", 11, 10)
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 110)
    np.testing.assert_array_equal(load_image(path), np.zeros((10, 11, 3), np.uint8))
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 109)
    assert_bad_input(path, "11x10 image", "109-pixel limit")


def test_depth_ground_truth_is_read_within_the_pixel_limit(tmp_path, no_decoding):
    path = write_black_png(tmp_path / "gt.png", 32000, 32000)
    with pytest.raises(BadInputError, match="32000x32000 image is over"):
        load_ground_truth(path)


def test_depth_command_refuses_a_decompression_bomb_with_exit_2(tmp_path, tiny_rn_path):
    path = write_black_png(tmp_path / "bomb.png", 32000, 32000)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["depth", str(path), "--model", str(tiny_rn_path), "--out", str(out)])
    assert result.exit_code == EXIT_BAD_INPUT
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: {path}: 32000x32000 image is over the {MAX_IMAGE_PIXELS:,}-pixel limit")
    assert not out.exists() or not any(out.iterdir())


# ---------------------------------------------------------------- TIFF pages, unusual samples, formats


def write_float64_rgb_pages(path, *pages) -> None:
    """A multi-page TIFF of float64 RGB pages (scikit-image's multipage_rgb.tif is one): Pillow cannot read it."""
    encoded, data = cv2.imencodemulti(".tiff", [page[..., ::-1] for page in pages])  # OpenCV takes BGR
    assert encoded
    path.write_bytes(data.tobytes())


def test_float64_rgb_tiff_pages_read_as_the_first_page(tmp_path):
    first = np.random.default_rng(4).random((10, 12, 3))
    path = tmp_path / "pages.tif"
    write_float64_rgb_pages(path, first, 1 - first)
    np.testing.assert_array_equal(load_image(path), np.rint(first * 255).astype(np.uint8))


def test_depth_command_reads_a_float64_rgb_tiff(tmp_path, tiny_rn_path):
    first = np.random.default_rng(5).random((40, 56, 3))
    path = tmp_path / "pages.tif"
    write_float64_rgb_pages(path, first, 1 - first)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["depth", str(path), "--model", str(tiny_rn_path), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    (metres,) = out.glob("*.npy")
    assert np.load(metres).shape == (40, 56)


def test_uint8_rgb_tiff_pages_read_as_the_first_page(tmp_path):
    pages = [Image.new("RGB", (8, 6), color) for color in (RED, GREEN, BLUE)]
    path = tmp_path / "pages.tiff"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    np.testing.assert_array_equal(load_image(path), np.full((6, 8, 3), RED))


def test_postscript_is_refused_without_running_ghostscript(tmp_path, monkeypatch):
    def ghostscript(*args, **kwargs):
        raise AssertionError("Ghostscript would run the file")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)
    path = tmp_path / "page.eps"
    Image.new("L", (16, 8), 128).save(path, format="EPS")
    assert_bad_input(path, "not an image")


def test_sixteen_bit_gray_reads_unchanged(tmp_path):
    depth = np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000
    path = tmp_path / "depth.png"
    write_image(path, depth)
    unchanged = load_image_unchanged(path)
    assert unchanged.dtype == np.uint16
    np.testing.assert_array_equal(unchanged, depth)


# ---------------------------------------------------------------- writing PNGs


@pytest.mark.parametrize(
    "pixels",
    [
        np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000,
        np.arange(36, dtype=np.uint8).reshape(3, 4, 3) * 7,
        np.arange(48, dtype=np.uint8).reshape(3, 4, 4) * 5,
    ],
    ids=["gray16", "rgb", "rgba"],
)
def test_write_png_round_trips_under_a_non_utf8_name(tmp_path, pixels):
    path = tmp_path / "out" / os.fsdecode(b"d\xe9pth.png")
    write_png(path, pixels)
    np.testing.assert_array_equal(load_image_unchanged(path), pixels)
    assert os.listdir(path.parent) == [path.name]
