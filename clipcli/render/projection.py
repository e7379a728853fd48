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
V2_CHUNK_CPU, V2_CHUNK_CUDA = 2, 128  # clouds per pass


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
    if len(points) == 0:
        return points.new_zeros(0, V2_NUM_VIEWS, V2_IMAGE, V2_IMAGE)
    maps = torch.empty(len(points), V2_NUM_VIEWS, V2_IMAGE, V2_IMAGE, device=points.device)
    bias = rotation_matrices(V2_BIAS_ANGLES).transpose(1, 2).to(points.device)
    # A few clouds at a time keep the CPU working set in cache; a GPU wants large batches.
    chunk = V2_CHUNK_CUDA if points.device.type == "cuda" else V2_CHUNK_CPU
    for part, out in zip(points.split(chunk), maps.split(chunk), strict=True):
        view_points = torch.matmul(_rotate(part, V2_ANGLES), bias[None])
        _v2_image(*_v2_voxels(view_points.flatten(0, 1)), out=out.flatten(0, 1))
    return maps


def _v2_voxels(points: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Official `points2grid` coordinates for `[P,N,3]` view points: row, col, value, depth slice (all `[P,N]`)."""
    high, low = points.max(dim=1)[0], points.min(dim=1)[0]
    centre = ((high + low) / 2)[:, None, :]
    extent = (high - low).max(dim=-1)[0][:, None, None]
    if not bool((extent > 0).all()):
        raise BadInputError("a cloud has no extent: all of its points coincide")
    points = (points - centre) / extent * 2.0
    x = points[..., 0] * V2_OBJECT_RATIO
    y = points[..., 1] * V2_OBJECT_RATIO
    resolution, depth = V2_RESOLUTION, V2_DEPTH
    row = torch.clip(((x + 1) / 2 * resolution).ceil(), 1, resolution - 2).long()
    col = torch.clip(((y + 1) / 2 * resolution).ceil(), 1, resolution - 2).long()
    z = ((points[..., 2] + 1) / 2 + V2_DEPTH_BIAS) / (1 + V2_DEPTH_BIAS) * (depth - 2)
    slice_index = z.ceil().long()
    return row, col, torch.clip(z, 1, depth - 2), slice_index


def _v2_image(
    row: torch.Tensor,
    col: torch.Tensor,
    value: torch.Tensor,
    slice_index: torch.Tensor,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Grid -> 7x7 max-pool -> 3x3 Gaussian -> max over slices -> invert, where it can be non-zero.

    Equal to the official dense computation, but cheaper: empty depth slices
    only add zeros to a max over non-negative values, so only occupied
    (view, slice) planes are processed, over the rows and columns that a voxel
    can reach (the rest of the image is background, exactly 1). The pooling
    and the smoothing run as shifted 1-D passes over one flat buffer. Writes
    the `[views,110,110]` images into `out` when given.
    """
    views, device = row.shape[0], row.device
    image = torch.empty(views, V2_IMAGE, V2_IMAGE, device=device) if out is None else out
    image.fill_(1.0)
    plane, view_of_plane = _occupied_planes(slice_index)
    top, bottom, left, right = int(row.min()), int(row.max()), int(col.min()), int(col.max())
    # A margin of 8 zero cells: 6 for the 7-wide window, 1 for the smoothing's zero padding, 1 for its reach.
    margin = 8
    height, width = bottom - top + 1 + 2 * margin, right - left + 1 + 2 * margin
    planes, size = len(view_of_plane), len(view_of_plane) * height * width
    grid = torch.zeros(size + 8 * width + 8, device=device)  # the tail is what the shifted passes use up
    cell = plane * (height * width) + (row - top + margin) * width + (col - left + margin)
    grid.scatter_reduce_(0, cell.flatten(), value.flatten(), "amax", include_self=True)
    pooled = _window_max(_window_max(grid, 1), width)
    # pooled[p, r, c] is the official pool output at image row first_row + r, column first_col + c.
    first_row, first_col = top - margin + V2_POOL_PADDING, left - margin + V2_POOL_PADDING
    _zero_outside_image(pooled[:size].view(planes, height, width), first_row, first_col)
    smooth = _smooth(pooled, width)[:size].view(planes, height, width)
    first_row, first_col = first_row + 1, first_col + 1  # smooth[p, r, c] is centred one cell further on
    # Smoothed values reach 5 cells before the first voxel and 3 past the last: r < height - margin.
    rows = slice(max(0, -first_row), min(height - margin, V2_IMAGE - first_row))
    cols = slice(max(0, -first_col), min(width - margin, V2_IMAGE - first_col))
    squeezed = _max_per_view(smooth[:, rows, cols], view_of_plane, views)
    peak = squeezed.flatten(1).max(dim=1)[0][:, None, None]
    image_rows = slice(first_row + rows.start, first_row + rows.stop)
    image_cols = slice(first_col + cols.start, first_col + cols.stop)
    image[:, image_rows, image_cols] = 1 - squeezed / peak
    return image


def _occupied_planes(slice_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Number the occupied (view, depth slice) pairs in order: each point's plane `[V,N]`, each plane's view."""
    views = slice_index.shape[0]
    key = torch.arange(views, device=slice_index.device)[:, None] * V2_DEPTH + slice_index
    occupied = torch.zeros(views * V2_DEPTH, dtype=torch.bool, device=slice_index.device)
    occupied[key.flatten()] = True
    plane_of_key = occupied.cumsum(0) - 1
    return plane_of_key[key], occupied.nonzero().squeeze(1) // V2_DEPTH


def _window_max(x: torch.Tensor, step: int) -> torch.Tensor:
    """Flat `x` -> max of x[i], x[i + step], ..., x[i + 6 step], by doubling (1 -> 2 -> 4 -> 7 cells).

    With step 1 that is 7 cells along a row, with step = row width 7 rows; the
    result is 6 steps shorter.
    """
    pairs = torch.maximum(x[:-step], x[step:])
    fours = torch.maximum(pairs[: -2 * step], pairs[2 * step :])
    return torch.maximum(fours[: -3 * step], fours[3 * step :])


def _zero_outside_image(pooled: torch.Tensor, first_row: int, first_col: int) -> None:
    """The official convolution pads the 110x110 pooled image with zeros: clear pooled cells beyond its edges."""
    pooled[:, : max(0, -first_row)] = 0
    pooled[:, max(0, V2_IMAGE - first_row) :] = 0
    pooled[:, :, : max(0, -first_col)] = 0
    pooled[:, :, max(0, V2_IMAGE - first_col) :] = 0


def _gaussian_taps() -> torch.Tensor:
    """The official 3x3 kernel is the outer product of these normalised 1-D taps (sigma 3, float32)."""
    offsets = np.arange(V2_SMOOTH_SIZE, dtype=np.float32) - V2_SMOOTH_SIZE // 2
    taps = np.exp(-(offsets**2) / (2 * np.float32(V2_SMOOTH_SIGMA) ** 2))
    return torch.from_numpy(taps / taps.sum())


def _smooth(x: torch.Tensor, width: int) -> torch.Tensor:
    """The 3x3 Gaussian as two 3-tap passes over flat `x` (along rows, then columns).

    Entry i is the smoothed value centred on x[i + width + 1]; the result is
    2 (width + 1) shorter.
    """
    side, centre, _ = (float(t) for t in _gaussian_taps())
    for step in (1, width):
        x = (x[: -2 * step] + x[2 * step :]).mul_(side).add_(x[step:-step], alpha=centre)
    return x


def _max_per_view(planes: torch.Tensor, view_of_plane: torch.Tensor, views: int) -> torch.Tensor:
    """Max over each view's planes (planes are sorted by view): `[P,h,w]` -> `[views,h,w]`."""
    counts = torch.bincount(view_of_plane, minlength=views)
    slots = int(counts.max())
    first_plane = counts.cumsum(0) - counts
    slot = torch.arange(len(view_of_plane), device=planes.device) - first_plane[view_of_plane]
    stacked = planes.new_zeros(views * slots, *planes.shape[1:])
    stacked.index_copy_(0, view_of_plane * slots + slot, planes)
    return stacked.view(views, slots, *planes.shape[1:]).amax(dim=1)


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
