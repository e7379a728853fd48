"""Synthetic image files for tests: shapes drawn with OpenCV, palette PNGs, EXIF-rotated JPEGs.

Writers encode in memory and write through `atomic_write`, so file names
that are not valid UTF-8 work (cv2.imwrite cannot open those).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from clipcli.store.atomic import atomic_write

EXIF_ORIENTATION = 0x0112


def write_image(path: str | Path, pixels: np.ndarray) -> None:
    """Write gray (HxW), gray+alpha (HxWx2), RGB or RGBA pixels, uint8 or uint16; format from the suffix."""
    pixels = np.asarray(pixels)
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if channels == 2:  # OpenCV cannot write gray+alpha; Pillow's LA mode can
        _write_pil(path, Image.fromarray(pixels, "LA"))
        return
    if channels == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    elif channels == 4:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA)
    ok, encoded = cv2.imencode(Path(path).suffix, pixels)
    if not ok:
        raise ValueError(f"OpenCV cannot encode {pixels.shape} {pixels.dtype} as {Path(path).suffix}")
    with atomic_write(path) as handle:
        handle.write(encoded.tobytes())


def write_palette_png(
    path: str | Path, indices: np.ndarray, palette: np.ndarray, alpha: np.ndarray | None = None
) -> None:
    """A mode-P PNG: `indices` HxW uint8 into `palette` Kx3, with optional per-entry `alpha` (tRNS)."""
    image = Image.fromarray(np.asarray(indices, np.uint8), "P")
    image.putpalette(np.asarray(palette, np.uint8).ravel().tolist())
    options = {} if alpha is None else {"transparency": bytes(np.asarray(alpha, np.uint8).tolist())}
    _write_pil(path, image, **options)


def write_exif_rotated_jpeg(path: str | Path, rgb: np.ndarray, orientation: int, quality: int = 95) -> None:
    """Store `rgb` as is in a JPEG whose EXIF orientation tag (0x0112) says how to turn it upright."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    _write_pil(path, Image.fromarray(rgb, "RGB"), format="JPEG", quality=quality, subsampling=0, exif=exif.tobytes())


def write_black_png(path: str | Path, width: int, height: int) -> Path:
    """A complete 8-bit grey PNG of black pixels, built without ever holding them: a decompression bomb.

    Each row (filter byte 0, then zeros) is deflated up to a full flush, which resets the
    compressor, so every row after the first compresses to the same bytes and the stream is
    those bytes repeated. 32000x32000 pixels take about 2 MB on disk and 1 GB decoded.
    """
    row = bytes(width + 1)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: header and checksum are added below
    first = deflate.compress(row) + deflate.flush(zlib.Z_FULL_FLUSH)
    repeated = deflate.compress(row) + deflate.flush(zlib.Z_FULL_FLUSH)
    checksum = ((len(row) * height % 65521) << 16) | 1  # Adler-32 of zeros: A stays 1, B counts the bytes
    stream = b"\x78\xda" + first + repeated * (height - 1) + deflate.flush() + checksum.to_bytes(4, "big")
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])  # 8-bit grey
    png = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", stream) + _png_chunk(b"IEND", b"")
    with atomic_write(path) as handle:
        handle.write(png)
    return Path(path)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")


def draw_shapes_image(size: int | tuple[int, int] = 224, seed: int = 0, shapes: int = 6) -> np.ndarray:
    """HxWx3 uint8 RGB: filled circles and rectangles in random colours on white."""
    height, width = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    canvas = np.full((height, width, 3), 255, np.uint8)
    scale = min(height, width)
    for _ in range(shapes):
        color = tuple(int(value) for value in rng.integers(0, 200, size=3))
        center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        extent = int(rng.integers(scale // 10, scale // 4 + 1))
        if rng.random() < 0.5:
            cv2.circle(canvas, center, extent, color, thickness=-1, lineType=cv2.LINE_AA)
        else:
            corner = (center[0] + extent, center[1] + int(rng.integers(scale // 10, scale // 4 + 1)))
            cv2.rectangle(canvas, center, corner, color, thickness=-1)
    return canvas


def quadrants_image(height: int = 40, width: int = 60) -> np.ndarray:
    """Red top-left, green top-right, blue bottom-left, yellow bottom-right: shows any flip or turn."""
    image = np.empty((height, width, 3), np.uint8)
    top, left = slice(0, height // 2), slice(0, width // 2)
    bottom, right = slice(height // 2, height), slice(width // 2, width)
    image[top, left] = (255, 0, 0)
    image[top, right] = (0, 255, 0)
    image[bottom, left] = (0, 0, 255)
    image[bottom, right] = (255, 255, 0)
    return image


def _write_pil(path: str | Path, image: Image.Image, **options) -> None:
    """Save a Pillow image through an atomic handle; format from the suffix unless given."""
    options.setdefault("format", Image.registered_extensions()[Path(path).suffix.lower()])
    with atomic_write(path) as handle:
        image.save(handle, **options)
