"""Read images as upright RGB (alpha composited on white) or RGBA uint8 arrays.

OpenCV decodes first (fast, and it reads most PNG/JPEG/TIFF/WebP variants
including 16-bit and palette transparency); Pillow decodes what OpenCV
refuses and is strict about truncated files. The file is read into memory
once, so any path the OS accepts (including non-UTF-8 names) works, and both
decoders plus the EXIF reader work from the same bytes.

With IMREAD_UNCHANGED OpenCV ignores the EXIF orientation tag, so it is read
with Pillow (header only) and applied here as a numpy flip/rotation.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from clipcli.errors import BadInputError

IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".jpe",
    ".png",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
    ".pbm",
    ".pnm",
)

EXIF_ORIENTATION = 0x0112
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def load_image(path: str | Path) -> np.ndarray:
    """HxWx3 uint8 RGB, upright per EXIF, with any transparency composited onto white."""
    return composite_on_white(load_image_rgba(path))


def load_image_rgba(path: str | Path) -> np.ndarray:
    """HxWx4 uint8 RGBA, upright per EXIF; alpha is 255 where the file has none.

    Grayscale becomes three equal channels, 16-bit samples are scaled to 8 bits.
    """
    data = _read_bytes(path)
    pixels = _decode_opencv(data)
    if pixels is None:
        pixels = _decode_pil(data, path)
    rgba = _to_rgba(_to_uint8(pixels, path), path)
    return _apply_orientation(rgba, _exif_orientation(data))


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """Alpha-blend HxWx4 uint8 RGBA over a white background: HxWx3 uint8 RGB."""
    if rgba.ndim != 3 or rgba.shape[2] != 4 or rgba.dtype != np.uint8:
        raise ValueError(f"expected HxWx4 uint8 RGBA, got shape {rgba.shape} dtype {rgba.dtype}")
    if (rgba[..., 3] == 255).all():
        return np.ascontiguousarray(rgba[..., :3])
    alpha = rgba[..., 3:].astype(np.float32) / 255.0
    blended = rgba[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return np.rint(blended).astype(np.uint8)


def _read_bytes(path: str | Path) -> bytes:
    """The whole file, or a BadInputError saying why there is nothing to decode."""
    path = Path(path)
    if not path.exists():
        raise BadInputError("no such file", path)
    if path.is_dir():
        raise BadInputError("is a directory, not an image", path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise BadInputError(f"cannot read ({error.strerror or error})", path) from error
    if not data:
        raise BadInputError("empty file (0 bytes)", path)
    return data


def _decode_opencv(data: bytes) -> np.ndarray | None:
    """Pixels in file order (gray, RGB or RGBA), or None where OpenCV cannot decode."""
    previous_level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # no "buffer is incomplete" noise
    try:
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return None
    finally:
        cv2.utils.logging.setLogLevel(previous_level)
    if pixels is None or pixels.size == 0:
        return None
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        return cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGBA)
    return pixels


def _decode_pil(data: bytes, path: str | Path) -> np.ndarray:
    """Pillow's decode of the first frame; it raises on truncated data instead of padding it."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return _pil_pixels(image)
    except Image.DecompressionBombError as error:
        raise BadInputError("image is too large to decode safely", path) from error
    except Image.UnidentifiedImageError as error:
        raise BadInputError("not an image (or an unsupported image format)", path) from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise BadInputError("truncated or corrupt image", path) from error


def _pil_pixels(image: Image.Image) -> np.ndarray:
    """16-bit and float samples as they are; palettes and other modes as RGB(A)."""
    if image.mode in _SIXTEEN_BIT_MODES:
        return np.asarray(image).astype(np.uint16)
    if image.mode == "F":
        return np.asarray(image)
    if "A" in image.mode or "transparency" in image.info:
        return np.asarray(image.convert("RGBA"))
    return np.asarray(image.convert("RGB"))


def _to_uint8(pixels: np.ndarray, path: str | Path) -> np.ndarray:
    """Scale 16-bit (x / 257) and float ([0, 1]) samples to uint8; keep uint8 as is."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == np.uint16:
        return np.rint(pixels / 257.0).astype(np.uint8)
    if pixels.dtype == np.bool_:
        return pixels.astype(np.uint8) * 255
    if np.issubdtype(pixels.dtype, np.floating):
        return np.rint(np.clip(np.nan_to_num(pixels), 0.0, 1.0) * 255.0).astype(np.uint8)
    raise BadInputError(f"unsupported pixel type {pixels.dtype}", path)


def _to_rgba(pixels: np.ndarray, path: str | Path) -> np.ndarray:
    """Gray, gray+alpha, RGB or RGBA uint8 -> HxWx4 RGBA."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    channels = pixels.shape[2]
    if channels not in (1, 2, 3, 4):
        raise BadInputError(f"unsupported number of channels ({channels})", path)
    color = np.repeat(pixels[..., :1], 3, axis=2) if channels <= 2 else pixels[..., :3]
    opaque = np.full(pixels.shape[:2] + (1,), 255, np.uint8)
    alpha = pixels[..., -1:] if channels in (2, 4) else opaque
    return np.ascontiguousarray(np.concatenate([color, alpha], axis=2))


def _exif_orientation(data: bytes) -> int:
    """The EXIF orientation tag (1..8), 1 when absent, unreadable or out of range."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            # Pillow's PNG getexif() decodes the whole image looking for a late eXIf chunk;
            # an eXIf chunk before the pixel data is already in info.
            if image.format == "PNG" and "exif" not in image.info:
                return 1
            orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
        return 1
    return orientation if orientation in range(1, 9) else 1


def _apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels into the upright image the EXIF tag describes.

    2 mirror left-right, 3 rotate 180, 4 mirror top-bottom, 5 transpose,
    6 rotate 90 clockwise, 7 transverse, 8 rotate 90 counter-clockwise.
    """
    if orientation == 2:
        pixels = pixels[:, ::-1]
    elif orientation == 3:
        pixels = pixels[::-1, ::-1]
    elif orientation == 4:
        pixels = pixels[::-1]
    elif orientation == 5:
        pixels = pixels.transpose(1, 0, 2)
    elif orientation == 6:
        pixels = np.rot90(pixels, k=-1)
    elif orientation == 7:
        pixels = pixels.transpose(1, 0, 2)[::-1, ::-1]
    elif orientation == 8:
        pixels = np.rot90(pixels, k=1)
    return np.ascontiguousarray(pixels)
