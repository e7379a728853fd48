"""Read videos as a few upright RGB frames: the entry points that pick frames and a decoder.

Frame indices come from the papers' sampling rules (`frame_indices`), the
frame count, rate and rotation from probing (`video_probe`). Decoding uses
decord where it is reliable (`video_decord`) and PyAV elsewhere
(`video_pyav`); both return the same frames for the same indices. A GPU
`decoder` (clipcli.media.decoders) is tried first; a file it cannot decode
goes to decord/PyAV.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clipcli.errors import BadInputError
from clipcli.media.frame_indices import sample_indices
from clipcli.media.video_decord import decord_suits, read_decord
from clipcli.media.video_probe import Decoded, VideoInfo, probe_video
from clipcli.media.video_pyav import read_pyav

if TYPE_CHECKING:
    from clipcli.media.decoders import Decoder

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

BACKENDS = ("auto", "decord", "pyav")


@dataclass
class SampledFrames:
    """Frames in the order requested (duplicates kept), with their real times and indices."""

    frames: np.ndarray  # [n, H, W, 3] uint8 RGB, upright
    timestamps: np.ndarray  # [n] float64 seconds from the first frame
    indices: np.ndarray  # [n] int frame indices actually decoded
    info: VideoInfo


def sample_frames(
    path: str | Path,
    n: int,
    mode: str = "uniform",
    *,
    rate: float = 1.0,
    backend: str = "auto",
    decoder: Decoder | None = None,
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
    decoded = _decode(info, wanted, backend, decoder)
    return SampledFrames(decoded.frames[order], decoded.timestamps[order], decoded.indices[order], info)


def read_frames(
    video: str | Path | VideoInfo, indices, *, backend: str = "auto", decoder: Decoder | None = None
) -> SampledFrames:
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
    decoded = _decode(info, wanted, backend, decoder)
    return SampledFrames(decoded.frames[order], decoded.timestamps[order], decoded.indices[order], info)


def _decode(info: VideoInfo, wanted: np.ndarray, backend: str, decoder: Decoder | None = None) -> Decoded:
    if decoder is not None and decoder.decode is not None:
        try:
            return decoder.decode(info, wanted, decoder.device)
        except Exception:  # an unsupported codec or stream, a decode error: decord/PyAV read it or say why not
            pass
    if backend == "pyav" or (backend == "auto" and not decord_suits(info)):
        return read_pyav(info, wanted)
    if backend == "decord":
        return _read_decord_or_refuse(info, wanted)
    try:
        return read_decord(info, wanted)
    except Exception:  # decord raises DECORDError, RuntimeError, ...; PyAV reads it or says why not
        return read_pyav(info, wanted)


def _read_decord_or_refuse(info: VideoInfo, wanted: np.ndarray) -> Decoded:
    """decord alone, as asked: its failures (DECORDError, bad frame shapes) are the file's."""

    try:
        return read_decord(info, wanted)
    except BadInputError:
        raise
    except Exception as err:  # DECORDError, RuntimeError, shape errors...: as in the auto path, the file's fault
        raise BadInputError(f"decord cannot read it ({type(err).__name__}); the pyav backend may", info.path) from None
