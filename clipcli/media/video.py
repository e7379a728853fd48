"""Read videos as a few upright RGB frames: probing, frame-index sampling, decoding.

Sampling follows the papers' own loaders. `segment-centre` is ActionCLIP's
test-time rule (sallymmx/ActionCLIP datasets/datasets.py `_get_val_indices`),
`fps` is CLIP4Clip's (ArrowLuo/CLIP4Clip dataloaders/rawvideo_util.py, then
`slice_framepos=2`), `uniform` spreads n frames evenly over the whole video.

Decoding uses decord where it is reliable (`get_batch` on the sorted unique
indices, then `seek(0)`, which releases the decode buffers decord otherwise
keeps growing) and PyAV elsewhere: decord returns wrong frames for VP8/WebM
(dmlc/decord#91) and, as measured here, for MPEG-TS; it ignores or mangles the
display-matrix rotation; and it cannot open non-UTF-8 file names. PyAV seeks to
the keyframe before each wanted frame and decodes forward to its timestamp.

A frame's index is its rank in presentation order, as in decord. Timestamps
are real presentation times, in seconds from the first frame, so they stay
right for variable-frame-rate files.
"""

from __future__ import annotations

import importlib.util
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from clipcli.errors import BadInputError

VIDEO_EXTENSIONS = (
    ".mp4",
    ".m4v",
    ".mov",
    ".avi",
    ".mkv",
    ".webm",
    ".mpg",
    ".mpeg",
    ".wmv",
    ".asf",
    ".flv",
    ".3gp",
    ".3g2",
    ".ts",
    ".mts",
    ".m2ts",
    ".ogv",
    ".vob",
)

SAMPLING_MODES = ("uniform", "segment-centre", "fps")
BACKENDS = ("auto", "decord", "pyav")

# decord (0.6, FFmpeg 4.1) indexes these wrongly: every VP8/WebM index gives the
# first frame (dmlc/decord#91); MPEG-TS indices come back shifted by a GOP.
# FFmpeg names Matroska and WebM alike ("matroska,webm"), hence the suffix.
_DECORD_UNRELIABLE_CODECS = frozenset({"vp8", "vp9"})
_DECORD_UNRELIABLE_FORMATS = frozenset({"mpegts"})
_DECORD_UNRELIABLE_SUFFIXES = frozenset({".webm"})


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
class SampledFrames:
    """Frames in the order requested (duplicates kept), with their real times and indices."""

    frames: np.ndarray  # [n, H, W, 3] uint8 RGB, upright
    timestamps: np.ndarray  # [n] float64 seconds from the first frame
    indices: np.ndarray  # [n] int frame indices actually decoded
    info: VideoInfo


# ---------------------------------------------------------------- sampling


def sample_indices(
    frame_count: int, n: int, mode: str = "uniform", fps: float | None = None, rate: float = 1.0
) -> np.ndarray:
    """0-based frame indices (int64, non-decreasing) for one of the papers' sampling rules.

    - "uniform": `rint(linspace(0, frame_count - 1, n))`, halves rounding to even;
      first and last frames included, and indices repeat when n > frame_count,
      so the result always has n entries.
    - "segment-centre": ActionCLIP's test rule: the centre of each of n equal
      segments, `int(i*N/n + (N/n - 1)/2)`; when N <= n, `i*N // n`; for n = 1,
      `N // 2`. Always n entries.
    - "fps": CLIP4Clip's: `rate` frames per second counted with the frame rate
      truncated to an integer, then, when more than n, the
      `linspace(0, len-1, n, dtype=int)` subset. May return fewer than n.
    """
    if mode not in SAMPLING_MODES:
        raise ValueError(f"unknown sampling mode {mode!r}; expected one of {', '.join(SAMPLING_MODES)}")
    if n < 1:
        raise ValueError(f"number of frames must be at least 1, got {n}")
    if frame_count < 1:
        raise ValueError(f"frame_count must be at least 1, got {frame_count}")
    if mode == "uniform":
        return _uniform_indices(frame_count, n)
    if mode == "segment-centre":
        return _segment_centre_indices(frame_count, n)
    if fps is None or not np.isfinite(fps) or fps <= 0:
        raise ValueError(f"'fps' sampling needs the video's frame rate, got {fps}")
    return _fps_indices(frame_count, n, fps, rate)


def _uniform_indices(frame_count: int, n: int) -> np.ndarray:
    return np.rint(np.linspace(0, frame_count - 1, n)).astype(np.int64)


def _segment_centre_indices(frame_count: int, n: int) -> np.ndarray:
    """ActionCLIP `_get_val_indices` with seg_length 1, loop off, minus its 1-based index_bias."""
    segment = np.arange(n)
    if n == 1:
        indices = np.array([frame_count // 2])
    elif frame_count <= n:
        indices = segment * frame_count // n
    else:
        step = frame_count / n
        indices = (segment * step + (step - 1) / 2).astype(np.int64)
    return np.minimum(indices, frame_count - 1).astype(np.int64)


def _fps_indices(frame_count: int, n: int, fps: float, rate: float) -> np.ndarray:
    """CLIP4Clip `video_to_tensor` (`sample_fp = rate`) followed by `slice_framepos = 2`.

    CLIP4Clip only takes whole rates >= 1; a rate below 1 here takes the first
    frame of every 1/rate seconds (frame `floor(j / rate * int(fps))`).
    Frame rates below 1 count as 1, where CLIP4Clip would divide by zero.
    """
    whole_fps = max(1, int(fps))
    if rate >= 1:
        if rate != int(rate):
            raise ValueError(f"a rate of 1 or more must be a whole number of frames per second, got {rate}")
        per_second = int(rate)
        interval = max(1, whole_fps // per_second)
        offsets = np.arange(0, whole_fps, interval)[:per_second]
        seconds = np.arange((frame_count + whole_fps - 1) // whole_fps + 1)
        picked = (seconds[:, None] * whole_fps + offsets[None, :]).ravel()
    elif rate > 0:
        step = whole_fps / rate
        picked = np.floor(np.arange(int(np.ceil(frame_count / step)) + 1) * step + 1e-9).astype(np.int64)
    else:
        raise ValueError(f"rate must be positive, got {rate}")
    picked = picked[picked < frame_count]
    if len(picked) > n:
        picked = picked[np.linspace(0, len(picked) - 1, n, dtype=int)]
    return picked.astype(np.int64)


# ---------------------------------------------------------------- probing


@dataclass
class _PacketScan:
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
    with _open_container(path) as container:
        stream = _prepare_stream(container, path)
        fps, duration = _header_fps(stream), _header_duration(container, stream)
        header_count = int(stream.frames or 0)
        trust_header = header_count > 0 and fps > 0 and duration > 0 and _counts_agree(header_count, duration * fps)
        scan = _scan_packets(container, stream, whole_file=not trust_header, decode_first=True)
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


def _open_container(path: Path) -> av.container.InputContainer:
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


def _scan_packets(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    whole_file: bool,
    decode_first: bool,
) -> _PacketScan:
    """Demux packets, recording timestamps; decode only until the first frame appears.

    With `whole_file` false it stops at the first frame. Packets FFmpeg marks
    as discarded (outside an MP4 edit list) are not frames and are skipped.
    """
    scan = _PacketScan(timestamps=[], keyframes=[], first_frame=None)
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


# ---------------------------------------------------------------- decoding


@dataclass
class _Decoded:
    """Frames for sorted unique requested indices, after any clamping to what decodes."""

    frames: np.ndarray
    timestamps: np.ndarray
    indices: np.ndarray


def sample_frames(
    path: str | Path, n: int, mode: str = "uniform", *, rate: float = 1.0, backend: str = "auto"
) -> SampledFrames:
    """Decode the n frames `sample_indices` picks, upright RGB, in the requested order.

    Only the distinct indices are decoded; duplicates are copies. `backend`
    "auto" uses decord where it indexes frames reliably and falls back to PyAV
    on any decord failure.

    A file that decodes fewer frames than its header reports (a truncated
    file whose header survives): a shortfall within max(2, 5%) is header
    slack, and indices past the end are clamped to the last frame that
    decodes (`indices` says which frames were used); a larger one raises
    BadInputError, since the sampling would no longer span the video.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    info = probe_video(path)
    requested = sample_indices(info.frame_count, n, mode, fps=info.fps, rate=rate)
    wanted, order = np.unique(requested, return_inverse=True)
    decoded = _decode(info, wanted, backend)
    return SampledFrames(decoded.frames[order], decoded.timestamps[order], decoded.indices[order], info)


def read_frames(video: str | Path | VideoInfo, indices, *, backend: str = "auto") -> SampledFrames:
    """Decode given 0-based frame indices (any order, repeats allowed), as `sample_frames` does.

    For callers with their own sampling (sliding windows); pass the
    `probe_video` result to avoid probing again.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    info = video if isinstance(video, VideoInfo) else probe_video(video)
    requested = np.asarray(indices, dtype=np.int64).reshape(-1)
    if not len(requested) or requested.min() < 0 or requested.max() >= info.frame_count:
        raise ValueError(f"frame indices must be within [0, {info.frame_count}), got {requested.tolist()[:8]}")
    wanted, order = np.unique(requested, return_inverse=True)
    decoded = _decode(info, wanted, backend)
    return SampledFrames(decoded.frames[order], decoded.timestamps[order], decoded.indices[order], info)


def _decode(info: VideoInfo, wanted: np.ndarray, backend: str) -> _Decoded:
    if backend == "pyav" or (backend == "auto" and not _decord_suits(info)):
        return _read_pyav(info, wanted)
    if backend == "decord":
        return _read_decord_or_refuse(info, wanted)
    try:
        return _read_decord(info, wanted)
    except Exception:  # decord raises DECORDError, RuntimeError, ...; PyAV reads it or says why not
        return _read_pyav(info, wanted)


def _read_decord_or_refuse(info: VideoInfo, wanted: np.ndarray) -> _Decoded:
    """decord alone, as asked: its failures (DECORDError, bad frame shapes) are the file's."""

    try:
        return _read_decord(info, wanted)
    except BadInputError:
        raise
    except Exception as err:  # DECORDError, RuntimeError, shape errors...: as in the auto path, the file's fault
        raise BadInputError(f"decord cannot read it ({type(err).__name__}); the pyav backend may", info.path) from None


def _decord_suits(info: VideoInfo) -> bool:
    """decord is installed and known to index this kind of file correctly."""
    formats = set(info.container.split(","))
    return (
        importlib.util.find_spec("decord") is not None
        and info.codec not in _DECORD_UNRELIABLE_CODECS
        and not formats & _DECORD_UNRELIABLE_FORMATS
        and info.path.suffix.lower() not in _DECORD_UNRELIABLE_SUFFIXES
        and info.rotation == 0
        and _utf8_encodable(os.fspath(info.path))
    )


def _utf8_encodable(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _fit_to_available(indices: np.ndarray, available: int, info: VideoInfo) -> np.ndarray:
    """Clamp indices to the frames that exist, or raise when too many are missing (see sample_frames)."""
    if available >= info.frame_count:
        return indices
    _check_shortfall(available, info)
    return np.minimum(indices, available - 1)


def _check_shortfall(available: int, info: VideoInfo) -> None:
    if available < 1 or not _counts_agree(available, info.frame_count):
        raise BadInputError(
            f"truncated or corrupt video: only {max(available, 0)} of its {info.frame_count} frames decode",
            info.path,
        )


def _upright(pixels: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a counter-clockwise display rotation to an [H, W, 3] frame."""
    return np.rot90(pixels, k=rotation // 90) if rotation else pixels


def _coded_size(info: VideoInfo) -> tuple[int, int]:
    """(width, height) of the frames as stored, before rotation."""
    return (info.height, info.width) if info.rotation in (90, 270) else (info.width, info.height)


# ---------------------------------------------------------------- decord


def _read_decord(info: VideoInfo, wanted: np.ndarray) -> _Decoded:
    """One batched decode of the wanted frames; decord seeks to keyframes itself."""
    import decord

    if info.rotation:
        raise BadInputError("decord cannot read rotated videos; use the pyav backend", info.path)
    if not _utf8_encodable(os.fspath(info.path)):
        raise BadInputError("decord cannot open non-UTF-8 file names; use the pyav backend", info.path)
    reader = decord.VideoReader(os.fspath(info.path), ctx=decord.cpu(0), num_threads=1)
    try:
        indices = _fit_to_available(wanted, len(reader), info)
        distinct = np.unique(indices)
        batch = _decord_to_numpy(reader.get_batch(distinct.tolist()))
        times = _plausible_times(reader.get_frame_timestamp(distinct.tolist()), distinct, info)
        reader.seek(0)  # drops decord's buffered frames (dmlc/decord#197, #208)
    finally:
        del reader
    width, height = _coded_size(info)
    if batch.shape != (len(distinct), height, width, 3):
        raise RuntimeError(f"decord returned frames of shape {batch.shape}, expected {height}x{width}x3")
    position = np.searchsorted(distinct, indices)
    return _Decoded(batch[position], times[position], indices)


def _plausible_times(spans, distinct: np.ndarray, info: VideoInfo) -> np.ndarray:
    """decord's frame start times, or index / fps where they are not times within the video.

    decord 0.6 reports about 9.2e15 s for the frame of a one-frame Matroska file.
    """
    times = np.asarray(spans, dtype=np.float64).reshape(-1, 2)[:, 0]
    plausible = np.isfinite(times) & (times >= -1e-3) & (times <= info.duration + 1.0)
    if plausible.all() or info.fps <= 0:
        return times
    return np.where(plausible, times, distinct / info.fps)


def _decord_to_numpy(batch) -> np.ndarray:
    """decord's NDArray, or a torch tensor when another module set decord's bridge to torch."""
    return batch.asnumpy() if hasattr(batch, "asnumpy") else np.asarray(batch)


# ---------------------------------------------------------------- PyAV


class _SeekUnreliable(Exception):
    """A seek failed or landed after the frame it aimed before; decode in order instead."""


def _read_pyav(info: VideoInfo, wanted: np.ndarray) -> _Decoded:
    """Decode the wanted frames with PyAV: by seeking when packets carry timestamps, else in order."""
    with _open_container(info.path) as container:
        stream = _prepare_stream(container, info.path)
        scan = _scan_packets(container, stream, whole_file=True, decode_first=False)
        if scan.timestamps and None not in scan.timestamps:
            indices = _fit_to_available(wanted, len(scan.timestamps), info)
            try:
                return _decode_with(_SeekingDecoder(container, stream, scan), indices, info)
            except _SeekUnreliable:
                pass
    with _open_container(info.path) as container:
        return _decode_with(_OrderedDecoder(container, _prepare_stream(container, info.path)), wanted, info)


def _prepare_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    stream = _video_stream(container, path)
    if stream.codec_context is None:
        raise BadInputError("no decoder for its video codec (unknown or damaged codec tag)", path)
    # Frame threading can deadlock when decoding stops early (NVIDIA-TAO/tao-pytorch#109).
    stream.codec_context.thread_type = "SLICE"
    return stream


def _decode_with(decoder: _FrameSource, indices: np.ndarray, info: VideoInfo) -> _Decoded:
    """Decode the distinct indices, stand the last frame in for a short tail that is missing, expand."""
    distinct = np.unique(indices)
    frames, stamps = decoder.decode(distinct)
    if len(frames) < len(distinct):
        frames, stamps, distinct = _clamp_after_early_end(frames, stamps, distinct, decoder, info)
        indices = np.minimum(indices, distinct[-1])
    width, height = _coded_size(info)
    pixels = np.stack([_upright(_to_rgb(frame, width, height), info.rotation) for frame in frames])
    position = np.searchsorted(distinct, indices)
    return _Decoded(pixels[position], np.asarray(stamps, dtype=np.float64)[position], indices)


def _clamp_after_early_end(frames: list, stamps: list, distinct: np.ndarray, decoder: _FrameSource, info: VideoInfo):
    """The decoder stopped before the last wanted frame: its last frame stands in, if the shortfall is small."""
    _check_shortfall(decoder.last_index + 1, info)
    kept = distinct[: len(frames)]
    if not len(kept) or kept[-1] != decoder.last_index:
        frames, stamps = [*frames, decoder.last_frame], [*stamps, decoder.last_time]
        kept = np.append(kept, decoder.last_index)
    return frames, stamps, kept


def _to_rgb(frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
    """[H, W, 3] uint8 RGB, rescaled to the first frame's size should a stream change size midway."""
    return frame.to_ndarray(format="rgb24", width=width, height=height)


class _FrameSource(ABC):
    """Shared bookkeeping: the last frame that decoded, which stands in for a truncated tail."""

    def __init__(self, container: av.container.InputContainer, stream: av.video.stream.VideoStream):
        self.container, self.stream = container, stream
        self.last_frame: av.VideoFrame | None = None
        self.last_index = -1
        self.last_time = 0.0

    @abstractmethod
    def decode(self, distinct: np.ndarray) -> tuple[list, list]:
        """Frames and seconds-from-start for the sorted distinct indices; shorter if the stream ends first."""

    def _frames_from(self, offset: int | None):
        """Decoded frames, after seeking back to `offset` (stream time base) if given; an error ends them.

        Demuxers without seeking (SWF) fail the seek with FFmpeg's generic -1,
        which PyAV raises as PermissionError.
        """
        if offset is not None:
            try:
                self.container.seek(offset, stream=self.stream, backward=True)
            except av.error.FFmpegError:
                raise _SeekUnreliable from None
        try:
            yield from self.container.decode(self.stream)
        except av.error.FFmpegError:
            return


class _SeekingDecoder(_FrameSource):
    """Frame index -> presentation timestamp via the sorted packet timestamps.

    For each wanted frame it seeks to the keyframe at or before that
    timestamp -- unless decoding on from the current position gets there
    without passing a keyframe -- and decodes forward to the first frame
    whose timestamp reaches it. Keyframe times come from the demuxer, so
    open-GOP leading frames are reached from the previous keyframe.
    """

    def __init__(self, container, stream, scan: _PacketScan):
        super().__init__(container, stream)
        self.timestamps = np.sort(np.array(scan.timestamps, dtype=np.int64))
        self.origin = int(self.timestamps[0])
        keyframes = sorted(scan.keyframes) or [(self.origin, self.origin)]
        self.key_pts = np.array([pts for pts, _ in keyframes], dtype=np.int64)
        self.key_offsets = [offset for _, offset in keyframes]
        self.time_base = float(stream.time_base)
        self.pending: Iterator[av.VideoFrame] | None = None  # decoded frames since the last seek
        self.current: av.VideoFrame | None = None  # last frame it gave, always one with a pts

    def decode(self, distinct: np.ndarray) -> tuple[list, list]:
        frames, stamps = [], []
        for index in distinct:
            frame = self._frame_at(int(self.timestamps[index]))
            if frame is None:
                break
            frames.append(frame)
            stamps.append((_pts(frame) - self.origin) * self.time_base)
        return frames, stamps

    def _frame_at(self, target: int) -> av.VideoFrame | None:
        if self.current is not None and _pts(self.current) >= target:
            return self.current
        key = max(int(np.searchsorted(self.key_pts, target, side="right")) - 1, 0)
        if self.pending is None or self.current is None or self.key_pts[key] > _pts(self.current):
            self.pending, self.current = self._frames_from(self.key_offsets[key]), None
            landed = self._next_frame()
            if landed is not None and _pts(landed) > target:
                raise _SeekUnreliable
        while self.current is None or _pts(self.current) < target:
            if self._next_frame() is None:
                return None
        return self.current

    def _next_frame(self) -> av.VideoFrame | None:
        for frame in self.pending or ():
            if frame.pts is not None:
                self.current = frame
                self._remember(frame, frame.pts)
                return frame
        self.pending = None
        return None

    def _remember(self, frame: av.VideoFrame, pts: int) -> None:
        index = int(np.searchsorted(self.timestamps, pts))
        if index >= self.last_index:
            self.last_frame, self.last_index = frame, index
            self.last_time = (pts - self.origin) * self.time_base


def _pts(frame: av.VideoFrame) -> int:
    """The timestamp of a frame the seeking decoder kept: `_next_frame` passes over frames without one."""
    assert frame.pts is not None
    return frame.pts


class _OrderedDecoder(_FrameSource):
    """Decode from the start, counting frames: for streams without timestamps, or where seeking misleads."""

    def decode(self, distinct: np.ndarray) -> tuple[list, list]:
        wanted = set(distinct.tolist())
        frames, stamps, first_time = [], [], None
        for index, frame in enumerate(self._frames_from(None)):
            time = frame.time if frame.time is not None else float("nan")
            first_time = time if first_time is None else first_time
            self.last_frame, self.last_index, self.last_time = frame, index, time - first_time
            if index in wanted:
                frames.append(frame)
                stamps.append(time - first_time)
                if len(frames) == len(distinct):
                    break
        return frames, stamps
