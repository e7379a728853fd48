"""Colour pictures of scalar maps (depth), with a legend bar people can read."""

from __future__ import annotations

import cv2
import numpy as np

from clipcli.errors import ParameterError

COLORMAPS = {
    "magma": cv2.COLORMAP_MAGMA,
    "inferno": cv2.COLORMAP_INFERNO,
    "plasma": cv2.COLORMAP_PLASMA,
    "viridis": cv2.COLORMAP_VIRIDIS,
    "turbo": cv2.COLORMAP_TURBO,
    "jet": cv2.COLORMAP_JET,
    "bone": cv2.COLORMAP_BONE,
}


def colorize(values: np.ndarray, vmin: float, vmax: float, colormap: str = "magma", invert: bool = True) -> np.ndarray:
    """`[H,W]` floats -> `[H,W,3]` uint8 RGB; `invert` makes small values (near) bright."""
    if colormap not in COLORMAPS:
        raise ParameterError("colormap", f"{colormap!r}: choose one of {', '.join(COLORMAPS)}")
    scaled = (np.clip(values, vmin, vmax) - vmin) / max(vmax - vmin, 1e-12)
    if invert:
        scaled = 1.0 - scaled
    bgr = cv2.applyColorMap(np.round(scaled * 255).astype(np.uint8), COLORMAPS[colormap])
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def add_legend(
    picture: np.ndarray, vmin: float, vmax: float, colormap: str = "magma", unit: str = "m", invert: bool = True
) -> np.ndarray:
    """Append a vertical colour bar with labelled ticks (in `unit`) on the right of `picture`."""
    height = picture.shape[0]
    bar_width = max(12, height // 24)
    label_width = max(48, height // 6)
    font_scale = max(0.35, height / 900)
    ramp = np.linspace(vmin, vmax, height, dtype=np.float64)[:, None].repeat(bar_width, axis=1)
    bar = colorize(ramp, vmin, vmax, colormap, invert)
    panel = np.full((height, bar_width + label_width, 3), 255, np.uint8)
    panel[:, :bar_width] = bar
    ticks = np.linspace(vmin, vmax, 5)
    for value in ticks:
        row = int(round((value - vmin) / max(vmax - vmin, 1e-12) * (height - 1)))
        cv2.line(panel, (bar_width, row), (bar_width + 4, row), (0, 0, 0), 1)
        baseline_row = min(max(row + int(6 * font_scale * 2), int(12 * font_scale * 2)), height - 2)
        cv2.putText(
            panel,
            f"{value:.2f}{unit}",
            (bar_width + 6, baseline_row),
            cv2.FONT_HERSHEY_SIMPLEX,
            font_scale,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
    gap = np.full((height, 4, 3), 255, np.uint8)
    return np.concatenate([picture, gap, panel], axis=1)
