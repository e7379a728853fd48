"""What a video holds, as the readers see it: probing, and the checks every reader makes against it.

Probing trusts the header's frame count only when it agrees with duration x
fps; otherwise it counts the packets. A frame's index is its rank in
presentation order, as in decord. Timestamps are real presentation times, in
seconds from the first frame, so they stay right for variable-frame-rate files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from clipcli.errors import BadInputError


@dataclass(frozen=True)
class VideoInfo:
    """What a video holds, as the readers here see it.

    `width` and `height` are those of the frames `sample_frames` returns, i.e.
    upright. `rotation` is the display-matrix rotation in degrees
    counter-clockwise (0, 90, 180 or 270) that the stored frames need to show
    upright, as FFmpeg and PyAV report it; phones' "rotate=90" tag reads 270.
    """

    path: Path
    frame_count: int
    fps: float
    duration: float
    width: int
    height: int
    rotation: int
    codec: str = ""
    container: str = ""


@dataclass
class PacketScan:
    """Presentation timestamps of a stream's packets (decode order) and its first decoded frame.

    `keyframes` holds (pts, dts) of key packets: choose by pts, seek by dts,
    which is what MPEG-TS seeking lands on exactly (it seeks forward from
    any other offset) and never later than the keyframe elsewhere.
    """

    timestamps: list[int | None]
    keyframes: list[tuple[int, int]]
    first_frame: av.VideoFrame | None


def probe_video(path: str | Path) -> VideoInfo:
    """Frame count, rate, duration, upright size and rotation, checked against each other.

    The header's frame count (PyAV `stream.frames`, the MP4 sample table) is
    used when it agrees with duration x fps to within max(2, 5%). Otherwise --
    Matroska/WebM and MPEG-TS have no count, and a header can describe more
    than a truncated file holds -- every packet is demuxed (no decoding) and
    counted, one packet per frame, and fps comes from the packets' own
    timestamps; that count is what decord and the decoders see.
    """
    path = _check_file(path)
    with open_container(path) as container:
        stream = prepare_stream(container, path)
        fps, duration = _header_fps(stream), _header_duration(container, stream)
        header_count = int(stream.frames or 0)
        trust_header = header_count > 0 and fps > 0 and duration > 0 and _counts_agree(header_count, duration * fps)
        scan = scan_packets(container, stream, whole_file=not trust_header, decode_first=True)
        codec, container_name = stream.codec_context.name, container.format.name
    if scan.first_frame is None:
        if trust_header or scan.timestamps:
            raise BadInputError(f"no frame of its {codec} video could be decoded", path)
        raise BadInputError("video has no frames", path)
    frame_count = header_count
    if not trust_header:
        frame_count = len(scan.timestamps)
        fps, duration = _timing_from_packets(scan.timestamps, stream.time_base, frame_count, fps)
    rotation = _normalise_rotation(scan.first_frame.rotation)
    width, height = scan.first_frame.width, scan.first_frame.height
    if rotation in (90, 270):
        width, height = height, width
    return VideoInfo(path, frame_count, float(fps), float(duration), width, height, rotation, codec, container_name)


def _check_file(path: str | Path) -> Path:
    """The path, if it names a non-empty regular file."""
    path = Path(path)
    if not path.exists():
        raise BadInputError("no such file", path)
    if path.is_dir():
        raise BadInputError("is a directory, not a video", path)
    if path.stat().st_size == 0:
        raise BadInputError("empty file (0 bytes), not a video", path)
    return path


def open_container(path: Path) -> av.container.InputContainer:
    """av.open with its failures turned into one-line BadInputErrors.

    Metadata that is not valid UTF-8 (a damaged or Latin-1 tag) is read with
    replacement characters: no frame depends on it.
    """
    try:
        return av.open(os.fspath(path), mode="r", metadata_errors="replace")
    except av.error.EOFError:
        raise BadInputError("truncated or corrupt video: the file ends inside its header", path) from None
    except av.error.InvalidDataError:
        if _looks_like_iso_media(path):
            raise BadInputError("truncated or corrupt MP4/MOV: no readable 'moov' header", path) from None
        raise BadInputError("not a video file, or a format FFmpeg cannot read", path) from None
    except OSError as error:
        raise BadInputError(f"cannot read: {error.strerror or error}", path) from None
    except av.error.FFmpegError as error:
        raise BadInputError(f"FFmpeg cannot read it: {error.strerror}", path) from None


def _looks_like_iso_media(path: Path) -> bool:
    """True when the file starts like an MP4/MOV (an 'ftyp' box), so a failed open means truncation."""
    with open(path, "rb") as handle:
        return handle.read(12)[4:8] == b"ftyp"


def _video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise BadInputError("no video stream in the file", path)
    return container.streams.video[0]


def _header_fps(stream: av.video.stream.VideoStream) -> float:
    rate = stream.average_rate or stream.guessed_rate
    return float(rate) if rate else 0.0


def _header_duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return 0.0


def _counts_agree(count: float, estimate: float) -> bool:
    """The tolerance used for every count cross-check: max(2 frames, 5%)."""
    return abs(count - estimate) <= max(2.0, 0.05 * max(count, estimate))


def scan_packets(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    whole_file: bool,
    decode_first: bool,
) -> PacketScan:
    """Demux packets, recording timestamps; decode only until the first frame appears.

    With `whole_file` false it stops at the first frame. Packets FFmpeg marks
    as discarded (outside an MP4 edit list) are not frames and are skipped.
    """
    scan = PacketScan(timestamps=[], keyframes=[], first_frame=None)
    try:
        for packet in container.demux(stream):
            if packet.size and not packet.is_discard:
                stamp = packet.pts if packet.pts is not None else packet.dts
                scan.timestamps.append(stamp)
                if packet.is_keyframe and stamp is not None:
                    scan.keyframes.append((stamp, packet.dts if packet.dts is not None else stamp))
            if decode_first and scan.first_frame is None:
                scan.first_frame = _first_decoded(packet)
            if not whole_file and scan.first_frame is not None:
                break
    except av.error.FFmpegError:
        pass  # a read error ends the usable part of the file; what came before stands
    return scan


def _first_decoded(packet: av.Packet) -> av.VideoFrame | None:
    try:
        frames = packet.decode()
    except av.error.FFmpegError:
        return None
    return frames[0] if frames else None


def _timing_from_packets(
    timestamps: list[int | None], time_base: Fraction | None, frame_count: int, header_fps: float
) -> tuple[float, float]:
    """fps = (count - 1) / span of the packets' timestamps, duration = count / fps.

    Worked in exact fractions of the time base, so 10 fps stays 10.0 rather
    than 9.999..., which CLIP4Clip's int(fps) would truncate to 9.
    """
    known = [stamp for stamp in timestamps if stamp is not None]
    span = (max(known) - min(known)) * time_base if len(known) > 1 and time_base else 0
    fps = Fraction(len(known) - 1) / span if span > 0 else Fraction(header_fps)
    duration = frame_count / fps if fps > 0 else 0
    return float(fps), float(duration)


def _normalise_rotation(degrees: float | None) -> int:
    """FFmpeg's [-180, 180] counter-clockwise angle as 0/90/180/270 (nearest quarter turn)."""
    return int(round((degrees or 0) / 90.0)) % 4 * 90


def prepare_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    """The first video stream, with a decoder set to slice threading."""
    stream = _video_stream(container, path)
    if stream.codec_context is None:
        raise BadInputError("no decoder for its video codec (unknown or damaged codec tag)", path)
    # Frame threading can deadlock when decoding stops early (NVIDIA-TAO/tao-pytorch#109).
    stream.codec_context.thread_type = "SLICE"
    return stream


@dataclass
class Decoded:
    """Frames for sorted unique requested indices, after any clamping to what decodes."""

    frames: np.ndarray
    timestamps: np.ndarray
    indices: np.ndarray


def fit_to_available(indices: np.ndarray, available: int, info: VideoInfo) -> np.ndarray:
    """Clamp indices to the frames that exist, or raise when too many are missing (see sample_frames)."""
    if available >= info.frame_count:
        return indices
    check_shortfall(available, info)
    return np.minimum(indices, available - 1)


def check_shortfall(available: int, info: VideoInfo) -> None:
    """Raise when fewer frames decode than header slack (max(2, 5%)) explains."""
    if available < 1 or not _counts_agree(available, info.frame_count):
        raise BadInputError(
            f"truncated or corrupt video: only {max(available, 0)} of its {info.frame_count} frames decode",
            info.path,
        )


def upright(pixels: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a counter-clockwise display rotation to an [H, W, 3] frame."""
    return np.rot90(pixels, k=rotation // 90) if rotation else pixels


def coded_size(info: VideoInfo) -> tuple[int, int]:
    """(width, height) of the frames as stored, before rotation."""
    return (info.height, info.width) if info.rotation in (90, 270) else (info.width, info.height)
