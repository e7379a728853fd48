"""A differentiable rasterizer for black cubic Bézier strokes, in plain PyTorch.

CLIPasso renders with diffvg, which is hard to build. This replaces it with the
design measured in docs/methods/sketch.md: each stroke is flattened into a
polyline, its ink at a pixel centre is a 1-px linear ramp of the distance to
that polyline, `clamp(w + 0.5 - d, 0, 1)` (the box-filter integral across a
straight edge, with round caps and joins for free), and strokes are
composited as `1 - prod(1 - alpha)`. Like diffvg's edge sampling, gradients
live in the 1-px band at the stroke boundary.

Work is culled to 8x8 tiles (faster than 16x16 on a CPU at every stroke count
measured): every polyline segment is paired with the tiles its bounding box,
grown by the ink reach, touches; distances are computed only for those pairs
and reduced per (stroke, tile). Memory grows with the inked area, never as a
dense `[B, N, H, W]` buffer, and the same code runs on CPU and CUDA.
"""

from __future__ import annotations

import torch

TILE = 8  # pixels per tile side
SEGMENTS = 16  # polyline segments per cubic: the chord error of a 224 px stroke stays far below a pixel
_ALPHA_MAX = 1.0 - 1e-6  # keeps log(1 - alpha) finite; a fully inked pixel reads 1 - 1e-6


def bezier_polyline(points: torch.Tensor, segments: int = SEGMENTS) -> torch.Tensor:
    """Points of each cubic at `segments + 1` uniform t: `[..., 4, 2]` -> `[..., segments + 1, 2]`."""
    t = torch.linspace(0.0, 1.0, segments + 1, dtype=points.dtype, device=points.device)
    s = 1.0 - t
    basis = torch.stack([s**3, 3 * s**2 * t, 3 * s * t**2, t**3], dim=-1)  # [K, 4] Bernstein weights
    return basis @ points


def rasterize(
    points: torch.Tensor,
    width: float = 1.5,
    size: int = 224,
    *,
    tile: int = TILE,
    segments: int = SEGMENTS,
) -> torch.Tensor:
    """Ink coverage `[B, size, size]` in [0, 1] of strokes `[B, N, 4, 2]` (pixels, x right, y down).

    Pixel (row i, col j) covers [j, j+1] x [i, i+1], as in SVG and diffvg; `width`
    is the half-width, so 1.5 draws a 3 px stroke. Differentiable w.r.t. `points`;
    the sketch image is `1 - coverage`. Strokes may leave the canvas.
    """
    if points.ndim != 4 or tuple(points.shape[-2:]) != (4, 2):
        raise ValueError(f"points must be [B, N, 4, 2] cubic control points, got {tuple(points.shape)}")
    if not points.is_floating_point():
        raise ValueError(f"points must be floating point, got {points.dtype}")
    if size < 1 or tile < 1 or segments < 1:
        raise ValueError("size, tile and segments must be positive")
    batch, strokes = points.shape[:2]
    tiles = -(-size // tile)
    polyline = bezier_polyline(points, segments)
    starts, ends = polyline[:, :, :-1], polyline[:, :, 1:]  # [B, N, S, 2]
    reach = float(width) + 0.5  # no ink beyond this distance from the centre line

    b, n, s, tile_index = _segment_tile_pairs(starts.detach(), ends.detach(), reach, size, tile, tiles)
    # Group the pairs by (stroke, tile): the nearest segment of each stroke, per pixel of the tile.
    stroke_tile = (b * strokes + n) * tiles * tiles + tile_index
    groups, group_of_pair = torch.unique(stroke_tile, return_inverse=True)
    origin = torch.stack([tile_index % tiles, tile_index // tiles], dim=-1).to(points.dtype) * tile
    nearest = _NearestSquaredDistance.apply(starts[b, n, s], ends[b, n, s], origin, group_of_pair, groups.numel(), tile)
    distance = nearest.clamp_min(1e-12).sqrt()  # the clamp keeps sqrt's gradient finite on the centre line
    alpha = (reach - distance).clamp(0.0, 1.0)

    # 1 - prod(1 - alpha) over strokes, as a sum of logs scattered into [B * tiles^2, tile^2].
    canvas_tile = (groups // (strokes * tiles * tiles)) * tiles * tiles + groups % (tiles * tiles)
    log_clear = torch.log1p(-alpha.clamp(max=_ALPHA_MAX))
    cleared = log_clear.new_zeros(batch * tiles * tiles, tile * tile).index_add(0, canvas_tile, log_clear)
    coverage = 1.0 - cleared.exp()
    coverage = coverage.view(batch, tiles, tiles, tile, tile).permute(0, 1, 3, 2, 4)
    return coverage.reshape(batch, tiles * tile, tiles * tile)[:, :size, :size]


def _segment_tile_pairs(
    starts: torch.Tensor, ends: torch.Tensor, reach: float, size: int, tile: int, tiles: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(batch, stroke, segment, tile) indices of every segment whose grown bounding box meets a tile.

    A pixel centre j + 0.5 can get ink only if it lies within `reach` of the segment,
    hence inside its bounding box grown by `reach`: that box gives a pixel range,
    then a tile range per axis, clipped to the canvas.
    """
    low = torch.minimum(starts, ends) - reach
    high = torch.maximum(starts, ends) + reach
    first = torch.ceil(low - 0.5).clamp(0, size - 1)
    last = torch.floor(high - 0.5).clamp(-1, size - 1)
    empty = (torch.ceil(low - 0.5) > size - 1) | (last < first)  # off the canvas on this axis
    first_tile = torch.div(first, tile, rounding_mode="floor")
    last_tile = torch.where(empty, -1.0, torch.div(last, tile, rounding_mode="floor"))
    index = torch.arange(tiles, device=starts.device, dtype=starts.dtype)
    inside = (index >= first_tile[..., None]) & (index <= last_tile[..., None])  # [B, N, S, 2, tiles]
    pairs = inside[..., 1, :, None] & inside[..., 0, None, :]  # [B, N, S, tiles_y, tiles_x]
    b, n, s, row, col = pairs.nonzero(as_tuple=True)
    return b, n, s, row * tiles + col


class _NearestSquaredDistance(torch.autograd.Function):
    """Per (stroke, tile) and pixel, the squared distance to the stroke's nearest segment.

    Inputs are one row per (segment, tile) pair: segment ends `a`, `b` `[P, 2]`,
    the tile's top-left corner `origin` `[P, 2]` and the pair's group. The
    output is `[groups, tile * tile]`. The backward pass uses the closed form
    d(d^2)/da = -2 (1 - t) g, d(d^2)/db = -2 t g (g: pixel minus nearest point,
    t: its position on the segment; t's own derivative vanishes at the optimum)
    and recomputes the per-pair distances instead of storing them, so memory
    stays at the size of the output.
    """

    @staticmethod
    def forward(ctx, a, b, origin, group_of_pair, groups: int, tile: int):
        squared, _, _, _ = _pair_distances(a, b, origin, tile)
        nearest = squared.new_full((groups, tile * tile), float("inf"))
        nearest.scatter_reduce_(0, group_of_pair[:, None].expand_as(squared), squared, "amin", include_self=False)
        ctx.save_for_backward(a, b, origin, group_of_pair, nearest)
        ctx.tile = tile
        return nearest

    @staticmethod
    def backward(ctx, grad_nearest):
        a, b, origin, group_of_pair, nearest = ctx.saved_tensors
        squared, t, gap_x, gap_y = _pair_distances(a, b, origin, ctx.tile)
        # Only the nearest segment of a stroke moves a pixel's distance. Ties are common (a
        # pixel nearest to a joint is nearest to both segments' shared end): split them evenly.
        winner = (squared == nearest[group_of_pair]).to(squared.dtype)
        ties = torch.zeros_like(nearest).index_add_(0, group_of_pair, winner)
        weight = winner * (grad_nearest / ties)[group_of_pair] * -2.0
        weight_b = weight * t
        weight_a = weight - weight_b
        grad_a = torch.stack([(weight_a * gap_x).sum(1), (weight_a * gap_y).sum(1)], dim=-1)
        grad_b = torch.stack([(weight_b * gap_x).sum(1), (weight_b * gap_y).sum(1)], dim=-1)
        return grad_a, grad_b, None, None, None, None


def _pair_distances(a: torch.Tensor, b: torch.Tensor, origin: torch.Tensor, tile: int):
    """Squared distance `[P, tile^2]` from each pixel centre of a pair's tile to its segment.

    Also returns the nearest point's parameter t on the segment and the gap
    (pixel centre minus nearest point), which the backward pass needs. x and y
    are kept as separate `[P, tile^2]` tensors: far faster than a trailing
    dimension of 2.
    """
    offsets = torch.arange(tile, dtype=a.dtype, device=a.device) + 0.5
    centre_x = (origin[:, :1] + offsets.repeat(tile)[None]) - a[:, :1]  # row-major pixels in the tile
    centre_y = (origin[:, 1:] + offsets.repeat_interleave(tile)[None]) - a[:, 1:]
    along_x, along_y = b[:, :1] - a[:, :1], b[:, 1:] - a[:, 1:]
    inverse_length2 = 1.0 / (along_x * along_x + along_y * along_y).clamp_min(1e-12)
    t = ((centre_x * along_x + centre_y * along_y) * inverse_length2).clamp_(0.0, 1.0)
    gap_x = centre_x - t * along_x
    gap_y = centre_y - t * along_y
    return gap_x * gap_x + gap_y * gap_y, t, gap_x, gap_y
