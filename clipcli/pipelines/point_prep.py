"""Clouds of any size and pose -> the fixed-size, y-up, unit-sphere clouds PointCLIP projects.

The official code reads PointNet's HDF5 sets, which are already y-up and
inside the unit sphere, and keeps their first 1024 points. User files are
neither, so each cloud is rotated to y-up, subsampled to `points` (farthest-point
sampling by default, on the model's device) and, by default, centred on its
centroid and scaled so its farthest point is at distance 1 (PointNet's
`pc_normalize`). A cloud with fewer points is topped up by repeating points
drawn with replacement. Every choice is seeded per cloud, so a cloud gives the
same result alone or in a batch.

Farthest-point sampling costs `points` passes over the cloud, so a cloud of
more than FPS_POOL_MULTIPLE x `points` points (a 10-million-point scan) is
first cut to that many points drawn at random without replacement, and the
farthest points are picked among those; smaller clouds are searched whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clipcli.defaults import FPS_POOL_MULTIPLE
from clipcli.errors import BadInputError, ParameterError
from clipcli.render.v2_params import MAX_COORDINATE, V2_MIN_EXTENT

SAMPLINGS = ("fps", "random", "first")
UP_AXES = ("y", "z")
# p_yup = p @ R.T; z-up -> y-up is -90 degrees about x: (x, y, z) -> (x, z, -y).
_UP_ROTATIONS = {
    "y": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
    "z": ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, -1.0, 0.0)),
}


@dataclass(frozen=True)
class CloudOptions:
    """How clouds are brought to PointCLIP's input: size, sampling, normalisation, up axis, seed."""

    points: int = 1024
    sampling: str = "fps"
    normalize: bool = True
    up_axis: str = "y"
    seed: int = 0

    def check(self) -> CloudOptions:
        if self.points < 1:
            raise ParameterError("points", f"must be at least 1, got {self.points}")
        if self.sampling not in SAMPLINGS:
            raise ParameterError("sampling", f"{self.sampling!r}: choose one of {', '.join(SAMPLINGS)}")
        if self.up_axis not in UP_AXES:
            raise ParameterError("up_axis", f"{self.up_axis!r}: choose one of {', '.join(UP_AXES)}")
        return self


def check_cloud(points: np.ndarray, source: str | Path) -> np.ndarray:
    """A usable cloud is `[N, 3]`, finite, and not a single repeated point (projection divides by its extent).

    Refuses here, with the file's name, what the projections would refuse for
    the whole batch: coordinates too large to rotate, extents too small to
    normalise.
    """
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0:
        raise BadInputError(f"expected a non-empty [N, 3] cloud, got shape {list(points.shape)}", source)
    if not np.isfinite(points).all():
        raise BadInputError("the cloud has NaN or infinite coordinates", source)
    if np.abs(points).max() > MAX_COORDINATE:
        raise BadInputError(f"coordinates beyond {MAX_COORDINATE:g}: scale the cloud down", source)
    extent = (points.max(axis=0) - points.min(axis=0)).max()
    if not extent > 0:
        raise BadInputError(f"all {len(points)} points coincide: a cloud needs some extent to be projected", source)
    if not extent > V2_MIN_EXTENT:
        raise BadInputError(f"the points span only {extent:.1g}: too little extent to be projected", source)
    return points


def up_axis_rotation(axis: str) -> torch.Tensor:
    """`[3,3]` R taking a cloud whose up axis is `axis` to the official y-up frame (rows: p @ R.T)."""
    if axis not in _UP_ROTATIONS:
        raise ParameterError("up_axis", f"{axis!r}: choose one of {', '.join(UP_AXES)}")
    return torch.tensor(_UP_ROTATIONS[axis])


def normalize_unit_sphere(points: torch.Tensor) -> torch.Tensor:
    """`[B,N,3]`: subtract each cloud's centroid, divide by its largest point norm (PointNet `pc_normalize`)."""
    centred = points - points.mean(dim=1, keepdim=True)
    radius = centred.norm(dim=-1).amax(dim=1)[:, None, None]
    return centred / radius


@torch.no_grad()
def farthest_point_sample(points: torch.Tensor, count: int, start: torch.Tensor) -> torch.Tensor:
    """Greedy farthest-point sampling: `[B,N,3]` -> indices `[B,count]`, beginning at `start [B]`.

    Each step picks, per cloud, the point farthest from those picked so far
    (the first such point on ties). The loop runs over the picks, each a
    vectorised step over all clouds and points; `count` must not exceed N.
    """
    batch, size, _ = points.shape
    if count > size:
        raise ValueError(f"cannot pick {count} distinct points out of {size}")
    rows = torch.arange(batch, device=points.device)
    nearest = torch.full((batch, size), float("inf"), device=points.device)
    chosen = torch.empty(batch, count, dtype=torch.long, device=points.device)
    current = start.to(points.device)
    for step in range(count):
        chosen[:, step] = current
        offsets = points - points[rows, current][:, None]
        nearest = torch.minimum(nearest, offsets.square().sum(dim=-1))
        current = nearest.argmax(dim=1)
    return chosen


def prepare_clouds(clouds: Sequence[np.ndarray], options: CloudOptions, device: str | torch.device) -> torch.Tensor:
    """`B` clouds `[N_i, 3]` -> `[B, points, 3]` float32 on `device`: y-up, sampled, optionally normalised."""
    rotation = up_axis_rotation(options.up_axis).to(device)
    tensors = [torch.as_tensor(np.asarray(c, dtype=np.float32), device=device) @ rotation.T for c in clouds]
    plans = [_plan(len(c), options) for c in tensors]
    fps_plans = {i: plan for i, plan in enumerate(plans) if isinstance(plan, _FpsPlan)}
    picks = {i: plan for i, plan in enumerate(plans) if not isinstance(plan, _FpsPlan)}
    if fps_plans:
        pools = [tensors[i][plan.pool.to(device)] for i, plan in fps_plans.items()]
        sampled = _batched_fps(pools, [plan.start for plan in fps_plans.values()], options.points)
        for (i, plan), indices in zip(fps_plans.items(), sampled, strict=True):
            picks[i] = plan.pool[indices]
    out = torch.stack([cloud[picks[i].to(device)] for i, cloud in enumerate(tensors)])
    return normalize_unit_sphere(out) if options.normalize else out


@dataclass(frozen=True)
class _FpsPlan:
    """Farthest-point sampling still to run: over the cloud's points `pool`, starting at `pool[start]`."""

    pool: torch.Tensor
    start: int


def _plan(size: int, options: CloudOptions) -> torch.Tensor | _FpsPlan:
    """Indices for one cloud of `size` points, or what farthest-point sampling must choose from."""
    rng = np.random.default_rng(options.seed)
    count = options.points
    if size < count:  # keep every point, repeat some at random to fill up
        extra = rng.choice(size, count - size, replace=True)
        return torch.from_numpy(np.concatenate([np.arange(size), extra]))
    if options.sampling == "first" or size == count:
        return torch.arange(count)
    if options.sampling == "random":
        return torch.from_numpy(rng.choice(size, count, replace=False))
    pool_size = FPS_POOL_MULTIPLE * count
    pool = np.sort(rng.choice(size, pool_size, replace=False)) if size > pool_size else np.arange(size)
    return _FpsPlan(torch.from_numpy(pool), int(rng.integers(len(pool))))


def _batched_fps(clouds: list[torch.Tensor], starts: list[int], count: int) -> list[torch.Tensor]:
    """FPS over clouds of different sizes at once.

    Shorter clouds are padded with copies of their point 0: a copy is never
    farther than point 0 itself and ties go to the lower index, so the picks
    are those of each cloud alone.
    """
    longest = max(len(c) for c in clouds)
    padded = torch.stack([torch.cat([c, c[:1].expand(longest - len(c), 3)]) for c in clouds])
    indices = farthest_point_sample(padded, count, torch.tensor(starts))
    return list(indices.cpu())
