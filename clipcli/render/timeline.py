"""A picture of action probabilities over time: one row per label, one cell per window."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from clipcli.render.colormap import add_legend, colorize

ROW_HEIGHT = 26
LABEL_WIDTH = 300
AXIS_HEIGHT = 34
TITLE_HEIGHT = 32
FONT = cv2.FONT_HERSHEY_SIMPLEX


def timeline_rows(probabilities: np.ndarray, rows: int) -> list[int]:
    """Classes to show: every window's top-1 (by first appearance), then the highest peaks, at most `rows`."""
    chosen = list(dict.fromkeys(int(c) for c in probabilities.argmax(axis=1)))[:rows]
    for index in np.argsort(-probabilities.max(axis=0), kind="stable"):
        if len(chosen) >= rows:
            break
        if int(index) not in chosen:
            chosen.append(int(index))
    return chosen


def cell_edges(spans: Sequence[tuple[float, float]], duration: float) -> np.ndarray:
    """`W+1` times splitting [0, duration] between windows at the midpoints of their centres."""
    centres = np.array([(start + end) / 2 for start, end in spans])
    return np.concatenate([[0.0], (centres[:-1] + centres[1:]) / 2, [duration]])


def timeline_image(
    spans: Sequence[tuple[float, float]],
    probabilities: np.ndarray,
    labels: Sequence[str],
    title: str,
    duration: float,
    rows: int = 8,
    width: int = 640,
) -> np.ndarray:
    """RGB uint8 heat map: rows = labels, x = time, colour = probability in [0, 1]."""
    shown = timeline_rows(probabilities, min(rows, probabilities.shape[1]))
    edges = cell_edges(spans, duration)
    columns = np.clip(np.round(edges / max(duration, 1e-9) * width).astype(int), 0, width)
    heat = np.zeros((len(shown) * ROW_HEIGHT, width), np.float64)
    for row, label in enumerate(shown):
        for window in range(len(spans)):
            top = row * ROW_HEIGHT
            heat[top : top + ROW_HEIGHT - 2, columns[window] : columns[window + 1]] = probabilities[window, label]
    cells = colorize(heat, 0.0, 1.0, "viridis", invert=False)
    for row in range(len(shown)):
        cells[(row + 1) * ROW_HEIGHT - 2 : (row + 1) * ROW_HEIGHT] = 255  # white gaps between rows
    height = TITLE_HEIGHT + heat.shape[0] + AXIS_HEIGHT
    canvas = np.full((height, LABEL_WIDTH + width + 8, 3), 255, np.uint8)
    canvas[TITLE_HEIGHT : TITLE_HEIGHT + heat.shape[0], LABEL_WIDTH : LABEL_WIDTH + width] = cells
    _text(canvas, title, (8, 22), 0.55)
    for row, label in enumerate(shown):
        _text(canvas, _fit(labels[label], LABEL_WIDTH - 16), (8, TITLE_HEIGHT + row * ROW_HEIGHT + 17), 0.45)
    _time_axis(canvas, duration, width, TITLE_HEIGHT + heat.shape[0])
    return add_legend(canvas, 0.0, 1.0, "viridis", unit="", invert=False)


def _time_axis(canvas: np.ndarray, duration: float, width: int, top: int) -> None:
    """Ticks at a round step, labelled in seconds."""
    step = next((s for s in (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800) if duration / s <= 8), 3600)
    for second in np.arange(0.0, duration + 1e-9, step):
        x = LABEL_WIDTH + int(round(second / max(duration, 1e-9) * (width - 1)))
        cv2.line(canvas, (x, top), (x, top + 5), (0, 0, 0), 1)
        _text(canvas, f"{second:g}s", (max(x - 10, 0), top + 20), 0.4)


def _fit(text: str, pixels: int, scale: float = 0.45) -> str:
    """Shorten `text` with '...' until it fits in `pixels`."""
    while len(text) > 3 and cv2.getTextSize(text, FONT, scale, 1)[0][0] > pixels:
        text = text[:-4] + "..."
    return text


def _text(canvas: np.ndarray, text: str, origin: tuple[int, int], scale: float) -> None:
    ascii_text = text.encode("ascii", "replace").decode("ascii")  # Hershey fonts have ASCII glyphs only
    cv2.putText(canvas, ascii_text, origin, FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)
