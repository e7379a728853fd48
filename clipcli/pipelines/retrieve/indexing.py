"""Keeping an index up to date: decode new and changed videos on threads, embed them in batches.

Indexing is incremental (size + mtime, as rclip), so only new or changed
videos are decoded; embeddings live in `clipcli.store.index`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import torch

from clipcli import ui
from clipcli.errors import BadInputError, PartialFailure, first_line
from clipcli.media.sampling import FPS, KEYFRAMES, UNIFORM, sample_video
from clipcli.models.frames import preprocess_frames
from clipcli.pipelines.retrieve.model import Retriever
from clipcli.prefetch import read_ahead
from clipcli.store.index import Failure, VideoIndex, VideoRecord

DEFAULT_FRAMES = 12  # CLIP4Clip's --max_frames for MSR-VTT, MSVD and LSMDC
SAMPLINGS = (UNIFORM, FPS, KEYFRAMES)


@dataclass
class DecodedVideo:
    path: Path
    size: int
    mtime_ns: int
    pixels: torch.Tensor  # [n, 3, R, R] CLIP-normalised, n distinct frames
    timestamps: np.ndarray
    duration: float


def decode_video(path: Path, frames: int, sampling: str, resolution: int) -> DecodedVideo:
    """Sample and preprocess one video's frames on the CPU (runs in worker threads)."""
    stat = path.stat()  # taken first: a file changed while decoding is re-embedded next time
    sampled = sample_video(path, frames, sampling)
    # Uniform sampling repeats frames of clips shorter than `frames`; keep each once, so the
    # mean is over distinct frames (CLIP4Clip's own loader gives short clips fewer frames).
    keep = np.sort(np.unique(sampled.indices, return_index=True)[1])
    pixels = preprocess_frames(sampled.frames[keep], resolution, "cpu")
    return DecodedVideo(path, stat.st_size, stat.st_mtime_ns, pixels, sampled.timestamps[keep], sampled.info.duration)


_DECODE_ERRORS = (BadInputError, av.error.FFmpegError, OSError, RuntimeError, ValueError)


def _failure_message(path: Path, err: BaseException) -> str:
    if isinstance(err, BadInputError):
        return str(err)
    return f"{path}: cannot decode ({type(err).__name__}: {first_line(err)})"


@dataclass
class UpdateSummary:
    """What one index update did."""

    index: Path
    total: int = 0
    embedded: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, error) failing in this run
    known_failed: int = 0  # unchanged files that failed before
    reset: bool = False

    def as_dict(self) -> dict:
        return {
            "index": str(self.index),
            "videos": self.total,
            "embedded": self.embedded,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "failed": len(self.failed),
            "known_failed": self.known_failed,
            "reset": self.reset,
        }


def _stat_files(files: Sequence[Path]) -> dict[Path, tuple[int, int]]:
    stamps = {}
    for path in files:
        try:
            stat = path.stat()
        except OSError:
            continue  # vanished (or a dangling link) since the walk: treated as absent
        stamps[path] = (stat.st_size, stat.st_mtime_ns)
    return stamps


def update_index(
    index: VideoIndex,
    retriever: Retriever,
    files: Sequence[Path],
    *,
    roots: Sequence[Path] = (),
    frames: int = DEFAULT_FRAMES,
    sampling: str = "uniform",
    reindex: bool = False,
    batch_videos: int = 8,
    workers: int | None = None,
    lock_timeout: float | None = None,
) -> UpdateSummary:
    """Embed new and changed `files`, drop stored videos under `roots` that are gone.

    Holds the index lock throughout. Each batch of `batch_videos` is committed
    in one transaction, so an interruption keeps what was committed and a
    rerun picks up the rest. Unchanged files that failed before are not retried
    (`--reindex` retries everything).
    """
    summary = UpdateSummary(index.folder, total=len(files))
    identity = retriever.identity(frames, sampling)
    with index.lock(lock_timeout, on_wait=ui.notice):
        if index.identity != identity:
            summary.reset = index.identity is not None
            index.reset(identity)
        current = _stat_files(files)
        known = index.stamps(roots) if roots else index.stamps(current)
        gone = [path for path in known if path not in current]
        index.remove(gone)
        summary.removed = len(gone)
        todo = []
        for path, stamp in current.items():
            previous = known.get(path)
            if reindex or previous is None or (previous.size, previous.mtime_ns) != stamp:
                todo.append(path)
            else:
                summary.unchanged += 1
                summary.known_failed += not previous.ok
        _embed(index, retriever, todo, summary, frames, sampling, batch_videos, workers)
    return summary


def _embed(index, retriever, paths, summary, frames, sampling, batch_videos, workers) -> None:
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    batch: list[DecodedVideo] = []
    failures: list[Failure] = []

    def decode(path: Path) -> DecodedVideo:
        return decode_video(path, frames, sampling, retriever.resolution)

    stream = read_ahead(paths, decode, workers=workers, errors=_DECODE_ERRORS)  # memory: 2 x workers videos
    with ui.progress() as bar, contextlib.closing(stream):
        task = bar.add_task(_progress_text(summary), total=len(paths))
        for path, decoded in stream:
            if isinstance(decoded, BaseException):
                message = _failure_message(path, decoded)
                ui.error(message)
                summary.failed.append((str(path), message))
                size, mtime = _stat_files([path]).get(path, (-1, -1))
                failures.append(Failure(path, size, mtime, message))
            else:
                batch.append(decoded)
            if len(batch) + len(failures) >= batch_videos:
                summary.embedded += _write_batch(index, retriever, batch, failures)
                batch, failures = [], []
            bar.update(task, advance=1, description=_progress_text(summary))
        if batch or failures:
            summary.embedded += _write_batch(index, retriever, batch, failures)
            bar.update(task, description=_progress_text(summary))


def _progress_text(summary: UpdateSummary) -> str:
    return f"indexing: {summary.embedded} embedded, {summary.unchanged} unchanged, {len(summary.failed)} failed"


@torch.no_grad()
def _write_batch(index: VideoIndex, retriever: Retriever, batch: list[DecodedVideo], failures: list[Failure]) -> int:
    """Embed a batch's frames in one forward pass, pool them with the head, commit with the failures."""
    records = []
    if batch:
        counts = [len(video.pixels) for video in batch]
        features = retriever.encode_frames(torch.cat([video.pixels for video in batch]))
        padded = torch.zeros(len(batch), max(counts), features.shape[-1], device=features.device)
        mask = torch.zeros(len(batch), max(counts), device=features.device)
        for row, chunk in enumerate(features.split(counts)):
            padded[row, : len(chunk)] = chunk
            mask[row, : len(chunk)] = 1
        pooled = retriever.head(padded, mask).cpu().numpy()
        norms = features.norm(dim=-1).clamp_min(1e-12)
        units = (features / norms[:, None]).cpu().numpy()
        norms = norms.cpu().numpy()
        offsets = np.cumsum([0, *counts])
        for row, video in enumerate(batch):
            part = slice(offsets[row], offsets[row + 1])
            records.append(
                VideoRecord(
                    video.path,
                    video.size,
                    video.mtime_ns,
                    video.duration,
                    pooled[row],
                    units[part],
                    norms[part],
                    video.timestamps,
                )
            )
    index.write(records, failures)
    return len(records)


def summary_line(summary: UpdateSummary) -> str:
    """One human line per index update, for stderr."""
    parts = [f"{summary.embedded} embedded", f"{summary.unchanged} unchanged"]
    if summary.removed:
        parts.append(f"{summary.removed} removed")
    if summary.failed:
        parts.append(f"{len(summary.failed)} failed")
    if summary.known_failed:
        parts.append(f"{summary.known_failed} failed before (--reindex retries them)")
    reset = " (model or sampling changed: re-embedded)" if summary.reset else ""
    return f"index {summary.index}: {', '.join(parts)}{reset}"


def raise_for_failed(summaries: Sequence[UpdateSummary]) -> None:
    """Exit 4 when videos failed to index in this run (the search itself completed)."""
    failed = sum(len(summary.failed) for summary in summaries)
    if failed:
        raise PartialFailure(failed, sum(summary.total for summary in summaries))
