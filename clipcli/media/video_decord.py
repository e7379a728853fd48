"""Decoding with decord, and which files it decodes correctly.

decord's batched `get_batch` on the sorted unique indices is fast, followed by
`seek(0)`, which releases the decode buffers decord otherwise keeps growing.
It returns wrong frames for VP8/WebM (dmlc/decord#91) and, as measured here,
for MPEG-TS; it ignores or mangles the display-matrix rotation; and it cannot
open non-UTF-8 file names: `decord_suits` says when to use it.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np

from clipcli.errors import BadInputError
from clipcli.media.video_probe import Decoded, VideoInfo, coded_size, fit_to_available

# decord (0.6, FFmpeg 4.1) indexes these wrongly: every VP8/WebM index gives the
# first frame (dmlc/decord#91); MPEG-TS indices come back shifted by a GOP.
# FFmpeg names Matroska and WebM alike ("matroska,webm"), hence the suffix.
_DECORD_UNRELIABLE_CODECS = frozenset({"vp8", "vp9"})
_DECORD_UNRELIABLE_FORMATS = frozenset({"mpegts"})
_DECORD_UNRELIABLE_SUFFIXES = frozenset({".webm"})


def decord_suits(info: VideoInfo) -> bool:
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


def read_decord(info: VideoInfo, wanted: np.ndarray) -> Decoded:
    """One batched decode of the wanted frames; decord seeks to keyframes itself."""
    import decord

    if info.rotation:
        raise BadInputError("decord cannot read rotated videos; use the pyav backend", info.path)
    if not _utf8_encodable(os.fspath(info.path)):
        raise BadInputError("decord cannot open non-UTF-8 file names; use the pyav backend", info.path)
    reader = decord.VideoReader(os.fspath(info.path), ctx=decord.cpu(0), num_threads=1)
    try:
        indices = fit_to_available(wanted, len(reader), info)
        distinct = np.unique(indices)
        batch = _decord_to_numpy(reader.get_batch(distinct.tolist()))
        times = _plausible_times(reader.get_frame_timestamp(distinct.tolist()), distinct, info)
        reader.seek(0)  # drops decord's buffered frames (dmlc/decord#197, #208)
    finally:
        del reader
    width, height = coded_size(info)
    if batch.shape != (len(distinct), height, width, 3):
        raise RuntimeError(f"decord returned frames of shape {batch.shape}, expected {height}x{width}x3")
    position = np.searchsorted(distinct, indices)
    return Decoded(batch[position], times[position], indices)


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
