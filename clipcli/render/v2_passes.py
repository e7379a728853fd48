"""PointCLIP V2's image step in torch: voxels to maps, many views per image pass.

From each view's voxels (grid row, column, value and depth slice) to its
110x110 map: the official dense grid, 7x7 max-pool, 3x3 Gaussian, max over
slices and inversion, computed only over each view's box of voxels. Views are
packed side by side in lanes (`_Layout`) so one pass of torch operations
serves many of them; buffers are kept from pass to pass.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from clipcli.render.v2_params import V2_IMAGE, V2_MARGIN, V2_POOL, V2_SMOOTH_SIGMA, V2_SMOOTH_SIZE

V2_LANES = 8  # views side by side in one image pass (the torch path): a full vector of lanes
V2_PASS_CELLS_CPU, V2_PASS_CELLS_CUDA = 1 << 21, 1 << 26  # cells per image pass of the torch path


def view_bounds(row: torch.Tensor, col: torch.Tensor, _value: torch.Tensor, slice_index: torch.Tensor) -> np.ndarray:
    """Each view's first and last row, column and depth slice, `[P,6]`, from `[P,K]` voxel coordinates."""
    parts = [part for index in (row, col, slice_index) for part in (index.amin(dim=1), index.amax(dim=1))]
    return torch.stack(parts, dim=1).cpu().numpy()


def voxel_image(
    row: torch.Tensor,
    col: torch.Tensor,
    value: torch.Tensor,
    slice_index: torch.Tensor,
    out: torch.Tensor | None = None,
    bounds: np.ndarray | None = None,
) -> torch.Tensor:
    """`[P,K]` voxels of P views -> grid, 7x7 max-pool, 3x3 Gaussian, max over slices, invert: `[P,110,110]`.

    Equal to the official dense computation, but only over each view's box
    of voxels plus the 4 cells the pooling and smoothing reach; the rest of
    the image is background, exactly 1. Writes into `out` when given.
    `bounds` are the views' `view_bounds`. Rows and columns must lie in
    [5, 106], as the projection's grid cells do.
    """
    device = row.device
    image = torch.empty(row.shape[0], V2_IMAGE, V2_IMAGE, device=device) if out is None else out
    image.fill_(1.0)
    bounds = view_bounds(row, col, value, slice_index) if bounds is None else bounds
    layouts = _plan_passes(bounds, V2_PASS_CELLS_CUDA if device.type == "cuda" else V2_PASS_CELLS_CPU)
    # Every voxel's cell in its pass's strip, computed once; then the views in pass order, each pass a run of them.
    order = np.concatenate([layout.views for layout in layouts])
    steps = np.zeros((len(order), 3), dtype=np.int32)  # cells stay below 2**31 with any budget
    steps[order] = np.concatenate(
        [np.stack(np.broadcast_arrays(layout.row_step, layout.slice_step, layout.offset), 1) for layout in layouts]
    )
    row_step, slice_step, offset = torch.from_numpy(steps).to(device)[:, :, None].unbind(1)
    cell = (row.int() * row_step).add_(col.int() * _Layout.lanes).add_(slice_index.int() * slice_step).add_(offset)
    view_order = torch.from_numpy(order).to(device)
    cell, value = cell.index_select(0, view_order).long(), value.index_select(0, view_order)
    scratch: list[torch.Tensor] = []  # the passes' buffers, shared by them
    _scratch(scratch, max(layout.buffer for layout in layouts), device)  # once, at full size
    first = 0
    for layout in layouts:
        last = first + len(layout.views)
        _render_pass(layout, cell[first:last].flatten(), value[first:last].flatten(), image.view(-1), scratch)
        first = last
    return image


@dataclass(frozen=True)
class _Layout:
    """Where one image pass keeps its views: `slices` strips of `rows` x `width` cells in `lanes` channels.

    Views sit in lanes, stacked one under another, each in a block of its
    box plus the margins; strip s holds depth slice first + s of every view.
    Every view of a pass has the same number of slices, so the max over
    slices is a max over the outermost axis. Strip column 0 is image column
    `column` for every view.

    Per view: `views` its index and `offset` the constant term of its voxels'
    cell formula (counting the padding rows before the strips). Per strip
    row and lane: `target` its output row and `owner` its view (len(views)
    where unused: those rows draw background over background).
    """

    views: np.ndarray
    slices: int
    rows: int
    width: int
    column: int
    offset: np.ndarray
    target: np.ndarray
    owner: np.ndarray

    lanes = V2_LANES  # always: the smoothing then rounds alike whatever the batch
    pad_rows = V2_POOL // 2  # zero rows before and after the strips, for the centred windows

    @property
    def row_step(self) -> int:
        return self.width * self.lanes

    @property
    def slice_step(self) -> int:
        return self.rows * self.row_step

    @property
    def cells(self) -> int:
        return self.slices * self.slice_step

    @property
    def buffer(self) -> int:
        """Cells of the strips with their padding rows."""
        return self.cells + 2 * self.pad_rows * self.row_step


def _plan_passes(bounds: np.ndarray, budget: int) -> list[_Layout]:
    """Plan the image passes: views grouped by slice count and sorted by width, so that a pass wastes few cells."""
    top, bottom, left, right, first, last = np.asarray(bounds, dtype=np.int64).T
    margin = V2_MARGIN
    if len(top) and (min(top.min(), left.min()) <= margin or max(bottom.max(), right.max()) > V2_IMAGE - margin):
        raise ValueError("V2 voxel rows and columns must lie in [5, 106]")
    heights, widths, slices = bottom - top + 1 + 2 * margin, right - left + 1 + 2 * margin, last - first + 1
    order = np.lexsort((widths, slices))
    layouts, start = [], 0
    while start < len(order):
        group = order[start:][slices[order[start:]] == slices[order[start]]]
        # Views of similar width have similar columns (every box is centred): the columns they span together grow
        # slowly along the group, and a pass of views [0, k) costs their total height times that span.
        span = np.maximum.accumulate(right[group]) - np.minimum.accumulate(left[group]) + 1 + 2 * margin
        cost = np.cumsum(heights[group]) * span * slices[group]
        taken = max(1, int(np.searchsorted(cost, budget, side="right")))
        views = group[:taken]
        layouts.append(_stack_views(views, heights[views], top[views], left[views].min() - 1 - margin, first[views],
                                  int(span[taken - 1]), int(slices[views[0]])))  # fmt: skip
        start += taken
    return layouts


def _stack_views(views, heights, top, column: int, first, width: int, slices: int) -> _Layout:
    """Stack `views` into lanes, tallest first, dealing them out back and forth so the lanes end up level."""
    count = len(views)
    lanes = _Layout.lanes
    order = np.argsort(-heights, kind="stable")
    turn, seat = np.divmod(np.arange(count), lanes)
    lane = np.empty(count, dtype=np.int64)
    lane[order] = np.where(turn % 2 == 0, seat, lanes - 1 - seat)
    # Each view starts below the views dealt to its lane before it.
    dealt = np.lexsort((np.arange(count), lane[order]))
    stacked = heights[order][dealt]
    starts = np.cumsum(stacked) - stacked
    lane_first = np.r_[0, np.flatnonzero(np.diff(lane[order][dealt])) + 1]
    lane_start = np.repeat(starts[lane_first], np.diff(np.r_[lane_first, count]))
    row_offset = np.empty(count, dtype=np.int64)
    row_offset[order[dealt]] = starts - lane_start
    rows = int((row_offset + heights).max())
    image_row = top - 1 - V2_MARGIN  # of the block's first row
    row_step = width * lanes
    strip_start = row_offset - image_row - 1 + _Layout.pad_rows  # strip row of grid row 0, past the padding
    offset = strip_start * row_step - (column + 1) * lanes - first * (rows * row_step) + lane
    within = np.arange(heights.sum()) - np.repeat(np.cumsum(heights) - heights, heights)
    strip_row = np.repeat(row_offset, heights) + within
    strip_lane = np.repeat(lane, heights)
    target = np.zeros((rows, lanes), dtype=np.int64)
    owner = np.full((rows, lanes), count, dtype=np.int64)
    target[strip_row, strip_lane] = np.repeat(views * V2_IMAGE + image_row, heights) + within
    owner[strip_row, strip_lane] = np.repeat(np.arange(count), heights)
    return _Layout(views, slices, rows, width, column, offset, target, owner)


def _render_pass(layout: _Layout, cell: torch.Tensor, value: torch.Tensor, image: torch.Tensor, scratch: list) -> None:
    """One image pass: scatter the voxels into the strip, pool, smooth, squeeze, invert, and copy into `image` (flat).

    `cell` and `value` are the pass's voxels, flat. A block's margins keep
    every pooling and smoothing window inside its own view, so the strips
    are worked on whole.
    """
    device = image.device
    lanes, width, rows = layout.lanes, layout.width, layout.rows
    grid, spare, pooled = _scratch(scratch, layout.buffer, device)
    grid.scatter_reduce_(0, cell, value, "amax", include_self=True)
    squeezed = _squeeze(grid, spare, pooled, layout, cell)  # [rows, width, lanes]
    owner = torch.from_numpy(layout.owner).to(device).view(-1)
    peak = torch.zeros(len(layout.views) + 1, device=device)
    peak.scatter_reduce_(0, owner, _row_max(squeezed).view(-1), "amax")
    peak[-1] = 1.0  # unused rows: 1 - 0 / 1
    maps = pooled[: rows * lanes * width].view(rows, lanes, width)
    torch.div(squeezed.transpose(1, 2), peak[owner].view(rows, lanes, 1), out=maps)
    maps.neg_().add_(1)  # 1 - map / max, in the official order
    target = torch.from_numpy(layout.target).to(device).view(-1)
    image.view(-1, V2_IMAGE)[:, layout.column : layout.column + width].index_copy_(0, target, maps.view(-1, width))


def _squeeze(grid: torch.Tensor, spare: torch.Tensor, pooled: torch.Tensor, layout: _Layout, cell: torch.Tensor):
    """The strips in `grid` 7x7 max-pooled, smoothed and maxed over slices: `[rows, width, lanes]`, in `spare`.

    The pooling is flat strided maxima along rows, into `spare`, then along
    columns; the buffers' padding rows keep the centred windows inside them.
    Leaves `grid` all zero for the next pass and `pooled` free.
    """
    lanes, width, rows, cells = layout.lanes, layout.width, layout.rows, layout.cells
    pad = layout.pad_rows * layout.row_step
    spare[:pad].zero_()
    spare[pad + cells :].zero_()
    reach = layout.pad_rows * lanes  # a row window's cells on either side
    _window_max(grid[pad - reach : pad + cells + reach], lanes, spare[pad:])
    _window_max(spare, layout.row_step, pooled)
    _clear(grid, cell, cells)
    kernel = _gaussian_kernel(grid.device).expand(lanes, 1, 3, 3).contiguous()
    slices = pooled[:cells].view(layout.slices, rows, width, lanes).permute(0, 3, 1, 2)
    smooth = F.conv2d(slices, kernel, padding=1, groups=lanes)
    return torch.amax(smooth.permute(0, 2, 3, 1), dim=0, out=spare[: rows * width * lanes].view(rows, width, lanes))


def _clear(grid: torch.Tensor, cell: torch.Tensor, cells: int) -> None:
    """Zero the grid again for the next pass: only the voxels' cells when they are few."""
    if len(cell) > cells // 16:
        grid.zero_()
    else:
        grid.index_fill_(0, cell, 0)


def _row_max(x: torch.Tensor) -> torch.Tensor:
    """`[rows, width, lanes]` -> `[rows, lanes]`, the max along each row, by folding halves.

    Four times faster than `amax(dim=1)`, which reduces a middle axis slowly.
    """
    while x.shape[1] > 1:
        half = (x.shape[1] + 1) // 2  # the halves overlap by a column when the width is odd
        x = torch.maximum(x[:, :half], x[:, -half:])
    return x[:, 0]


def _scratch(scratch: list[torch.Tensor], size: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """A zero grid and two flat buffers of `size` cells, kept from pass to pass: fresh big tensors page-fault."""
    if not scratch or scratch[0].numel() < size:
        scratch[:] = [torch.zeros(size, device=device), *(torch.empty(size, device=device) for _ in range(2))]
    return tuple(buffer[:size] for buffer in scratch)


def _window_max(x: torch.Tensor, step: int, out: torch.Tensor) -> torch.Tensor:
    """Flat `x` -> max of x[i], x[i + step], ..., x[i + 6 step] (7 cells, one reduction), into `out`.

    With step = one column that is 7 columns along a row, with step = one row
    7 rows; the result is 6 steps shorter.
    """
    size = len(x) - (V2_POOL - 1) * step
    windows = x.as_strided((size, V2_POOL), (1, step))
    return torch.amax(windows, dim=1, out=out[:size])


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


@functools.cache
def gaussian_kernel_numpy() -> np.ndarray:
    """`_gaussian_kernel` for the compiled CPU path."""
    return _gaussian_kernel(torch.device("cpu")).numpy()
