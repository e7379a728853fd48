"""The stroke rasterizer, SVG files and animation writers of `clipcli sketch`."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ElementTree

import av
import numpy as np
import pytest
import torch
from PIL import Image

from clipcli.errors import BadInputError
from clipcli.render.animation import write_gif, write_mp4, write_png
from clipcli.render.strokes import SEGMENTS, rasterize
from clipcli.render.svg import read_svg, svg_text, write_svg


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Many small ops: on a shared, busy CPU two OpenMP threads wait on each other, one does not."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_strokes(batch: int, strokes: int, size: float, spread: float, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    start = torch.rand(batch, strokes, 1, 2, generator=generator) * size
    return start + (torch.rand(batch, strokes, 4, 2, generator=generator) - 0.5) * spread


def cubic(points: torch.Tensor, samples: int) -> torch.Tensor:
    """Points of the cubics `[..., 4, 2]` at `samples + 1` uniform t, from the Bernstein form."""
    t = torch.linspace(0, 1, samples + 1, dtype=points.dtype)
    s = 1 - t
    return torch.stack([s**3, 3 * s * s * t, 3 * s * t * t, t**3], -1) @ points


def dense_coverage(points: torch.Tensor, width: float, size: int) -> torch.Tensor:
    """The same coverage model with no culling: every pixel against every segment of every stroke."""
    line = cubic(points, SEGMENTS)
    a, ab = line[:, :, :-1, None], (line[:, :, 1:] - line[:, :, :-1])[:, :, :, None]
    centres = torch.arange(size, dtype=points.dtype) + 0.5
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    ap = torch.stack([x, y], -1).reshape(1, 1, 1, -1, 2) - a
    t = ((ap * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-12)).clamp(0, 1)
    distance = (ap - t[..., None] * ab).square().sum(-1).min(dim=2).values.clamp_min(1e-12).sqrt()
    alpha = (width + 0.5 - distance).clamp(0, 1)
    return (1 - (1 - alpha).prod(dim=1)).reshape(-1, size, size)


def supersampled_coverage(points: torch.Tensor, width: float, size: int, samples: int = 8) -> torch.Tensor:
    """Brute force: the fraction of `samples` x `samples` points per pixel within `width` of any curve."""
    sub = (torch.arange(samples) + 0.5) / samples
    coords = (torch.arange(size)[:, None] + sub[None]).reshape(-1)
    inside = torch.zeros(size * samples, size * samples, dtype=torch.bool)
    for line in cubic(points, 64):
        low = ((line.min(0).values - width).floor().clamp(0, size) * samples).long()
        high = ((line.max(0).values + width).ceil().clamp(0, size) * samples).long()
        y, x = torch.meshgrid(coords[low[1] : high[1]], coords[low[0] : high[0]], indexing="ij")
        ap = torch.stack([x, y], -1)[..., None, :] - line[:-1]
        ab = line[1:] - line[:-1]
        t = ((ap * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-12)).clamp(0, 1)
        near = (ap - t[..., None] * ab).square().sum(-1).min(-1).values < width * width
        inside[low[1] : high[1], low[0] : high[0]] |= near
    return inside.reshape(size, samples, size, samples).float().mean((1, 3))


@pytest.mark.parametrize("direction", ["horizontal", "vertical", "diagonal"])
def test_straight_stroke_ink_is_length_times_width_plus_round_caps(direction):
    length = 120.0
    t = torch.linspace(0, 1, 4)[:, None]
    unit = {"horizontal": [1.0, 0.0], "vertical": [0.0, 1.0], "diagonal": [0.6, 0.8]}[direction]
    points = (torch.tensor([50.0, 50.0]) + t * length * torch.tensor(unit))[None, None]
    coverage = rasterize(points, width=1.5, size=224)
    expected = length * 3.0 + math.pi * 1.5**2
    assert abs(coverage.sum().item() - expected) / expected < 0.02
    assert coverage.max().item() == pytest.approx(1.0, abs=1e-5) and coverage.min().item() == 0.0


def test_stroke_sits_on_pixel_edges_as_in_svg():
    # A 3 px stroke centred on y = 100 covers rows 98.5..101.5: rows 99 and 100 fully, 98 and 101 half.
    points = torch.tensor([[[[20.0, 100.0], [40.0, 100.0], [60.0, 100.0], [80.0, 100.0]]]])
    column = rasterize(points, 1.5, 224)[0, :, 50]
    assert column[99].item() == pytest.approx(1.0, abs=1e-5) and column[100].item() == pytest.approx(1.0, abs=1e-5)
    assert column[98].item() == pytest.approx(0.5, abs=1e-5) and column[101].item() == pytest.approx(0.5, abs=1e-5)
    assert column[97].item() == 0.0 and column[102].item() == 0.0


def test_coverage_matches_a_supersampled_reference():
    for seed in range(2):
        points = random_strokes(1, 5, 48, 30, seed)
        ours = rasterize(points, 1.5, 48)[0]
        reference = supersampled_coverage(points[0], 1.5, 48)
        inked = (ours > 0) | (reference > 0)
        assert (ours - reference).abs().mean().item() < 0.005
        assert (ours - reference).abs()[inked].mean().item() < 0.03
        assert ours.sum().item() == pytest.approx(reference.sum().item(), rel=0.01)


def test_tiled_path_equals_dense_path_in_values_and_gradients():
    points = random_strokes(2, 12, 100, 50, seed=3).double().requires_grad_(True)
    goal = torch.rand(2, 100, 100, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    tiled = rasterize(points, 1.5, 100)
    dense = dense_coverage(points, 1.5, 100)
    assert (tiled - dense).abs().max().item() < 2e-6  # the only difference: alpha capped at 1 - 1e-6
    (grad_tiled,) = torch.autograd.grad((tiled - goal).square().sum(), points)
    (grad_dense,) = torch.autograd.grad((dense - goal).square().sum(), points)
    assert grad_dense.abs().sum() > 0
    assert ((grad_tiled - grad_dense).norm() / grad_dense.norm()).item() < 1e-5


@pytest.mark.parametrize("tile", [5, 16, 40])
def test_tile_size_and_canvas_not_a_multiple_of_it_do_not_change_the_picture(tile):
    points = random_strokes(1, 6, 37, 20, seed=4)
    assert torch.allclose(rasterize(points, 1.5, 37, tile=tile), rasterize(points, 1.5, 37), atol=1e-6)


def test_gradients_pass_a_finite_difference_check():
    points = random_strokes(1, 2, 20, 12, seed=5).double().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: rasterize(p, 1.5, 20), (points,), eps=1e-6, atol=1e-5, fast_mode=True)


def test_a_batch_equals_single_calls():
    points = random_strokes(3, 8, 224, 40, seed=6)
    together = rasterize(points)
    for index in range(3):
        assert torch.equal(together[index], rasterize(points[index : index + 1])[0])


def test_strokes_leaving_the_canvas():
    inside = torch.tensor([[[20.0, 30.0], [30.0, 35.0], [40.0, 30.0], [50.0, 40.0]]])
    outside = inside + torch.tensor([400.0, -300.0])
    crossing = torch.tensor([[[-30.0, 10.0], [0.0, 12.0], [20.0, 14.0], [40.0, 16.0]]])
    points = torch.stack([torch.cat([inside, outside]), torch.cat([outside, crossing])]).requires_grad_(True)
    coverage = rasterize(points, 1.5, 64)
    assert torch.equal(coverage[0], rasterize(inside[None], 1.5, 64)[0]) and coverage[0].sum() > 50
    assert coverage[1, :, :40].sum() > 60 and coverage[1].isfinite().all()
    coverage.sum().backward()
    assert points.grad.isfinite().all() and points.grad[1, 0].abs().sum() == 0  # the off-canvas stroke
    empty = rasterize(torch.zeros(2, 0, 4, 2), 1.5, 32)
    assert empty.shape == (2, 32, 32) and empty.sum() == 0


def test_rasterize_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\[B, N, 4, 2\]"):
        rasterize(torch.zeros(3, 4, 2))
    with pytest.raises(ValueError, match="floating point"):
        rasterize(torch.zeros(1, 1, 4, 2, dtype=torch.int64))


def test_svg_round_trips_control_points_exactly(tmp_path):
    points = random_strokes(1, 7, 224, 60, seed=7)[0].numpy()
    points[0, 0] = (-12.25, 259.5)  # strokes may leave the canvas, as in CLIPasso's own outputs
    path = tmp_path / "sketch.svg"
    write_svg(path, points, width=1.5, size=224)
    root = ElementTree.parse(path).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg" and root.get("viewBox") == "0 0 224 224"
    paths = root.findall("{http://www.w3.org/2000/svg}path")
    assert len(paths) == 7
    for element in paths:
        assert element.get("d").startswith("M ") and " C " in element.get("d")
        assert element.get("stroke-width") == "3" and element.get("fill") == "none"
        assert element.get("stroke-linecap") == "round" and element.get("stroke-linejoin") == "round"
    read, half_width, size = read_svg(path)
    assert np.array_equal(read, points) and half_width == 1.5 and size == 224


def test_read_svg_refuses_what_is_not_a_sketch(tmp_path):
    broken = tmp_path / "broken.svg"
    broken.write_text("<svg")
    with pytest.raises(BadInputError, match="broken.svg"):
        read_svg(broken)
    curvy = tmp_path / "curvy.svg"
    curvy.write_text(svg_text(np.zeros((1, 4, 2))).replace(" C ", " Q "))
    with pytest.raises(BadInputError, match="not one cubic"):
        read_svg(curvy)


def test_png_gif_and_mp4_writers(tmp_path):
    tmp_path = tmp_path / "pictures"
    frames = [np.full((34, 50), 1.0, np.float32) for _ in range(5)]
    for index, frame in enumerate(frames):
        frame[10:20, index * 8 : index * 8 + 8] = 0.0
    write_png(tmp_path / "still.png", frames[0])  # atomic writers create the folder
    with Image.open(tmp_path / "still.png") as image:
        assert image.mode == "L" and image.size == (50, 34) and image.getpixel((0, 15)) == 0
    write_gif(tmp_path / "moving.gif", frames, fps=10)
    with Image.open(tmp_path / "moving.gif") as image:
        assert image.n_frames == 5 and image.info["duration"] == 100
    write_mp4(tmp_path / "moving.mp4", frames, fps=10)
    with av.open(str(tmp_path / "moving.mp4")) as container:
        decoded = [frame.to_ndarray(format="gray") for frame in container.decode(video=0)]
    assert len(decoded) == 5 and decoded[0].shape == (34, 50)
    assert decoded[2][15, 20] < 60 and decoded[2][15, 45] > 200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["moving.gif", "moving.mp4", "still.png"]
