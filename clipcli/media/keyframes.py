"""Fast, approximate uniform sampling: the keyframe at or before each uniform time.

`sample_frames(..., "uniform")` decodes forward from the previous keyframe to
every wanted frame, so on a long clip with sparse keyframes (one every 250
frames is common) most of the time goes to frames nobody looks at. Here each
of the n uniform times `linspace(0, duration, n, endpoint=False) + duration/2n`
is snapped to the keyframe at or before it and only that keyframe is decoded:
one seek and one decoded frame per sample. The frames are therefore not the
uniform ones; their timestamps are the keyframes' own (exact for the frames
returned, approximate as samples), and distinct times are kept once, so a clip
with few keyframes gives fewer than n frames.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from clipcli.media.video import SampledFrames, sample_frames
from clipcli.media.video_probe import open_container, prepare_stream, probe_video


def keyframe_times(duration: float, n: int) -> np.ndarray:
    """The n target times: centres of n equal spans of the clip, in seconds."""
    if n < 1:
        raise ValueError(f"number of frames must be at least 1, got {n}")
    return (np.arange(n) + 0.5) * (max(duration, 0.0) / n)


def sample_keyframes(path: str | Path, n: int) -> SampledFrames:
    """Up to n distinct keyframes near uniform times, upright RGB, in time order.

    Falls back to exact uniform sampling when the file cannot be seeked (no
    timestamps, a demuxer error) so that `--fast` never fails where the exact
    path would succeed.
    """
    info = probe_video(path)
    try:
        frames, times = _decode_keyframes(info.path, keyframe_times(info.duration, n), info.rotation)
    except (av.error.FFmpegError, _NoTimestamps):
        frames, times = [], []
    if not frames:
        sampled = sample_frames(path, n, "uniform")
        keep = np.unique(sampled.indices, return_index=True)[1]
        return SampledFrames(sampled.frames[keep], sampled.timestamps[keep], sampled.indices[keep], info)
    seconds = np.asarray(times, dtype=np.float64)
    indices = np.minimum(np.rint(seconds * info.fps).astype(np.int64), max(info.frame_count - 1, 0))
    return SampledFrames(np.stack(frames), seconds, indices, info)


class _NoTimestamps(Exception):
    """The stream's frames carry no presentation timestamps, so keyframe times are unknown."""


def _decode_keyframes(path: Path, targets: np.ndarray, rotation: int) -> tuple[list[np.ndarray], list[float]]:
    frames: list[np.ndarray] = []
    times: list[float] = []
    with open_container(path) as container:
        stream = prepare_stream(container, path)
        assert stream.time_base is not None  # FFmpeg gives every demuxed stream one (1/90000 by default)
        base = float(stream.time_base)
        origin = stream.start_time or 0
        seen: set[int] = set()
        size = None  # (width, height) of the first frame; a stream that changes size is rescaled to it
        for target in targets:
            container.seek(origin + int(target / base), stream=stream, backward=True, any_frame=False)
            frame = next((f for f in container.decode(stream)), None)
            if frame is None:
                continue
            if frame.pts is None:
                raise _NoTimestamps
            if frame.pts in seen:
                continue
            seen.add(frame.pts)
            size = size or (frame.width, frame.height)
            pixels = frame.to_ndarray(format="rgb24", width=size[0], height=size[1])
            frames.append(np.rot90(pixels, k=rotation // 90) if rotation else pixels)
            times.append(max(0.0, (frame.pts - origin) * base))
    order = np.argsort(times, kind="stable")
    return [frames[i] for i in order], [times[i] for i in order]
