"""Synthetic videos whose frames say which frame they are.

Frame i shows i in binary as 8 vertical bars across the top two thirds (bar b,
counting from the left, is white when bit b of i is set, black otherwise) and
a red | blue strip along the bottom third, so tests can check frame identity,
channel order and orientation after lossy compression. Bars are W/8 wide and
aligned to 8-pixel codec blocks at the default 64x48, which every codec here
keeps clearly black or white.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

WIDTH, HEIGHT = 64, 48
INDEX_BITS = 8
RED, BLUE = (255, 0, 0), (0, 0, 255)

# OpenCV FOURCCs are written with cv2.VideoWriter, everything else with PyAV.
OPENCV_CODECS = ("mp4v", "MJPG", "XVID")
PYAV_ENCODERS = {"h264": "libx264", "vp8": "libvpx", "vp9": "libvpx-vp9", "mpeg4": "mpeg4", "mjpeg": "mjpeg"}
DEFAULT_CODECS = {".mp4": "mp4v", ".avi": "MJPG", ".webm": "vp8", ".mkv": "h264", ".mov": "h264", ".ts": "h264"}


def index_frame(index: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """[H, W, 3] uint8 RGB frame encoding `index` (0 <= index < 256) as described above."""
    if not 0 <= index < 2**INDEX_BITS:
        raise ValueError(f"frame index {index} does not fit in {INDEX_BITS} bits")
    frame = np.zeros((height, width, 3), np.uint8)
    code_rows, bar = height * 2 // 3, width // INDEX_BITS
    bits = (index >> np.arange(INDEX_BITS)) & 1
    columns = np.repeat(bits, bar)
    frame[:code_rows, : len(columns)] = (columns * 255)[None, :, None]
    frame[code_rows:, : width // 2] = RED
    frame[code_rows:, width // 2 :] = BLUE
    return frame


def index_frames(count: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """[count, H, W, 3] frames 0..count-1."""
    return np.stack([index_frame(index, width, height) for index in range(count)])


def decoded_index(frame: np.ndarray) -> int:
    """The index a decoded [H, W, 3] frame shows, or -1 when any bar is neither clearly black nor white.

    Each bar's interior (2 px margin, away from compression ringing at edges)
    is averaged over the three channels and compared with mid-grey.
    """
    height, width = frame.shape[:2]
    code_rows, bar = height * 2 // 3, width // INDEX_BITS
    grey = frame[2 : code_rows - 2, : bar * INDEX_BITS].astype(np.float64).mean(axis=2)
    bars = grey.reshape(grey.shape[0], INDEX_BITS, bar)[:, :, 2 : bar - 2].mean(axis=(0, 2))
    if np.any((bars > 64) & (bars < 192)):
        return -1
    return int(((bars >= 128) << np.arange(INDEX_BITS)).sum())


def write_video(
    path: str | Path,
    frames_or_count: np.ndarray | int,
    fps: float = 10.0,
    codec: str | None = None,
    *,
    rotation: int = 0,
    times: list[float] | np.ndarray | None = None,
    gop: int | None = None,
    faststart: bool = False,
) -> Path:
    """Write RGB frames (or `index_frames(count)`) and return the path.

    `codec` is an OpenCV FOURCC (mp4v, MJPG, XVID) or a PyAV name (h264, vp8,
    vp9, mpeg4, mjpeg); by default it follows the suffix (DEFAULT_CODECS).
    PyAV-only options: `rotation` writes a display matrix (degrees
    counter-clockwise, as readers report it), `times` gives each frame's
    presentation time in seconds (variable frame rate), `gop` the keyframe
    interval, `faststart` puts the MP4 index before the data.
    """
    path = Path(path)
    counted = isinstance(frames_or_count, (int, np.integer))
    frames = index_frames(int(frames_or_count)) if counted else np.asarray(frames_or_count)
    codec = codec or DEFAULT_CODECS[path.suffix.lower()]
    if codec in OPENCV_CODECS:
        if rotation or times is not None or gop or faststart:
            raise ValueError("rotation, times, gop and faststart need a PyAV codec")
        _write_opencv(path, frames, fps, codec)
    else:
        _write_pyav(path, frames, fps, PYAV_ENCODERS.get(codec, codec), rotation, times, gop, faststart)
    return path


def _write_opencv(path: Path, frames: np.ndarray, fps: float, fourcc: str) -> None:
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {fourcc} to {path}")
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def _write_pyav(
    path: Path,
    frames: np.ndarray,
    fps: float,
    encoder: str,
    rotation: int,
    times: list[float] | np.ndarray | None,
    gop: int | None,
    faststart: bool,
) -> None:
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), mode="w", options=options) as container:
        stream = container.add_stream(encoder, rate=Fraction(fps).limit_denominator(1001))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuvj420p" if encoder == "mjpeg" else "yuv420p"
        if gop:
            stream.codec_context.gop_size = gop
        if rotation:
            stream.set_display_rotation(rotation)
        if times is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for number, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
            if times is not None:
                frame.pts, frame.time_base = round(times[number] * 1000), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def write_zero_frame_video(path: str | Path) -> Path:
    """An MJPEG AVI whose video stream holds no frames."""
    path = Path(path)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (WIDTH, HEIGHT))
    writer.release()
    return path


def truncated_copy(source: str | Path, target: str | Path, keep: float | int = 0.5) -> Path:
    """The first `keep` bytes of `source` (a fraction when below 1), as a truncated download would be."""
    data = Path(source).read_bytes()
    size = int(len(data) * keep) if keep < 1 else int(keep)
    Path(target).write_bytes(data[:size])
    return Path(target)


def packet_positions(path: str | Path) -> list[tuple[int, int]]:
    """(byte offset, size) of each video packet, in file order: where to cut to drop whole frames."""
    with av.open(str(path)) as container:
        spans = [(packet.pos, packet.size) for packet in container.demux(video=0) if packet.size]
    return sorted(spans)
