"""PointCLIP V2's realistic projection on a CPU: one compiled loop per view.

The torch chain (`projection.py`, `v2_passes.py`) streams every step of every
view through memory. Here each view is worked on whole while it sits in the core's cache:
normalise its points, scatter them into its own small voxel grid, then per
depth slice dilate (7x7), smooth (3x3) and max into the view's image, only
over the box that slice's voxels can reach. Views are independent, so threads
split them. The float32 steps are the official ones in the same order, and the
smoothing is torch's convolution (fused multiply-adds, row by row), so the
maps equal the torch chain's bit for bit.

Indices are unsigned on purpose: numba guards signed indices against
negative wrap-around, and that guard keeps LLVM from vectorising the loops
(5x slower).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

from clipcli.render.v2_params import (
    V2_DEPTH,
    V2_DEPTH_BIAS,
    V2_IMAGE,
    V2_MARGIN,
    V2_MIN_EXTENT,
    V2_OBJECT_RATIO,
    V2_POOL,
    V2_RESOLUTION,
)

_F = np.float32
_U = np.uint64
_REACH = V2_POOL // 2  # cells the pooling reaches on either side: 3
_PAD = 2 * _REACH + 2  # room around a view's frame for every window that reads past it
_SIDE = V2_RESOLUTION + 2 * _PAD  # scratch side: a frame spans at most rows 12..101 plus margins, 98 cells
_SLICES = V2_DEPTH + 1  # slice indices reach 7 when rounding puts a depth a hair above 6
# The official constants as the float32 values torch computes with.
_RATIO, _HALF_SIZE = _F(V2_OBJECT_RATIO), _F(V2_RESOLUTION / 2)
_BIAS, _BIASED_SPAN, _DEPTH_SPAN = _F(V2_DEPTH_BIAS), _F(1 + V2_DEPTH_BIAS), _F(V2_DEPTH - 2)
_LOW, _HIGH = _F(1), _F(V2_RESOLUTION - 2)  # row and column clamp
_MIN_EXTENT = _F(V2_MIN_EXTENT)
_FIRST_ROW = 1 + V2_MARGIN  # a frame starts this many image rows (and columns) before its first voxel


@intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c rounded once, as torch's CPU convolution accumulates."""

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return types.float32(types.float32, types.float32, types.float32), codegen


_Function = TypeVar("_Function", bound=Callable)


def _compiled(function: _Function) -> _Function:
    """`function` compiled without the GIL, bounds checks or Python's division errors, cached on disk where it can be.

    numba refuses to cache where no cache directory is writable (read-only
    installs and homes): then every process compiles it again instead.
    """
    options: dict[str, Any] = {"nogil": True, "boundscheck": False, "error_model": "numpy"}
    try:
        return numba.njit(cache=True, **options)(function)
    except RuntimeError:
        return numba.njit(cache=False, **options)(function)


@_compiled
def render_views(points, kernel, image, degenerate, start, stop):
    """Views `start..stop-1` of `points [P,N,3]` (rotated, float32) -> `image [P,110,110]`, written in place.

    Sets `degenerate[p]` and skips view p when all its points coincide.
    """
    count = points.shape[1]
    row, col, depth = np.empty(count, _U), np.empty(count, _U), np.empty(count, _U)
    value, ceiled = np.empty(count, _F), np.empty((2, count), _F)  # ceiled: rows and columns before conversion
    grid = np.zeros((_SLICES, _SIDE, _SIDE), _F)
    across = np.zeros((_SIDE, _SIDE), _F)  # max along rows
    pooled = np.zeros((_SIDE, _SIDE), _F)
    squeezed = np.zeros((_SIDE, _SIDE), _F)
    peaks = np.zeros(_SIDE, _F)
    used_rows = np.zeros((_SLICES, _SIDE), np.bool_)
    used_cols = np.zeros((_SLICES, _SIDE), np.bool_)
    for view in range(start, stop):
        low, high = _extremes(points, view)
        extent = max(high[0] - low[0], high[1] - low[1], high[2] - low[2])
        if not extent > _MIN_EXTENT:  # all points coincide (the normalisation would divide by ~0)
            degenerate[view] = True
            continue
        top, bottom, left, right, first, last = _voxels(points, view, low, high, extent, row, col, depth, value, ceiled)
        height, width = bottom - top + _U(2 * V2_MARGIN + 1), right - left + _U(2 * V2_MARGIN + 1)
        # Frame cell (i, j) is image cell (top - 5 + i, left - 5 + j); scratch holds it at (i + _PAD, j + _PAD).
        for k in range(count):
            slice_index = depth[k] - first
            r, c = row[k] - top + _U(V2_MARGIN + _PAD), col[k] - left + _U(V2_MARGIN + _PAD)
            if value[k] > grid[slice_index, r, c]:
                grid[slice_index, r, c] = value[k]
            used_rows[slice_index, r] = True
            used_cols[slice_index, c] = True
        for i in range(_U(_PAD), height + _U(_PAD)):
            for j in range(_U(_PAD), width + _U(_PAD)):
                squeezed[i, j] = _F(0)
        for slice_index in range(last - first + _U(1)):
            a, b = _span(used_rows[slice_index])
            c, d = _span(used_cols[slice_index])
            if b < a:
                continue  # no voxel at this depth
            _pool(grid[slice_index], across, pooled, a, b, c, d)
            _smooth_into(pooled, kernel, squeezed, a, b, c, d)
            for i in range(a, b + _U(1)):
                for j in range(c, d + _U(1)):
                    grid[slice_index, i, j] = _F(0)
        _invert(squeezed, peaks, image[view], height, width, top - _U(_FIRST_ROW), left - _U(_FIRST_ROW))


@numba.njit(inline="always")
def _extremes(points, view):
    """Lowest and highest x, y, z of one view's points, as arrays of 3."""
    x_low = x_high = points[view, 0, 0]
    y_low = y_high = points[view, 0, 1]
    z_low = z_high = points[view, 0, 2]
    for k in range(1, points.shape[1]):
        x, y, z = points[view, k, 0], points[view, k, 1], points[view, k, 2]
        x_low, x_high = min(x_low, x), max(x_high, x)
        y_low, y_high = min(y_low, y), max(y_high, y)
        z_low, z_high = min(z_low, z), max(z_high, z)
    return np.array([x_low, y_low, z_low]), np.array([x_high, y_high, z_high])


@numba.njit(inline="always")
def _voxels(points, view, low, high, extent, row, col, depth, value, ceiled):
    """The official `points2grid` cells of one view's points, and their bounds (first/last row, column, slice).

    Two loops: the float steps alone vectorise (a division per lane at a
    time is what they cost); the conversions and bounds follow.
    """
    half = extent / _F(2)
    centre = (high + low) / _F(2)
    for k in range(points.shape[1]):
        x = (points[view, k, 0] - centre[0]) / half
        y = (points[view, k, 1] - centre[1]) / half
        z = (points[view, k, 2] - centre[2]) / half
        ceiled[0, k] = min(max(np.ceil((x * _RATIO + _F(1)) * _HALF_SIZE), _LOW), _HIGH)
        ceiled[1, k] = min(max(np.ceil((y * _RATIO + _F(1)) * _HALF_SIZE), _LOW), _HIGH)
        value[k] = ((z + _F(1)) / _F(2) + _BIAS) / _BIASED_SPAN * _DEPTH_SPAN
    top = left = first = _U(_SIDE)
    bottom = right = last = _U(0)
    for k in range(points.shape[1]):
        r, c, d = _U(ceiled[0, k]), _U(ceiled[1, k]), value[k]
        s = _U(np.ceil(d))
        row[k], col[k], depth[k], value[k] = r, c, s, min(max(d, _F(1)), _DEPTH_SPAN)
        top, bottom, left, right = min(top, r), max(bottom, r), min(left, c), max(right, c)
        first, last = min(first, s), max(last, s)
    return top, bottom, left, right, first, last


@numba.njit(inline="always")
def _span(used):
    """First and last set flag (b < a when none), clearing them for the next view."""
    a, b = _U(1), _U(0)
    for i in range(_U(used.shape[0])):
        if used[i]:
            if b < a:
                a = i
            b = i
            used[i] = False
    return a, b


@numba.njit(inline="always")
def _pool(grid, across, pooled, a, b, c, d):
    """7x7 max of a slice whose voxels fill rows a..b, columns c..d: `pooled` over that box grown by 3, 0 around."""
    reach = _U(_REACH)
    for i in range(a, b + _U(1)):
        for j in range(c - reach, d + reach + _U(1)):
            m = grid[i, j - reach]
            for k in range(_U(1), _U(V2_POOL)):
                x = grid[i, j - reach + k]
                m = x if x > m else m
            across[i, j] = m
    for k in range(_U(1), _U(2 * _REACH + 1)):  # rows the column windows read beyond the voxels
        for j in range(c - reach, d + reach + _U(1)):
            across[a - k, j] = _F(0)
            across[b + k, j] = _F(0)
    for i in range(a - reach - _U(2), b + reach + _U(3)):  # a 2-cell ring of zeros for the smoothing to read
        for j in range(c - reach - _U(2), d + reach + _U(3)):
            pooled[i, j] = _F(0)
    for i in range(a - reach, b + reach + _U(1)):
        for j in range(c - reach, d + reach + _U(1)):
            m = across[i - reach, j]
            for k in range(_U(1), _U(V2_POOL)):
                x = across[i - reach + k, j]
                m = x if x > m else m
            pooled[i, j] = m


@numba.njit(inline="always")
def _smooth_into(pooled, kernel, squeezed, a, b, c, d):
    """The 3x3 Gaussian of `pooled` over the box grown by 4, maxed into `squeezed`; torch's FMA order."""
    one = _U(1)
    for i in range(a - _U(V2_MARGIN), b + _U(V2_MARGIN + 1)):
        for j in range(c - _U(V2_MARGIN), d + _U(V2_MARGIN + 1)):
            total = kernel[0, 0] * pooled[i - one, j - one]
            total = _fma(kernel[0, 1], pooled[i - one, j], total)
            total = _fma(kernel[0, 2], pooled[i - one, j + one], total)
            total = _fma(kernel[1, 0], pooled[i, j - one], total)
            total = _fma(kernel[1, 1], pooled[i, j], total)
            total = _fma(kernel[1, 2], pooled[i, j + one], total)
            total = _fma(kernel[2, 0], pooled[i + one, j - one], total)
            total = _fma(kernel[2, 1], pooled[i + one, j], total)
            total = _fma(kernel[2, 2], pooled[i + one, j + one], total)
            kept = squeezed[i, j]
            squeezed[i, j] = total if total > kept else kept


@numba.njit(inline="always")
def _invert(squeezed, peaks, image, height, width, top, left):
    """`image` = 1 - squeezed / max(squeezed) over the frame, exactly 1 elsewhere (the official order)."""
    pad = _U(_PAD)
    for j in range(width):
        peaks[j] = _F(0)
    for i in range(height):  # column maxima first: a running max along a row does not vectorise
        for j in range(width):
            x = squeezed[i + pad, j + pad]
            peaks[j] = x if x > peaks[j] else peaks[j]
    peak = _F(0)
    for j in range(width):
        peak = peaks[j] if peaks[j] > peak else peak
    for i in range(V2_IMAGE):
        for j in range(V2_IMAGE):
            image[i, j] = _F(1)
    for i in range(height):
        for j in range(width):
            image[top + i, left + j] = _F(1) - squeezed[i + pad, j + pad] / peak
