"""Decoding with PyAV: seek to the keyframe before each wanted frame and decode forward to its timestamp.

Streams whose packets carry no timestamps, and files where a seek lands past
the frame it aimed before, are decoded in order from the start instead.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

import av
import numpy as np

from clipcli.media.video_probe import (
    Decoded,
    PacketScan,
    VideoInfo,
    check_shortfall,
    coded_size,
    fit_to_available,
    open_container,
    prepare_stream,
    scan_packets,
    upright,
)


class _SeekUnreliable(Exception):
    """A seek failed or landed after the frame it aimed before; decode in order instead."""


def read_pyav(info: VideoInfo, wanted: np.ndarray) -> Decoded:
    """Decode the wanted frames with PyAV: by seeking when packets carry timestamps, else in order."""
    with open_container(info.path) as container:
        stream = prepare_stream(container, info.path)
        scan = scan_packets(container, stream, whole_file=True, decode_first=False)
        if scan.timestamps and None not in scan.timestamps:
            indices = fit_to_available(wanted, len(scan.timestamps), info)
            try:
                return _decode_with(_SeekingDecoder(container, stream, scan), indices, info)
            except _SeekUnreliable:
                pass
    with open_container(info.path) as container:
        return _decode_with(_OrderedDecoder(container, prepare_stream(container, info.path)), wanted, info)


def _decode_with(decoder: _FrameSource, indices: np.ndarray, info: VideoInfo) -> Decoded:
    """Decode the distinct indices, stand the last frame in for a short tail that is missing, expand."""
    distinct = np.unique(indices)
    frames, stamps = decoder.decode(distinct)
    if len(frames) < len(distinct):
        frames, stamps, distinct = _clamp_after_early_end(frames, stamps, distinct, decoder, info)
        indices = np.minimum(indices, distinct[-1])
    width, height = coded_size(info)
    pixels = np.stack([upright(_to_rgb(frame, width, height), info.rotation) for frame in frames])
    position = np.searchsorted(distinct, indices)
    return Decoded(pixels[position], np.asarray(stamps, dtype=np.float64)[position], indices)


def _clamp_after_early_end(frames: list, stamps: list, distinct: np.ndarray, decoder: _FrameSource, info: VideoInfo):
    """The decoder stopped before the last wanted frame: its last frame stands in, if the shortfall is small."""
    check_shortfall(decoder.last_index + 1, info)
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

    def __init__(self, container, stream, scan: PacketScan):
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
