"""Point clouds to the multi-view depth images PointCLIP and PointCLIP V2 show CLIP.

Both projections follow the official code's arithmetic step by step (same
constants, same float32 operation order, same rounding), so the same cloud gives
the same maps; facts in specs/point_depth.md sections 1.1 and 2.1. Everything
is vectorised over clouds, views and points with scatter operations, with no
torch-scatter dependency and no Python loop over points.

Image layout, as in the official code: rows come from the view's x axis and
columns from its y axis.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from clipcli.errors import BadInputError

PI = np.pi


@dataclass(frozen=True)
class PerspectiveViews:
    """A PointCLIP (V1) view set: Euler angles, image size, camera distance."""

    angles: tuple[tuple[float, float, float], ...]
    resolution: int
    distance: float  # the official TRANS is -distance: points move +distance along z
    names: tuple[str, ...]


_SIDES = ((0.0, 0.0, PI / 2), (PI / 2, 0.0, PI / 2), (PI, 0.0, PI / 2), (3 * PI / 2, 0.0, PI / 2))
_TOP_BOTTOM = ((0.0, -PI / 2, PI / 2), (0.0, PI / 2, PI / 2))
_OBLIQUE = (
    (5 * PI / 4, -PI / 4, PI / 2),
    (5 * PI / 4, PI / 4, PI / 2),
    (7 * PI / 4, -PI / 4, PI / 2),
    (7 * PI / 4, PI / 4, PI / 2),
)
V1_VIEWS = {
    # trainers/mv_utils_zs.py: 4 views around the y axis, then top and bottom.
    "zero-shot": PerspectiveViews(
        _SIDES + _TOP_BOTTOM, 128, 1.6, ("az 0", "az 90", "az 180", "az 270", "top", "bottom")
    ),
    # trainers/mv_utils_fs.py: the 4 side views, 4 oblique ones, top and bottom.
    "few-shot": PerspectiveViews(
        _SIDES + _OBLIQUE + _TOP_BOTTOM,
        224,
        1.4,
        ("az 0", "az 90", "az 180", "az 270", "az 225 el -45", "az 225 el 45", "az 315 el -45", "az 315 el 45")
        + ("top", "bottom"),
    ),
}
V1_EPSILON = 1e-12  # added to z before dividing, as the official code does

# PointCLIP V2 realistic projection (zeroshot_cls/trainers/mv_utils_zs.py `params`).
V2_RESOLUTION = 112
V2_DEPTH = 8
V2_OBJECT_RATIO = 0.8
V2_DEPTH_BIAS = 0.2
V2_POOL = 7  # max-pool kernel (xy), stride 1, padding 2: 112 -> 110
V2_POOL_PADDING = 2
V2_SMOOTH_SIZE = 3  # Gaussian conv kernel (xy), padding 1
V2_SMOOTH_SIGMA = 3.0
V2_IMAGE = V2_RESOLUTION + 2 * V2_POOL_PADDING - V2_POOL + 1  # 110
V2_ANGLES = tuple((a, 0.0, PI / 2) for a in (PI / 4, 3 * PI / 4, 5 * PI / 4, 7 * PI / 4)) + _SIDES + _TOP_BOTTOM
# A second, small rotation about y "to reveal more surface": 20 degrees, 12 for top and bottom.
V2_BIAS_ANGLES = ((0.0, PI / 9, 0.0),) * 8 + ((0.0, PI / 15, 0.0),) * 2
# Azimuths about the up (y) axis; the small bias rotation is left out of the names.
V2_VIEW_NAMES = ("az 45", "az 135", "az 225", "az 315", "az 0", "az 90", "az 180", "az 270", "top", "bottom")
V2_NUM_VIEWS = len(V2_ANGLES)
V2_CHUNK_CPU, V2_CHUNK_CUDA = 4, 128  # clouds per image pass
V2_VOXEL_POINTS = 1 << 16  # points per voxelisation pass (whole chunks of clouds)


def rotation_matrices(angles) -> torch.Tensor:
    """`[V,3]` Euler angles -> `[V,3,3]` float32 matrices R = Rx(a) Ry(b) Rz(c) (the official euler2mat)."""
    angle = torch.as_tensor(np.asarray(angles, dtype=np.float64)).float()
    a, b, c = angle.unbind(-1)
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    rz = torch.stack([c.cos(), -c.sin(), zero, c.sin(), c.cos(), zero, zero, zero, one], -1).view(-1, 3, 3)
    ry = torch.stack([b.cos(), zero, b.sin(), zero, one, zero, -b.sin(), zero, b.cos()], -1).view(-1, 3, 3)
    rx = torch.stack([one, zero, zero, zero, a.cos(), -a.sin(), zero, a.sin(), a.cos()], -1).view(-1, 3, 3)
    return rx @ ry @ rz


def _check_points(points: torch.Tensor) -> torch.Tensor:
    if not isinstance(points, torch.Tensor):
        points = torch.as_tensor(np.asarray(points))
    if points.ndim != 3 or points.shape[-1] != 3 or points.shape[1] == 0:
        raise BadInputError(f"points must be [B, N, 3] with N >= 1, got {list(points.shape)}")
    points = points.float()
    if not bool(torch.isfinite(points).all()):
        raise BadInputError("points contain NaN or infinite coordinates")
    return points


def _rotate(points: torch.Tensor, angles) -> torch.Tensor:
    """`[B,N,3]` -> `[B,V,N,3]`: each view's points p R^T (row vectors, as `points @ rot_mat`)."""
    rotations = rotation_matrices(angles).transpose(1, 2).to(points.device)
    return torch.matmul(points[:, None], rotations[None])


# ---------------------------------------------------------------- PointCLIP (V1)


def project_v1(points: torch.Tensor, views: str = "zero-shot") -> torch.Tensor:
    """PointCLIP depth maps before channel repeat and resize.

    `points [B,N,3]` (unit-sphere, y-up) -> `[B,6,128,128]` for the zero-shot
    views or `[B,10,224,224]` for `views="few-shot"`. Each view is a pinhole
    camera at distance 1.6 (1.4): pixel (ceil(x/z (H/2) + H/2 - 1/2),
    ceil(y/z (W/2) + W/2 - 1/2)); points outside the image or behind the
    camera are dropped. A pixel holds the harmonic mean of its points' depths
    (0 where empty), so farther is brighter.
    """
    if views not in V1_VIEWS:
        raise BadInputError(f"views must be one of {', '.join(V1_VIEWS)}, got {views!r}")
    spec = V1_VIEWS[views]
    points = _check_points(points)
    batch, count, _ = points.shape
    size = spec.resolution
    translation = torch.tensor([0.0, 0.0, -spec.distance], device=points.device)
    moved = _rotate(points, spec.angles) - translation  # [B, V, N, 3]
    x, y, depth = moved.unbind(-1)
    epsilon = torch.tensor(V1_EPSILON, dtype=torch.float32, device=points.device)
    u = x / (depth + epsilon)  # times W/H = 1
    v = y / (depth + epsilon)
    row = (((u + 1) * size) / 2 - 0.5).ceil()
    col = (((v + 1) * size) / 2 - 0.5).ceil()
    inside = (row >= 0) & (row <= size - 1) & (col >= 0) & (col <= size - 1) & (depth >= 0)
    weight = inside.float() * (1 / (depth + epsilon))
    weighted = depth * weight
    planes = batch * len(spec.angles)
    pixel = (row * size + col).long().clamp(0, size * size - 1)
    plane = torch.arange(planes, device=points.device).view(batch, -1, 1) * (size * size)
    # Dropped points go to one spare slot past the end (their weight is 0 as well, as upstream).
    index = torch.where(inside, plane + pixel, planes * size * size).flatten()
    sums = torch.zeros(2, planes * size * size + 1, device=points.device)
    sums[0].index_add_(0, index, weight.flatten())
    sums[1].index_add_(0, index, weighted.flatten())
    weights, values = sums[:, :-1]
    weights = weights + (weights == 0).float()
    return (values / weights).view(batch, len(spec.angles), size, size)


# ---------------------------------------------------------------- PointCLIP V2


def project_v2(points: torch.Tensor) -> torch.Tensor:
    """PointCLIP V2 realistic-projection maps before channel repeat and resize: `[B,N,3]` -> `[B,10,110,110]`.

    Per view: rotate (main view, then the small bias rotation), fit the
    bounding box's longest side to [-1, 1], shrink x and y by 0.8, and
    quantise to a 112x112x8 grid whose voxels keep their largest continuous
    depth; then a 7x7 max-pool densifies each depth slice, a 3x3 Gaussian
    (sigma 3) smooths it, the slices are squeezed by max, and the image is
    inverted, 1 - img / max(img): a white background and the deepest voxel
    black. Invariant to translating and scaling the cloud.
    """
    points = _check_points(points)
    batch, count, _ = points.shape
    if batch == 0:
        return points.new_zeros(0, V2_NUM_VIEWS, V2_IMAGE, V2_IMAGE)
    maps = torch.empty(batch, V2_NUM_VIEWS, V2_IMAGE, V2_IMAGE, device=points.device)
    bias = rotation_matrices(V2_BIAS_ANGLES).transpose(1, 2).to(points.device)
    # A few clouds at a time keep the CPU working set of the image pass in cache; a GPU wants large batches.
    # Voxelising is cheap per point but many small steps, so it runs on several chunks at once.
    chunk = V2_CHUNK_CUDA if points.device.type == "cuda" else V2_CHUNK_CPU
    voxel_chunk = chunk * max(1, V2_VOXEL_POINTS // (count * chunk))
    per_image = chunk * V2_NUM_VIEWS
    scratch: list[torch.Tensor] = []
    for part, out in zip(points.split(voxel_chunk), maps.split(voxel_chunk), strict=True):
        view_points = torch.matmul(_rotate(part, V2_ANGLES), bias[None]).flatten(0, 1)
        coords, extremes = _v2_normalised(view_points)
        voxels = _v2_cells(coords)
        bounds = _v2_bounds(*_v2_cells(extremes))
        for first in range(0, len(view_points), per_image):
            views = slice(first, first + per_image)
            _v2_image(*(v[views] for v in voxels), out=out.flatten(0, 1)[views], bounds=bounds[views], scratch=scratch)
    return maps


def _v2_voxels(points: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Official `points2grid` coordinates for `[P,N,3]` view points: row, col, value, depth slice (all `[P,N]`)."""
    return _v2_cells(_v2_normalised(points)[0])


def _v2_normalised(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`[P,N,3]` view points -> centred on their bounding box, longest side spanning [-1, 1], as `[P,3,N]`.

    Also each view's lowest and highest x, y, z, `[P,3,2]`, normalised the
    same way. Coordinates are made contiguous first: steps along a last axis
    of 3 are slow. (p - c) / r * 2 is computed as (p - c) / (r / 2): halving
    and doubling are exact, so the two agree to the bit.
    """
    coords = points.transpose(1, 2).clone(memory_format=torch.contiguous_format)  # normalised in place below
    high, low = coords.max(dim=2)[0], coords.min(dim=2)[0]
    extent = (high - low).max(dim=1)[0][:, None, None]
    if not bool((extent > 0).all()):
        raise BadInputError("a cloud has no extent: all of its points coincide")
    centre = ((high + low) / 2)[:, :, None]
    extremes = torch.stack([low, high], dim=2).sub_(centre).div_(extent / 2)
    return coords.sub_(centre).div_(extent / 2), extremes


def _v2_cells(coords: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Normalised `[P,3,K]` coordinates -> official grid row, col, value and depth slice, all `[P,K]`.

    The official float32 steps, merged only where that is exact: (x + 1) / 2 * 112
    is (x + 1) * 56. Every step is monotone, so a view's extreme points give
    its extreme rows, columns and slices.
    """
    resolution, depth = V2_RESOLUTION, V2_DEPTH
    cells = (coords[:, :2] * V2_OBJECT_RATIO).add_(1).mul_(resolution / 2).ceil_().clamp_(1, resolution - 2).long()
    z = (coords[:, 2] + 1).div_(2).add_(V2_DEPTH_BIAS).div_(1 + V2_DEPTH_BIAS).mul_(depth - 2)
    value = z.clamp(1, depth - 2)
    return cells[:, 0], cells[:, 1], value, z.ceil_().long()


def _v2_bounds(row: torch.Tensor, col: torch.Tensor, _value: torch.Tensor, slice_index: torch.Tensor) -> list:
    """Each view's first and last row, column and depth slice, `[P][6]`, from `[P,K]` voxel coordinates."""
    parts = [part for index in (row, col, slice_index) for part in (index.amin(dim=1), index.amax(dim=1))]
    return torch.stack(parts, dim=1).tolist()


def _v2_image(
    row: torch.Tensor,
    col: torch.Tensor,
    value: torch.Tensor,
    slice_index: torch.Tensor,
    out: torch.Tensor | None = None,
    bounds: list | None = None,
    scratch: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Grid -> 7x7 max-pool -> 3x3 Gaussian -> max over slices -> invert, where it can be non-zero.

    Equal to the official dense computation, but cheaper: empty depth slices
    only add zeros to a max over non-negative values, so only each view's
    range of depth slices is processed, over the rows and columns that a voxel
    can reach (the rest of the image is background, exactly 1). The planes are
    the channels of one channels-last frame: the pooling runs as shifted 1-D
    maxima over the flat frame, the smoothing as one depthwise convolution.
    Writes the `[views,110,110]` images into `out` when given. `bounds` are
    the views' `_v2_bounds`, and `scratch` keeps flat buffers across calls.
    """
    views, device = row.shape[0], row.device
    image = torch.empty(views, V2_IMAGE, V2_IMAGE, device=device) if out is None else out
    image.fill_(1.0)
    bounds = _v2_bounds(row, col, value, slice_index) if bounds is None else bounds
    plane_of_slice, rank, per_slot = _v2_planes(bounds)
    planes = sum(per_slot)
    top, bottom = min(b[0] for b in bounds), max(b[1] for b in bounds)
    left, right = min(b[2] for b in bounds), max(b[3] for b in bounds)
    # Frame cell (i, j) is grid cell (top - 6 + i, left - 6 + j): 6 empty rows above and below the voxels and 6
    # empty columns before them, what the forward shifts of the 7-wide window read. Past a row's last column
    # they read on into the next row's empty columns, and 6 spare cells end the last row.
    height, width = bottom - top + 13, right - left + 7
    grid, ping, pong = _scratch(scratch, (height * width + 6) * planes, device)
    plane = torch.tensor(plane_of_slice, device=device).view(views, V2_DEPTH).gather(1, slice_index)
    cell = (row - (top - 6)).mul_(width).add_(col).add_(6 - left).mul_(planes).add_(plane).flatten()
    grid.scatter_reduce_(0, cell, value.flatten(), "amax", include_self=True)
    # Along rows, only the voxel rows can be non-zero: pool those and clear the 6 rows above and below.
    frame_row = width * planes
    _window_max(grid[6 * frame_row : (height - 6) * frame_row + 6 * planes], planes, ping[6 * frame_row :])
    ping[: 6 * frame_row].zero_()
    ping[(height - 6) * frame_row :].zero_()
    if len(cell) > len(grid) // 8:  # all zero again for the next call
        grid.zero_()
    else:
        grid.index_fill_(0, cell, 0)
    pooled = _window_max(ping[: height * frame_row], frame_row, pong).view(height - 6, width, planes)
    # pooled[i, j] is the official pool output at image row top - 4 + i, column left - 4 + j.
    _zero_outside_image(pooled, top - 4, left - 4)
    kernel = _gaussian_kernel(device).expand(planes, 1, 3, 3).contiguous()
    smooth = F.conv2d(pooled[None].permute(0, 3, 1, 2), kernel, padding=2, groups=planes)
    # smooth[i, j] is centred on pooled[i - 1, j - 1], image row top - 5 + i: the reach of the smoothed maps.
    rows = slice(max(0, 5 - top), min(height - 4, V2_IMAGE + 5 - top))
    cols = slice(max(0, 5 - left), min(width + 2, V2_IMAGE + 5 - left))
    squeezed = _max_per_view(smooth[0].permute(1, 2, 0)[rows, cols], per_slot)
    maps = squeezed.permute(2, 0, 1)[torch.tensor(rank, device=device)]  # back in view order
    region = image[:, top - 5 + rows.start : top - 5 + rows.stop, left - 5 + cols.start : left - 5 + cols.stop]
    region.addcdiv_(maps, maps.amax(dim=(1, 2), keepdim=True), value=-1)  # 1 - map / max
    return image


def _v2_planes(bounds: list) -> tuple[list[int], list[int], list[int]]:
    """Number the (view, depth slice) planes: the plane of each view's slices `[V*8]`, each view's rank, views per slot.

    Slot k holds slice first + k of every view with more than k slices.
    Views are ranked by their number of slices, most first, so that slot k's
    views are the first per_slot[k] in rank order, and planes are numbered
    slot by slot: plane first_plane[k] + rank.
    """
    counts = [last - first + 1 for *_, first, last in bounds]
    order = sorted(range(len(bounds)), key=counts.__getitem__, reverse=True)
    per_slot = [sum(count > slot for count in counts) for slot in range(max(counts))]
    first_plane = list(itertools.accumulate(per_slot, initial=0))
    plane_of_slice, rank = [0] * (len(bounds) * V2_DEPTH), [0] * len(bounds)
    for position, view in enumerate(order):
        rank[view] = position
        first = view * V2_DEPTH + bounds[view][4]
        for slot in range(counts[view]):
            plane_of_slice[first + slot] = first_plane[slot] + position
    return plane_of_slice, rank, per_slot


def _scratch(scratch: list[torch.Tensor] | None, size: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """A zero grid and two flat buffers of `size` cells, kept from chunk to chunk: fresh big tensors page-fault."""
    if scratch is None:
        scratch = []
    if not scratch or scratch[0].numel() < size:
        scratch[:] = [
            torch.zeros(size, device=device),
            torch.empty(size, device=device),
            torch.empty(size, device=device),
        ]
    return tuple(buffer[:size] for buffer in scratch)


def _window_max(x: torch.Tensor, step: int, out: torch.Tensor) -> torch.Tensor:
    """Flat `x` -> max of x[i], x[i + step], ..., x[i + 6 step] (7 cells, one reduction), into `out`.

    With step = one column that is 7 columns along a row, with step = one row
    7 rows; the result is 6 steps shorter.
    """
    size = len(x) - (V2_POOL - 1) * step
    windows = x.as_strided((size, V2_POOL), (1, step))
    return torch.amax(windows, dim=1, out=out[:size])


def _zero_outside_image(pooled: torch.Tensor, first_row: int, first_col: int) -> None:
    """The official convolution pads the 110x110 pooled image with zeros: clear the frame's cells just outside.

    `pooled[i, j]` is image cell (first_row + i, first_col + j).
    """
    for edge in (-1, V2_IMAGE):
        if 0 <= edge - first_row < pooled.shape[0]:
            pooled[edge - first_row] = 0
        if 0 <= edge - first_col < pooled.shape[1]:
            pooled[:, edge - first_col] = 0


def _gaussian_taps() -> torch.Tensor:
    """The official 3x3 kernel is the outer product of these normalised 1-D taps (sigma 3, float32)."""
    offsets = np.arange(V2_SMOOTH_SIZE, dtype=np.float32) - V2_SMOOTH_SIZE // 2
    taps = np.exp(-(offsets**2) / (2 * np.float32(V2_SMOOTH_SIGMA) ** 2))
    return torch.from_numpy(taps / taps.sum())


@functools.lru_cache(maxsize=4)
def _gaussian_kernel(device: torch.device) -> torch.Tensor:
    """The official normalised 3x3 Gaussian, `[3,3]` float32."""
    taps = _gaussian_taps()
    return torch.outer(taps, taps).to(device)


def _max_per_view(planes: torch.Tensor, per_slot: list[int]) -> torch.Tensor:
    """Max over each view's planes: `[h,w,planes]` numbered as `_v2_planes` does -> `[h,w,views]` in view order."""
    views = per_slot[0]
    if len(per_slot) > 1 and per_slot[1] == views:  # the first two slots hold every view: no copy needed
        squeezed, done = torch.maximum(planes[..., :views], planes[..., views : 2 * views]), 2
    else:
        squeezed, done = planes[..., :views].clone(), 1
    first = done * views
    for count in per_slot[done:]:
        torch.maximum(squeezed[..., :count], planes[..., first : first + count], out=squeezed[..., :count])
        first += count
    return squeezed


# ---------------------------------------------------------------- what CLIP sees


def to_clip_images(maps: torch.Tensor, size: int = 224) -> torch.Tensor:
    """`[B,V,h,w]` maps -> `[B*V,3,size,size]`: bilinear resize (aligned corners), grey repeated to 3 channels.

    As the official code feeds CLIP, with no mean/std normalisation; resizing
    one channel and repeating it equals repeating first and resizing.
    """
    flat = maps.flatten(0, 1)[:, None]
    if flat.shape[-2:] != (size, size):
        flat = F.interpolate(flat, size=(size, size), mode="bilinear", align_corners=True)
    return flat.expand(-1, 3, -1, -1)


def num_views(projection: str) -> int:
    """How many views a projection (`v1`, `v1-few-shot`, `v2`) renders."""
    return {"v1": len(V1_VIEWS["zero-shot"].angles), "v1-few-shot": len(V1_VIEWS["few-shot"].angles)}.get(
        projection, V2_NUM_VIEWS
    )


def view_names(projection: str) -> tuple[str, ...]:
    """Human names of a projection's views, in order."""
    return {"v1": V1_VIEWS["zero-shot"].names, "v1-few-shot": V1_VIEWS["few-shot"].names}.get(projection, V2_VIEW_NAMES)


__all__ = [
    "project_v1",
    "project_v2",
    "rotation_matrices",
    "to_clip_images",
    "num_views",
    "view_names",
    "V1_VIEWS",
    "V2_NUM_VIEWS",
]
