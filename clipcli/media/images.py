"""Read images as upright RGB (alpha composited on white) or RGBA uint8 arrays; write PNGs.

Pillow parses the header first, and only for raster formats that carry no
code (no EPS): the size is checked against `MAX_IMAGE_PIXELS` before any
pixel is decoded, so a small file that inflates to gigabytes is refused. TIFFs
whose pixel layout Pillow does not know (float64 RGB) are sized from their
first directory. OpenCV then decodes (fast, and it reads most PNG/JPEG/TIFF/
WebP variants including 16-bit, float and palette transparency); Pillow
decodes what OpenCV refuses and is strict about truncated files. The file is
read into memory once, so any path the OS accepts (including non-UTF-8 names)
works, and every reader works from the same bytes. PNGs are likewise encoded
in memory and written through `atomic_write`: OpenCV's own file functions
crash on such names.

With IMREAD_UNCHANGED OpenCV ignores the EXIF orientation tag, so it is read
from Pillow's header and applied here as a numpy flip/rotation.

A GPU `decoder` (clipcli.media.decoders) decodes after the same header and size
checks; a file it cannot decode goes to OpenCV and Pillow as above.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import cv2
import numpy as np
from PIL import Image, ImageFile, TiffImagePlugin

from clipcli.errors import BadInputError
from clipcli.store.atomic import atomic_write

if TYPE_CHECKING:
    from clipcli.media.decoders import Decoder

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

# Pillow's default decompression-bomb limit: 89.5 megapixels, a 9459x9459 picture
# (about 0.36 GB as RGBA, several times that while a pipeline works on it).
MAX_IMAGE_PIXELS = 1024 * 1024 * 1024 // 4 // 3

# Raster formats Pillow may parse: no EPS (Ghostscript runs the file), no formats
# without a signature (TGA), nothing clipcli has no use for.
PILLOW_FORMATS = ("PNG", "JPEG", "MPO", "TIFF", "BMP", "GIF", "WEBP", "PPM", "AVIF", "JPEG2000", "ICO", "QOI")

EXIF_ORIENTATION = 0x0112
_TIFF_WIDTH, _TIFF_LENGTH = 256, 257
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_HEADER_ERRORS = (SyntaxError, IndexError, TypeError, KeyError, ValueError, struct.error, OSError, EOFError)


class _Header(NamedTuple):
    width: int
    height: int
    orientation: int


def load_image(path: str | Path, *, decoder: Decoder | None = None) -> np.ndarray:
    """HxWx3 uint8 RGB, upright per EXIF, with any transparency composited onto white."""
    return composite_on_white(load_image_rgba(path, decoder=decoder))


def load_image_rgba(path: str | Path, *, decoder: Decoder | None = None) -> np.ndarray:
    """HxWx4 uint8 RGBA, upright per EXIF; alpha is 255 where the file has none.

    Grayscale becomes three equal channels, 16-bit samples are scaled to 8 bits.
    """
    pixels, orientation = _load(path, decoder)
    return _apply_orientation(_to_rgba(_to_uint8(pixels, path), path), orientation)


def load_image_unchanged(path: str | Path) -> np.ndarray:
    """The samples as stored, upright per EXIF: HxW gray or HxWxC (RGB order), uint8, uint16 or float.

    For data stored as pictures, such as depth maps in 16-bit PNGs.
    """
    pixels, orientation = _load(path)
    return _apply_orientation(pixels, orientation)


def write_png(path: str | Path, pixels: np.ndarray) -> None:
    """Write HxW gray (uint8 or uint16), HxWx3 RGB or HxWx4 RGBA (uint8) pixels as a PNG, atomically."""
    png = encode_png(pixels)
    with atomic_write(path) as handle:
        handle.write(png)


def encode_png(pixels: np.ndarray) -> bytes:
    """The PNG file of `write_png`'s pixels, as bytes (encoded by a worker, written by the driver)."""
    encoded, png = cv2.imencode(".png", np.ascontiguousarray(_swap_red_blue(pixels)))
    if not encoded:
        raise ValueError(f"cannot encode {pixels.shape} {pixels.dtype} pixels as a PNG")
    return png.tobytes()


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


def _load(path: str | Path, decoder: Decoder | None = None) -> tuple[np.ndarray, int]:
    """Pixels in file order (see _decode_opencv) and the EXIF orientation, after the size check."""
    data = _read_bytes(path)
    header = _read_header(data, path)
    if header.width * header.height > MAX_IMAGE_PIXELS:
        raise _over_the_limit(f"{header.width}x{header.height} image", path)
    pixels = _decode_gpu(data, decoder) if decoder is not None else None
    if pixels is None:
        pixels = _decode_opencv(data)
    if pixels is None:
        pixels = _decode_pil(data, path)
    return pixels, header.orientation


def _read_header(data: bytes, path: str | Path) -> _Header:
    """Size and EXIF orientation, read without decoding any pixel."""
    try:
        image = _open_header(data)
    except Image.DecompressionBombError as error:  # a few plugins check while parsing the header
        raise _over_the_limit("image", path) from error
    if image is not None:
        with image:
            return _Header(image.width, image.height, _exif_orientation(image))
    header = _tiff_header(data)
    if header is None:
        raise BadInputError("not an image (or an unsupported image format)", path)
    return header


def _over_the_limit(what: str, path: str | Path) -> BadInputError:
    return BadInputError(
        f"{what} is over the {MAX_IMAGE_PIXELS:,}-pixel limit (a guard against decompression bombs)", path
    )


def _open_header(data: bytes) -> ImageFile.ImageFile | None:
    """Pillow's parse of the header in the first of PILLOW_FORMATS that accepts the file, or None.

    This is Image.open's own loop over its registered parsers, without the
    decompression-bomb warning or error that Image.open raises before the size
    can be read: the caller checks the size against its own limit and names it.
    """
    Image.init()
    prefix = data[:16]
    for name in PILLOW_FORMATS:
        if name not in Image.OPEN:
            continue
        factory, accept = Image.OPEN[name]
        verdict = accept(prefix) if accept is not None else True
        if not verdict or isinstance(verdict, str):
            continue
        try:
            return factory(io.BytesIO(data), "")
        except _HEADER_ERRORS:
            continue
    return None


def _tiff_header(data: bytes) -> _Header | None:
    """Size and orientation from a TIFF's first directory, or None when `data` is no TIFF.

    For TIFFs whose pixel layout Pillow cannot represent (float64 RGB, for one)
    but OpenCV decodes.
    """
    try:
        directory = TiffImagePlugin.ImageFileDirectory_v2(data[:8])
        stream = io.BytesIO(data)
        stream.seek(directory.next)
        directory.load(stream)
        orientation = directory.get(EXIF_ORIENTATION, 1)
        return _Header(int(directory[_TIFF_WIDTH]), int(directory[_TIFF_LENGTH]), _valid_orientation(orientation))
    except _HEADER_ERRORS:
        return None


def _decode_gpu(data: bytes, decoder: Decoder) -> np.ndarray | None:
    """The GPU decoder's pixels, or None where it fails for any reason (or is the CPU reader): OpenCV's turn."""
    if decoder.decode is None:
        return None
    try:
        return decoder.decode(data, decoder.device)
    except Exception:  # not its format, an unsupported variant, a corrupt file, a CUDA error
        return None


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
    return _swap_red_blue(pixels)


def _swap_red_blue(pixels: np.ndarray) -> np.ndarray:
    """RGB(A) <-> BGR(A) for any sample type (cv2.cvtColor refuses float64); gray as it is."""
    if pixels.ndim == 3 and pixels.shape[2] in (3, 4):
        return pixels[..., [2, 1, 0, 3][: pixels.shape[2]]]
    return pixels


def _decode_pil(data: bytes, path: str | Path) -> np.ndarray:
    """Pillow's decode of the first frame; it raises on truncated data instead of padding it."""
    try:
        with Image.open(io.BytesIO(data), formats=_available_pillow_formats()) as image:
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


def _available_pillow_formats() -> tuple[str, ...]:
    """PILLOW_FORMATS that this Pillow build registers (Image.open refuses unknown names)."""
    Image.init()
    return tuple(name for name in PILLOW_FORMATS if name in Image.OPEN)


def _exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1..8) of an opened image, 1 when absent, unreadable or out of range."""
    # Pillow's PNG getexif() decodes the whole image looking for a late eXIf chunk;
    # an eXIf chunk before the pixel data is already in info.
    if image.format == "PNG" and "exif" not in image.info:
        return 1
    try:
        return _valid_orientation(image.getexif().get(EXIF_ORIENTATION, 1))
    except _HEADER_ERRORS:
        return 1


def _valid_orientation(orientation: object) -> int:
    """The tag's value where it is one of the eight orientations, else 1 (as stored)."""
    return orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else 1


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
        pixels = pixels.swapaxes(0, 1)
    elif orientation == 6:
        pixels = np.rot90(pixels, k=-1)
    elif orientation == 7:
        pixels = pixels.swapaxes(0, 1)[::-1, ::-1]
    elif orientation == 8:
        pixels = np.rot90(pixels, k=1)
    return np.ascontiguousarray(pixels)
