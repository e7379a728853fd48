"""Still and moving pictures of grey-level frames: PNG, GIF with Pillow, MP4 with PyAV.

Every file is written through an `atomic_write` handle, so an interrupted run
leaves no half-written picture and no library is handed a file name it might
not encode (names need not be UTF-8).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
from PIL import Image

from clipcli.media import images
from clipcli.store.atomic import atomic_write

MP4_CODECS = ("libx264", "h264", "mpeg4")  # the first one this PyAV build can encode


def to_gray8(image: np.ndarray) -> np.ndarray:
    """`[H, W]` floats in [0, 1] -> uint8 grey levels (rounded, clipped)."""
    return np.clip(np.rint(np.asarray(image, np.float32) * 255.0), 0, 255).astype(np.uint8)


def write_png(path: str | Path, image: np.ndarray) -> None:
    """A grey-level `[H, W]` image in [0, 1] as an 8-bit PNG."""
    images.write_png(path, to_gray8(image))


def write_gif(path: str | Path, frames: Sequence[np.ndarray], fps: float = 10.0) -> None:
    """Grey-level frames `[H, W]` in [0, 1] as a looping GIF."""
    images = [Image.fromarray(to_gray8(frame), "L") for frame in frames]
    if not images:
        raise ValueError("no frames to write")
    with atomic_write(path) as handle:
        images[0].save(
            handle, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0
        )


def write_mp4(path: str | Path, frames: Sequence[np.ndarray], fps: int = 10) -> None:
    """Grey-level frames `[H, W]` in [0, 1] as an H.264 MP4 (yuv420p, so odd sizes get a white edge)."""
    if len(frames) == 0:
        raise ValueError("no frames to write")
    height, width = np.asarray(frames[0]).shape
    even_height, even_width = height + height % 2, width + width % 2
    codec = next(name for name in MP4_CODECS if name in av.codecs_available)
    with atomic_write(path) as handle, av.open(handle, mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = even_width, even_height, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "18"}
        canvas = np.full((even_height, even_width, 3), 255, np.uint8)
        for frame in frames:
            canvas[:height, :width] = to_gray8(frame)[..., None]
            for packet in stream.encode(av.VideoFrame.from_ndarray(canvas, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
