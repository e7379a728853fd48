"""Which frames to take from a video: the papers' frame-index sampling rules.

`segment-centre` is ActionCLIP's test-time rule (sallymmx/ActionCLIP
datasets/datasets.py `_get_val_indices`), `fps` is CLIP4Clip's
(ArrowLuo/CLIP4Clip dataloaders/rawvideo_util.py, then `slice_framepos=2`),
`uniform` spreads n frames evenly over the whole video.
"""

from __future__ import annotations

import numpy as np

SAMPLING_MODES = ("uniform", "segment-centre", "fps")


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
