"""Point clouds to the multi-view depth images PointCLIP and PointCLIP V2 show CLIP.

Both projections follow the official code's arithmetic step by step (same
constants, same float32 operation order, same rounding), so the same cloud gives
the same maps; facts in docs/methods/point.md. The torch
code is vectorised over clouds, views and points with scatter operations, with
no torch-scatter dependency and no Python loop over points; V2's image step,
voxels to maps, is in `v2_passes.py`. On a CPU, V2's per-view work runs as
compiled loops instead (`v2_cpu.py`), to the same bits.

Image layout, as in the official code: rows come from the view's x axis and
columns from its y axis.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from clipcli.errors import BadInputError, ParameterError
from clipcli.render.v2_params import (
    MAX_COORDINATE,
    V2_DEPTH,
    V2_DEPTH_BIAS,
    V2_IMAGE,
    V2_MIN_EXTENT,
    V2_OBJECT_RATIO,
    V2_RESOLUTION,
)
from clipcli.render.v2_passes import gaussian_kernel_numpy, view_bounds, voxel_image

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

# PointCLIP V2's views (zeroshot_cls/trainers/mv_utils_zs.py); its other constants are in v2_params.py.
V2_ANGLES = tuple((a, 0.0, PI / 2) for a in (PI / 4, 3 * PI / 4, 5 * PI / 4, 7 * PI / 4)) + _SIDES + _TOP_BOTTOM
# A second, small rotation about y "to reveal more surface": 20 degrees, 12 for top and bottom.
V2_BIAS_ANGLES = ((0.0, PI / 9, 0.0),) * 8 + ((0.0, PI / 15, 0.0),) * 2
# Azimuths about the up (y) axis; the small bias rotation is left out of the names.
V2_VIEW_NAMES = ("az 45", "az 135", "az 225", "az 315", "az 0", "az 90", "az 180", "az 270", "top", "bottom")
V2_NUM_VIEWS = len(V2_ANGLES)
V2_VOXEL_POINTS_CPU, V2_VOXEL_POINTS_CUDA = 1 << 16, 1 << 18  # points rotated at a time (whole clouds)
NO_EXTENT = "a cloud has no extent: all of its points coincide"
# Per thread, kept from call to call (fresh big buffers page-fault every time): V2's rotated views on a CPU.
_CPU_SCRATCH = threading.local()


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
    largest = float(points.abs().amax()) if points.numel() else 0.0
    if not np.isfinite(largest):
        raise BadInputError("points contain NaN or infinite coordinates")
    if largest > MAX_COORDINATE:  # rotating would overflow float32
        raise BadInputError(f"points have coordinates beyond {MAX_COORDINATE:g}: scale the cloud down")
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
        raise ParameterError("views", f"{views!r}: choose one of {', '.join(V1_VIEWS)}")
    spec = V1_VIEWS[views]
    points = _check_points(points)
    batch, count, _ = points.shape
    size = spec.resolution
    translation = torch.tensor([0.0, 0.0, -spec.distance], device=points.device)
    moved = _rotate(points, spec.angles) - translation  # [B, V, N, 3]
    x, y, depth = moved.permute(3, 0, 1, 2).contiguous().unbind(0)  # contiguous: steps of 3 are slow
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
    weights = torch.zeros(planes * size * size + 1, device=points.device).index_add_(0, index, weight.flatten())
    maps = torch.zeros(planes * size * size + 1, device=points.device).index_add_(0, index, weighted.flatten())
    # Empty pixels are 0 / 0: 0, as upstream's values / (weights + (weights == 0)); every other weight is positive.
    return maps[:-1].div_(weights[:-1]).nan_to_num_(0.0).view(batch, len(spec.angles), size, size)


# ---------------------------------------------------------------- PointCLIP V2


def project_v2(points: torch.Tensor) -> torch.Tensor:
    """PointCLIP V2 realistic-projection maps before channel repeat and resize: `[B,N,3]` -> `[B,10,110,110]`.

    Per view: rotate (main view, then the small bias rotation), fit the
    bounding box's longest side to [-1, 1], shrink x and y by 0.8, and
    quantise to a 112x112x8 grid whose voxels keep their largest continuous
    depth; then a 7x7 max-pool densifies each depth slice, a 3x3 Gaussian
    (sigma 3) smooths it, the slices are squeezed by max, and the image is
    inverted, 1 - img / max(img): a white background and the deepest voxel
    black. Invariant to translating and scaling the cloud. On a CPU the
    per-view work is one compiled loop (`v2_cpu`); elsewhere it is torch.
    Both give the same maps, bit for bit.
    """
    points = _check_points(points)
    batch, count, _ = points.shape
    maps = torch.empty(batch, V2_NUM_VIEWS, V2_IMAGE, V2_IMAGE, device=points.device)
    if batch == 0:
        return maps
    rotations = [rotation_matrices(angles).transpose(1, 2).to(points.device) for angles in (V2_ANGLES, V2_BIAS_ANGLES)]
    render = _v2_renderer(points.device)
    # Rotated views take 30 floats per point: done for a bounded number of points at a time.
    clouds = max(1, (V2_VOXEL_POINTS_CUDA if points.device.type == "cuda" else V2_VOXEL_POINTS_CPU) // count)
    for part, out in zip(points.split(clouds), maps.split(clouds), strict=True):
        render(_v2_views(part, *rotations), out.flatten(0, 1))
    return maps


def _v2_views(points: torch.Tensor, main: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """`[B,N,3]` -> `[B*V,N,3]`: p R1^T, then R2^T, as the official batched matmuls (the same kernel, so the same bits).

    On a CPU into buffers kept per thread: fresh ones of this size page-fault
    on every call, which costs as much as the products.
    """
    if points.device.type != "cpu":
        return torch.matmul(torch.matmul(points[:, None], main[None]), bias[None]).flatten(0, 1)
    batch, count, _ = points.shape
    shape = (batch * V2_NUM_VIEWS, count, 3)
    size = math.prod(shape)
    buffers = _CPU_SCRATCH.__dict__.setdefault("views", [])
    if not buffers or buffers[0].numel() < size:
        buffers[:] = [torch.empty(size) for _ in range(3)]
    repeated, turned, views = (buffer[:size].view(shape) for buffer in buffers)
    repeated.view(batch, V2_NUM_VIEWS, count, 3).copy_(points[:, None])
    torch.bmm(repeated, main.repeat(batch, 1, 1), out=turned)
    return torch.bmm(turned, bias.repeat(batch, 1, 1), out=views)


def _v2_renderer(device: torch.device):
    """What turns `[P,N,3]` rotated views into `[P,110,110]` maps: compiled loops on a CPU, torch elsewhere."""
    return _v2_render_compiled if device.type == "cpu" else _v2_render_torch


def _v2_render_torch(view_points: torch.Tensor, out: torch.Tensor) -> None:
    """Rotated views -> maps in `out`, in torch: voxels of all views at once, then image passes of packed views."""
    coords, extremes = _v2_normalised(view_points)
    voxel_image(*_v2_cells(coords), out=out, bounds=view_bounds(*_v2_cells(extremes)))


def _v2_render_compiled(view_points: torch.Tensor, out: torch.Tensor) -> None:
    """Rotated views -> maps in `out` on a CPU: `v2_cpu.render_views`, the views split between torch's threads."""
    from clipcli.render import v2_cpu  # compiles on first use (cached on disk): only V2 on a CPU pays for it

    arguments = (view_points.contiguous().numpy(), gaussian_kernel_numpy(), out.numpy())
    degenerate = np.zeros(len(view_points), dtype=bool)
    edges = np.linspace(0, len(view_points), min(torch.get_num_threads(), len(view_points)) + 1).round().astype(int)
    shares = list(zip(edges[:-1], edges[1:], strict=True))  # the calling thread takes the first
    helpers = [_view_workers(len(shares) - 1).submit(v2_cpu.render_views, *arguments, degenerate, start, stop)
               for start, stop in shares[1:]]  # fmt: skip
    v2_cpu.render_views(*arguments, degenerate, *shares[0])
    for helper in helpers:
        helper.result()
    if degenerate.any():
        raise BadInputError(NO_EXTENT)


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
    high, low = coords.amax(dim=2), coords.amin(dim=2)  # max/min with indices: 6x slower
    extent = (high - low).max(dim=1)[0][:, None, None]
    if not bool((extent > V2_MIN_EXTENT).all()):
        raise BadInputError(NO_EXTENT)
    centre = ((high + low) / 2)[:, :, None]
    extremes = torch.stack([low, high], dim=2).sub_(centre).div_(extent / 2)
    return coords.sub_(centre).div_(extent / 2), extremes


def _v2_cells(coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalised `[P,3,K]` coordinates -> official grid row, col, value and depth slice, all `[P,K]`.

    The official float32 steps, merged only where that is exact: (x + 1) / 2 * 112
    is (x + 1) * 56. Every step is monotone, so a view's extreme points give
    its extreme rows, columns and slices. Coordinates in [-1, 1] put rows and
    columns in [12, 101] (0.8 keeps the object off the image border) and
    slices in [1, 6]. Indices are int32: half the memory traffic of int64 in
    the cell formula.
    """
    resolution, depth = V2_RESOLUTION, V2_DEPTH
    cells = (coords[:, :2] * V2_OBJECT_RATIO).add_(1).mul_(resolution / 2).ceil_().clamp_(1, resolution - 2).int()
    z = (coords[:, 2] + 1).div_(2).add_(V2_DEPTH_BIAS).div_(1 + V2_DEPTH_BIAS).mul_(depth - 2)
    value = z.clamp(1, depth - 2)
    return cells[:, 0], cells[:, 1], value, z.ceil_().int()


@functools.cache
def _view_workers(count: int) -> ThreadPoolExecutor:
    """`count` threads for the compiled V2 views past the first share, made on first use."""
    return ThreadPoolExecutor(count, thread_name_prefix="clipcli-v2-views")


# A forked child has none of its parent's threads: it must make its own helpers, or wait for the dead ones forever.
os.register_at_fork(after_in_child=_view_workers.cache_clear)


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
