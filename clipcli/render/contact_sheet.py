"""Contact sheets: several grey images tiled into one captioned picture."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

CAPTION_HEIGHT = 18
GUTTER = 4
GUTTER_GREY = 128


def contact_sheet(images: np.ndarray, columns: int, captions: Sequence[str] | None = None) -> np.ndarray:
    """`[K,H,W]` floats in [0, 1] -> one `[rows*(H+caption), columns*W, 3]` uint8 RGB picture, with grey gutters.

    Tiles are laid out row by row; each gets its caption (ASCII) in a white
    strip above it.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3 or len(images) == 0:
        raise ValueError(f"expected [K, H, W] images, got shape {images.shape}")
    if captions is not None and len(captions) != len(images):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    count, height, width = images.shape
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    strip = CAPTION_HEIGHT if captions is not None else 0
    cell_h, cell_w = height + strip + GUTTER, width + GUTTER
    sheet = np.full((rows * cell_h + GUTTER, columns * cell_w + GUTTER, 3), GUTTER_GREY, np.uint8)
    tiles = np.round(np.clip(images, 0.0, 1.0) * 255).astype(np.uint8)
    for k in range(count):  # one iteration per tile, a handful per sheet
        top, left = GUTTER + (k // columns) * cell_h, GUTTER + (k % columns) * cell_w
        if captions is not None:
            sheet[top : top + strip, left : left + width] = 255
            cv2.putText(sheet, captions[k], (left + 3, top + strip - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1,
                        cv2.LINE_AA)  # fmt: skip
        sheet[top + strip : top + strip + height, left : left + width] = tiles[k][..., None]
    return sheet
