"""PointCLIP V1 and V2 projections: hand-made clouds, the official formulas written out, invariances, shapes."""

from __future__ import annotations

import math
import multiprocessing
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from makers.points import cube_points, cylinder_points, sphere_points

from clipcli.errors import BadInputError
from clipcli.render import projection, v2_passes
from clipcli.render.projection import project_v1, project_v2, rotation_matrices, to_clip_images
from clipcli.render.v2_params import V2_IMAGE, V2_MARGIN


def clouds(*makers_and_seeds, n=1024):
    return torch.stack([torch.from_numpy(maker(n, seed)) for maker, seed in makers_and_seeds])


# ---------------------------------------------------------------- V1 by hand


def v1_pixel(view_xyz, size=128, distance=1.6):
    """Spec 1.1 in float64: pixel (ceil(_x - 0.5), ceil(_y - 0.5)) and depth z + distance."""
    x, y, z = view_xyz
    z = z + distance
    row = math.ceil((x / z + 1) * size / 2 - 0.5)
    col = math.ceil((y / z + 1) * size / 2 - 0.5)
    return row, col, z


def test_v1_rotations_are_the_official_euler_order():
    # R = Rx(a) Ry(b) Rz(c); view 0 is Rz(90 deg): (x, y, z) -> (-y, x, z).
    first = rotation_matrices([[0.0, 0.0, np.pi / 2]])[0]
    torch.testing.assert_close(first @ torch.tensor([0.2, -0.1, 0.3]), torch.tensor([0.1, 0.2, 0.3]))
    a, b, c = 0.3, -0.7, 1.1
    rx = torch.tensor([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = torch.tensor([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = torch.tensor([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    torch.testing.assert_close(rotation_matrices([[a, b, c]])[0], rx @ ry @ rz)


def test_v1_single_point_lands_where_the_formula_says():
    point = (0.2, -0.1, 0.3)
    maps = project_v1(torch.tensor([[point]]))
    assert maps.shape == (1, 6, 128, 128)
    row, col, depth = v1_pixel((0.1, 0.2, 0.3))  # the view-0 coordinates (-y, x, z)
    assert (row, col) == (67, 71)
    assert maps[0, 0, row, col].item() == pytest.approx(depth, abs=1e-6)
    assert torch.count_nonzero(maps[0, 0]) == 1  # one point, one pixel, background 0


@pytest.mark.parametrize("fraction, expected_row", [(0.25, 64), (0.75, 65)])
def test_v1_rounding_is_ceil_of_x_minus_a_half(fraction, expected_row):
    # Choose the view-0 x so that _x = 64 + fraction; plain ceil would give 65 for both, floor 64 for both.
    x = ((64 + fraction) * 2 / 128 - 1) * 1.6
    maps = project_v1(torch.tensor([[[0.0, -x, 0.0]]]))  # view 0 maps (x, y, z) to (-y, x, z)
    rows = maps[0, 0].nonzero()[:, 0].tolist()
    assert rows == [expected_row]


def test_v1_two_points_on_one_ray_give_the_harmonic_mean_of_their_depths():
    maps = project_v1(torch.tensor([[[0.0, 0.0, 0.0], [0.0, 0.0, 0.4]]]))
    assert maps[0, 0, 64, 64].item() == pytest.approx(2 / (1 / 1.6 + 1 / 2.0), abs=1e-6)
    assert torch.count_nonzero(maps[0, 0]) == 1


def test_v1_drops_points_behind_the_camera_or_off_the_image():
    behind = project_v1(torch.tensor([[[0.0, 0.0, -2.0]]]))[0, 0]  # z + 1.6 < 0 in view 0
    off = project_v1(torch.tensor([[[0.0, 5.0, 0.0]]]))[0, 0]  # x / z far beyond 1
    assert torch.count_nonzero(behind) == 0 and torch.count_nonzero(off) == 0


def test_v1_few_shot_views_render_at_224_from_distance_1_4():
    maps = project_v1(torch.zeros(2, 1, 3), views="few-shot")
    assert maps.shape == (2, 10, 224, 224)
    torch.testing.assert_close(maps[:, :, 112, 112], torch.full((2, 10), 1.4))  # the origin: centre of every view
    assert torch.count_nonzero(maps) == 20
    with pytest.raises(BadInputError, match="^views: 'side': choose one of zero-shot, few-shot$"):
        project_v1(torch.zeros(1, 1, 3), views="side")


def test_v1_top_view_looks_down_the_y_axis():
    # A point above the centre is 0.5 nearer than the centre from the top view (5th), 0.5 farther from below.
    maps = project_v1(torch.tensor([[[0.3, 0.5, 0.0]]]))
    top, bottom = maps[0, 4], maps[0, 5]
    assert torch.count_nonzero(top) == 1 and top.max().item() == pytest.approx(1.1, abs=1e-5)
    assert torch.count_nonzero(bottom) == 1 and bottom.max().item() == pytest.approx(2.1, abs=1e-5)
    both = project_v1(torch.tensor([[[0.0, 0.5, 0.0], [0.0, -0.5, 0.0]]]))[0, 4]  # one pixel, two depths
    assert both[64, 64].item() == pytest.approx(2 / (1 / 1.1 + 1 / 2.1), abs=1e-5)


def official_v1(points, angles, size, distance):
    """Spec 1.1 as the official code runs it: views batch-major, p R^T - t, the size-1 splat, two scatter_adds."""
    b, views = points.shape[0], len(angles)
    rotation = rotation_matrices(angles).transpose(1, 2).repeat(b, 1, 1)
    p = torch.matmul(torch.repeat_interleave(points, views, dim=0), rotation) - torch.tensor([0.0, 0.0, -distance])
    eps = torch.tensor([1e-12])
    x = ((p[..., 0] / (p[..., 2] + eps) + 1) * size) / 2 - 0.5
    y = ((p[..., 1] / (p[..., 2] + eps) + 1) * size) / 2 - 0.5
    x, y, depth = x.ceil(), y.ceil(), p[..., 2]
    keep = (x >= 0) & (x <= size - 1) & (y >= 0) & (y <= size - 1) & (depth >= 0)
    weight = keep.float() * (1 / (depth + eps))
    index = ((x % size) * size + (y % size)).long()
    weights = torch.zeros(b * views, size * size).scatter_add(1, index, weight)
    values = torch.zeros(b * views, size * size).scatter_add(1, index, depth * weight)
    return (values / (weights + (weights == 0).float())).view(b, views, size, size)


@pytest.mark.parametrize("views", ["zero-shot", "few-shot"])
def test_v1_equals_the_official_scatter_on_random_clouds(views):
    batch = torch.randn(3, 2000, 3) * 0.6  # some points fall off the image or behind the camera
    spec = projection.V1_VIEWS[views]
    torch.testing.assert_close(project_v1(batch, views), official_v1(batch, spec.angles, spec.resolution,
                               spec.distance), rtol=1e-5, atol=1e-5)  # fmt: skip


# ---------------------------------------------------------------- V2: the official chain, written out densely


def official_v2(points: torch.Tensor) -> torch.Tensor:
    """Spec 2.1 step by step: dense 112x112x8 grid, MaxPool3d, Conv3d with the 2-D Gaussian, max, invert."""
    b = points.shape[0]
    main = [[a, 0, np.pi / 2] for a in (np.pi / 4, 3 * np.pi / 4, 5 * np.pi / 4, 7 * np.pi / 4)]
    main += [[a, 0, np.pi / 2] for a in (0, np.pi / 2, np.pi, 3 * np.pi / 2)]
    main += [[0, -np.pi / 2, np.pi / 2], [0, np.pi / 2, np.pi / 2]]
    bias = [[0, np.pi / 9, 0]] * 8 + [[0, np.pi / 15, 0]] * 2
    r1, r2 = rotation_matrices(main).transpose(1, 2), rotation_matrices(bias).transpose(1, 2)
    p = torch.repeat_interleave(points, 10, dim=0)
    p = torch.matmul(torch.matmul(p, r1.repeat(b, 1, 1)), r2.repeat(b, 1, 1))
    high, low = p.max(1)[0], p.min(1)[0]
    p = (p - ((high + low) / 2)[:, None]) / (high - low).max(-1)[0][:, None, None] * 2.0
    return official_grid_to_image(*official_voxels(p))


def official_voxels(p: torch.Tensor):
    x = ((p[..., 0] * 0.8 + 1) / 2 * 112).ceil().clip(1, 110)
    y = ((p[..., 1] * 0.8 + 1) / 2 * 112).ceil().clip(1, 110)
    z = ((p[..., 2] + 1) / 2 + 0.2) / (1 + 0.2) * 6
    return x, y, z.ceil(), z.clip(1, 6)


def official_grid_to_image(x, y, z_index, z):
    views = x.shape[0]
    index = (z_index * 112 * 112 + y * 112 + x).long()
    grid = torch.zeros(views, 8 * 112 * 112).scatter_reduce(1, index, z, "amax", include_self=True)
    grid = grid.view(-1, 8, 112, 112).permute(0, 1, 3, 2)  # rows from x
    pooled = F.max_pool3d(grid[:, None], (1, 7, 7), stride=1, padding=(0, 2, 2))
    offsets = np.arange(3, dtype=np.float32) - 1
    taps = np.exp(-(offsets**2) / (2 * 3**2))
    kernel = torch.from_numpy(taps[:, None] @ taps[None])
    kernel = kernel / kernel.sum()
    smooth = F.conv3d(pooled, kernel.view(1, 1, 1, 3, 3), padding=(0, 1, 1))
    image = smooth.max(dim=2)[0][:, 0]
    image = image / image.amax((1, 2), keepdim=True)
    return (1 - image).view(-1, 10, 110, 110) if views % 10 == 0 else 1 - image


def test_v2_equals_the_official_dense_chain():
    batch = clouds((sphere_points, 0), (cube_points, 1), (cylinder_points, 2))
    batch[1] *= torch.tensor([1.0, 0.3, 0.6])  # a flat box: views use fewer depth slices
    batch[2] += 5.0
    ours = project_v2(batch)
    assert ours.shape == (3, 10, 110, 110)
    torch.testing.assert_close(ours, official_v2(batch), rtol=0, atol=2e-6)
    assert ours.min() == 0.0 and ours.max() == 1.0  # deepest voxel black, background white


@pytest.mark.parametrize("renderer", ["compiled", "torch"])
def test_v2_equals_the_official_chain_over_several_passes(monkeypatch, renderer):
    # Rotation passes of 4 clouds; in torch, image passes of a few views each. Two far-apart clusters leave empty
    # depth slices inside some views' range, and a flat cloud has no extent along one axis.
    monkeypatch.setattr(v2_passes, "V2_PASS_CELLS_CPU", 300_000)
    monkeypatch.setattr(projection, "V2_VOXEL_POINTS_CPU", 2000)
    use_renderer(monkeypatch, renderer)
    batch = torch.randn(7, 500, 3, generator=torch.Generator().manual_seed(0))
    batch[1, :250] = batch[1, :250] * 0.2 + torch.tensor([0.0, 0.0, 6.0])
    batch[1, 250:] *= 0.2
    batch[2, :, 1] = 0.0
    bias = rotation_matrices(projection.V2_BIAS_ANGLES).transpose(1, 2)
    slices = projection._v2_voxels((projection._rotate(batch[1:2], projection.V2_ANGLES) @ bias)[0])[3]
    gaps = [len(set(view.tolist())) < int(view.max() - view.min()) + 1 for view in slices]
    assert any(gaps)  # the case this test is for
    torch.testing.assert_close(project_v2(batch), official_v2(batch), rtol=0, atol=2e-6)


def use_renderer(monkeypatch, name):
    """Make `project_v2` on a CPU use the compiled loops (its default) or the torch chain CUDA uses."""
    chosen = projection._v2_render_compiled if name == "compiled" else projection._v2_render_torch
    monkeypatch.setattr(projection, "_v2_renderer", lambda device: chosen)


def test_v2_bounds_from_extreme_points_match_the_voxels():
    # The image pass sizes its frame from each view's extreme points: every voxel step is monotone.
    views = torch.randn(30, 400, 3, generator=torch.Generator().manual_seed(1)) * torch.tensor([1.0, 0.2, 3.0]) + 7.0
    coords, extremes = projection._v2_normalised(views)
    from_extremes = v2_passes.view_bounds(*projection._v2_cells(extremes))
    assert np.array_equal(from_extremes, v2_passes.view_bounds(*projection._v2_cells(coords)))


def test_v2_voxel_index_and_value_follow_the_formula():
    # View-space points already spanning [-1, 1]: the normalisation leaves them alone.
    points = torch.tensor([[[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], [0.5, -0.25, 0.1]]])
    row, col, value, slice_index = projection._v2_voxels(points)
    # x: ceil((0.4 + 1) / 2 * 112) = 79; y: ceil((-0.2 + 1) / 2 * 112) = 45; z: (0.55 + 0.2) / 1.2 * 6 = 3.75.
    assert (row[0, 2].item(), col[0, 2].item(), slice_index[0, 2].item()) == (79, 45, 4)
    assert value[0, 2].item() == pytest.approx(3.75, abs=1e-6)
    assert (row[0, 0].item(), col[0, 0].item(), value[0, 0].item()) == (12, 12, 1.0)  # ceil(11.2), depth floor 1
    assert (row[0, 1].item(), col[0, 1].item(), value[0, 1].item()) == (101, 101, 6.0)


def voxel_case(cells):
    """(row, col, slice, value) tuples of one view -> the arguments of both grid-to-image implementations."""
    t = torch.tensor(cells, dtype=torch.float32).T[:, None]
    return t[0].long(), t[1].long(), t[3], t[2].long()


@pytest.mark.parametrize(
    "cells",
    [
        [(50, 60, 3, 2.5), (52, 61, 5, 4.2), (80, 20, 2, 1.7)],
        [(12, 12, 1, 1.0), (101, 101, 6, 6.0), (12, 101, 6, 5.5), (55, 55, 4, 3.3)],  # the reachable extremes
    ],
)
def test_v2_grid_to_image_equals_dense_pooling_and_smoothing(cells):
    row, col, value, slice_index = voxel_case(cells)
    ours = v2_passes.voxel_image(row, col, value, slice_index)
    official = official_grid_to_image(row.float(), col.float(), slice_index.float(), value)
    torch.testing.assert_close(ours, official, rtol=0, atol=2e-6)


def test_v2_image_refuses_voxels_its_margins_cannot_hold():
    # Coordinates in [-1, 1] never leave [12, 101]; the image pass relies on 4 free cells beyond them.
    with pytest.raises(ValueError, match=r"\[5, 106\]"):
        v2_passes.voxel_image(*voxel_case([(4, 50, 3, 2.5)]))
    with pytest.raises(ValueError, match=r"\[5, 106\]"):
        v2_passes.voxel_image(*voxel_case([(50, 107, 3, 2.5)]))


def test_v2_layouts_keep_every_view_in_its_own_block():
    rng = np.random.default_rng(3)
    top, left = rng.integers(12, 60, 90), rng.integers(12, 60, 90)
    bottom, right = top + rng.integers(0, 42, 90), left + rng.integers(0, 42, 90)
    first = rng.integers(1, 4, 90)
    bounds = np.stack([top, bottom, left, right, first, first + rng.integers(0, 3, 90)], axis=1)
    layouts = v2_passes._plan_passes(bounds, 400_000)
    assert sorted(np.concatenate([layout.views for layout in layouts]).tolist()) == list(range(90))
    margin = V2_MARGIN
    for layout in layouts:
        box = bounds[layout.views]
        assert len(set(box[:, 5] - box[:, 4])) == 1  # one slice count per pass
        # The pass's columns hold every view's voxels with the margin on both sides.
        assert layout.column == box[:, 2].min() - 1 - margin
        assert layout.column + layout.width == box[:, 3].max() + margin
        # Each view owns one run of rows in one lane, as tall as its box plus the margins, mapped onto its image rows.
        for position, (view, (row_first, row_last)) in enumerate(zip(layout.views, box[:, :2], strict=True)):
            rows, lanes = np.nonzero(layout.owner == position)
            assert len(set(lanes)) == 1 and np.array_equal(rows, np.arange(rows[0], rows[0] + len(rows)))
            assert len(rows) == row_last - row_first + 1 + 2 * margin
            image_rows = layout.target[rows, lanes] - view * V2_IMAGE
            assert np.array_equal(image_rows, np.arange(row_first - 1 - margin, row_last + margin))
        assert (layout.owner == len(layout.views)).sum() < 0.2 * layout.owner.size  # lanes end up nearly level


def test_v2_voxels_keep_their_largest_depth():
    high = voxel_case([(50, 60, 4, 3.8), (70, 40, 2, 1.5)])
    with_lower_duplicate = voxel_case([(50, 60, 4, 3.8), (50, 60, 4, 3.1), (70, 40, 2, 1.5)])
    assert torch.equal(v2_passes.voxel_image(*high), v2_passes.voxel_image(*with_lower_duplicate))
    lower_only = voxel_case([(50, 60, 4, 3.1), (70, 40, 2, 1.5)])
    assert not torch.equal(v2_passes.voxel_image(*high), v2_passes.voxel_image(*lower_only))


def test_v2_is_invariant_to_translation_and_scale():
    batch = clouds((cylinder_points, 3), (cube_points, 4))
    reference = project_v2(batch)
    assert torch.equal(project_v2(batch * 2.0), reference)  # a power of two changes no rounding
    for scale, shift in ((3.7, -1.3), (1000.0, 52.0), (0.01, 0.25)):
        moved = project_v2(batch * scale + shift)
        differs = (moved - reference).abs() > 1e-5
        assert differs.float().mean() < 0.005  # at most a rare voxel-boundary tie flips


@pytest.mark.parametrize("renderer", ["compiled", "torch"])
def test_batch_equals_single_and_chunks_do_not_matter(monkeypatch, renderer):
    use_renderer(monkeypatch, renderer)
    batch = clouds((sphere_points, 5), (cube_points, 6), (cylinder_points, 7))
    v2, v1 = project_v2(batch), project_v1(batch)
    for i in range(3):
        assert torch.equal(project_v2(batch[i : i + 1])[0], v2[i])
        assert torch.equal(project_v1(batch[i : i + 1])[0], v1[i])
    monkeypatch.setattr(v2_passes, "V2_PASS_CELLS_CPU", 1)  # torch: one view per image pass
    monkeypatch.setattr(projection, "V2_VOXEL_POINTS_CPU", 1)  # one cloud rotated at a time
    assert torch.equal(project_v2(batch), v2)


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_v2_compiled_loops_equal_torch(monkeypatch, threads):
    # On a CPU each view is one compiled loop, the views split between threads; CUDA runs the torch chain (pooling
    # as strided window maxima, smoothing as a convolution). Both give the same maps, bit for bit, whatever the
    # number of points, the shape, or how many views each thread takes.
    batch = clouds((sphere_points, 11), (cube_points, 12), (cylinder_points, 13), (sphere_points, 14), n=2048)
    batch[1] *= torch.tensor([1.0, 0.3, 2.0])
    batch[3, :, 2] = batch[3, :, 2] * 1e-3  # nearly flat: its views squeeze to few depth slices or thin boxes
    few = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.5, -0.25], [0.2, -1.0, 0.7]]])
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        compiled = [project_v2(batch), project_v2(batch[:, :700]), project_v2(few)]
        use_renderer(monkeypatch, "torch")
        chained = [project_v2(batch), project_v2(batch[:, :700]), project_v2(few)]
    finally:
        torch.set_num_threads(previous)
    for ours, theirs in zip(compiled, chained, strict=True):
        assert torch.equal(ours, theirs)


def test_v2_compiled_loops_work_where_numba_cannot_cache(monkeypatch):
    # With no writable cache directory numba refuses cache=True; the loops must then compile for this process only.
    import importlib

    import numba.core.caching

    from clipcli.render import v2_cpu

    batch = clouds((cube_points, 18), n=256)
    expected = project_v2(batch)
    monkeypatch.setattr(numba.core.caching.CacheImpl, "_locator_classes", [])
    with pytest.raises(RuntimeError, match="cannot cache"):
        numba.njit(cache=True)(lambda x: x)  # what an unwritable install looks like to numba
    try:
        importlib.reload(v2_cpu)
        assert torch.equal(project_v2(batch), expected)
    finally:
        monkeypatch.undo()
        importlib.reload(v2_cpu)  # cached again for the tests after this one


def test_v2_compiled_loops_refuse_a_cloud_with_no_extent_among_good_ones():
    batch = clouds((sphere_points, 15), (cube_points, 16))
    batch[1] = torch.tensor([0.5, -0.5, 2.0])  # every point the same
    with pytest.raises(BadInputError, match="no extent"):
        project_v2(batch)


def test_v2_row_max_folds_odd_and_even_widths():
    x = torch.randn(5, 13, 8, generator=torch.Generator().manual_seed(0))
    for width in (1, 2, 7, 13):
        assert torch.equal(v2_passes._row_max(x[:, :width]), x[:, :width].amax(dim=1))


def view_helpers_answer(queue):
    try:
        queue.put(projection._view_workers(1).submit(int, 7).result(timeout=5))
    except Exception as error:  # reported to the parent
        queue.put(repr(error))


@pytest.mark.skipif(not hasattr(os, "register_at_fork"), reason="no fork on this platform")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_v2_view_helpers_work_in_a_forked_child():
    # The parent's helper threads do not survive a fork; a child must make its own instead of queueing forever.
    assert projection._view_workers(1).submit(int, 3).result() == 3
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=view_helpers_answer, args=(queue,))
    child.start()
    child.join(20)
    if child.is_alive():
        child.kill()
    assert queue.get(timeout=5) == 7


def test_v2_threads_keep_their_own_buffers():
    batch = clouds((sphere_points, 8), (cube_points, 9), (cylinder_points, 10))
    expected = [project_v2(batch[i : i + 1] * (i + 1)) for i in range(3)]
    with ThreadPoolExecutor(3) as pool:
        for _ in range(3):
            results = list(pool.map(lambda i: project_v2(batch[i : i + 1] * (i + 1)), range(3)))
            assert all(torch.equal(got, want) for got, want in zip(results, expected, strict=True))


def test_shapes_and_clip_images():
    batch = torch.randn(2, 300, 3)
    assert project_v1(batch).shape == (2, 6, 128, 128)
    assert project_v1(batch, views="few-shot").shape == (2, 10, 224, 224)
    maps = project_v2(batch)
    assert maps.shape == (2, 10, 110, 110)
    images = to_clip_images(maps)
    assert images.shape == (20, 3, 224, 224)
    expected = F.interpolate(maps.flatten(0, 1)[:, None].repeat(1, 3, 1, 1), size=(224, 224), mode="bilinear",
                             align_corners=True)  # fmt: skip
    torch.testing.assert_close(images, expected)


def test_bad_point_tensors_are_refused():
    with pytest.raises(BadInputError, match=r"\[B, N, 3\]"):
        project_v2(torch.zeros(10, 3))
    with pytest.raises(BadInputError, match="NaN"):
        project_v1(torch.tensor([[[0.0, float("nan"), 0.0]]]))
    with pytest.raises(BadInputError, match="no extent"):
        project_v2(torch.ones(1, 5, 3))
    sphere = clouds((sphere_points, 17), n=64)
    for renderer in (projection._v2_render_compiled, projection._v2_render_torch):
        # Too small to normalise (the half extent would be subnormal), or large enough to overflow when rotated.
        with pytest.raises(BadInputError, match="no extent"):
            renderer(sphere.repeat_interleave(10, dim=0) * 1e-31, torch.empty(10, 110, 110))
    with pytest.raises(BadInputError, match="beyond 1e"):
        project_v1(sphere * 1e31)
    assert torch.equal(project_v2(sphere * 1e29), project_v2(sphere * 1e29 * 2.0))  # still fine, and exact


def test_v2_compiled_loops_load_without_the_torch_projection_module():
    """The two renderers share constants, not each other: no import cycle."""
    code = "import sys, clipcli.render.v2_cpu; print('clipcli.render.projection' in sys.modules)"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "False"
