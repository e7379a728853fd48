"""Keeping an index up to date: decode new and changed videos on threads, embed them in batches.

Indexing is incremental (size + mtime, as rclip), so only new or changed
videos are decoded; embeddings live in `clipcli.store.index`. The update is a
`clipcli.runner` job: workers decode and embed, the driver alone writes the
index, a batch of videos per transaction.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch

from clipcli import ui
from clipcli.errors import BadInputError, ClipcliError, first_line
from clipcli.media.decoders import CPU_DECODERS, VIDEO, Decoder
from clipcli.media.sampling import FPS, KEYFRAMES, UNIFORM, sample_video
from clipcli.models.frames import preprocess_frames
from clipcli.pipelines.retrieve.model import Retriever, RetrieverSource
from clipcli.runner import Executor, Job, Result, run_job
from clipcli.store.index import Failure, Stamp, VideoIndex, VideoRecord

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


def decode_video(
    path: Path, frames: int, sampling: str, resolution: int, decoder: Decoder | None = None
) -> DecodedVideo:
    """Sample and preprocess one video's frames on the CPU (runs in worker threads)."""
    stat = path.stat()  # taken first: a file changed while decoding is re-embedded next time
    sampled = sample_video(path, frames, sampling, decoder=decoder)
    # Uniform sampling repeats frames of clips shorter than `frames`; keep each once, so the
    # mean is over distinct frames (CLIP4Clip's own loader gives short clips fewer frames).
    keep = np.sort(np.unique(sampled.indices, return_index=True)[1])
    pixels = preprocess_frames(sampled.frames[keep], resolution, "cpu")
    return DecodedVideo(path, stat.st_size, stat.st_mtime_ns, pixels, sampled.timestamps[keep], sampled.info.duration)


def index_identity(retriever: Retriever, frames: int, sampling: str, decoder: Decoder) -> dict:
    """What every embedding in an index was made with: the retriever's settings and any GPU decoder.

    GPU and CPU decoders differ by rounding, so an index built one way is
    re-embedded whole when updated the other way: it never mixes the two. A
    GPU decoder's index still holds the CPU readers' embeddings of the files it
    hands them, as every update does. CPU-built indexes name no decoder.
    """
    identity = retriever.identity(frames, sampling)
    return identity if decoder.decode is None else {**identity, "decoder": decoder.name}


def searchable(identity: dict | None, retriever_identity: dict) -> bool:
    """Whether a query from this retriever can search an index: any decoder will do, the rest must match."""
    return identity is not None and {k: v for k, v in identity.items() if k != "decoder"} == retriever_identity


_DECODE_ERRORS = (BadInputError, av.error.FFmpegError, OSError, RuntimeError, ValueError)
INDEXED = "already indexed"
FAILED_BEFORE = "failed before (--reindex retries them)"


def _failure_message(path: Path, err: BaseException) -> str:
    if isinstance(err, BadInputError):
        return str(err)
    return f"{path}: cannot decode ({type(err).__name__}: {first_line(err)})"


@dataclass
class Undecodable:
    """A video that would not decode: stored as failed, so it is not retried until it changes."""

    message: str


@dataclass
class UpdateSummary:
    """What one index update did, and one result per video it looked at."""

    index: Path
    total: int = 0
    embedded: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, error) failing in this run
    known_failed: int = 0  # unchanged files that failed before
    reset: bool = False
    results: list[Result] = field(default_factory=list, repr=False)

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


class _IndexWriteFailed(Exception):
    """A failed commit inside `write`: it ends the update, where the runner would fail only that video."""

    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


@dataclass
class IndexJob(Job):
    """Embed videos into an index: decoded on read-ahead threads, embedded in batches, stored by the driver.

    The driver commits `batch_size` videos (embedded or failed) per
    transaction, so an interruption loses at most the batch in flight.
    """

    source: RetrieverSource | None
    frames: int = DEFAULT_FRAMES
    sampling: str = "uniform"
    batch_size: int = 8
    read_workers: int = 2
    decoder: Decoder = CPU_DECODERS[VIDEO]
    name = "indexing"

    def use_retriever(self, retriever: Retriever) -> None:
        """Embed with an already loaded retriever (in this process; an actor loads its own from `source`)."""
        self._retriever = retriever

    def use_index(self, index: VideoIndex, known: dict[Path, Stamp], current: dict[Path, tuple[int, int]]) -> None:
        """The index the driver writes, what it holds and the files' stamps now (driver side only)."""
        self._index, self._known, self._current = index, known, current
        self._records: list[VideoRecord] = []
        self._failures: list[Failure] = []

    def setup(self) -> None:
        if not hasattr(self, "_retriever"):
            if self.source is None:
                raise RuntimeError("an index job without a retriever source can only run in the process holding it")
            self._retriever = self.source.load()

    def done(self, path: Path) -> bool:
        previous = self._known.get(path)
        return previous is not None and (previous.size, previous.mtime_ns) == self._current[path]

    def read(self, path: Path) -> DecodedVideo | Undecodable:
        """The sampled frames; a video that will not decode is an outcome too, for the index to remember."""
        try:
            return decode_video(path, self.frames, self.sampling, self._retriever.resolution, self.decoder)
        except _DECODE_ERRORS as err:
            return Undecodable(_failure_message(path, err))

    def compute_batch(self, items: Sequence[tuple[Path, Any]]) -> list[Any]:
        decoded = [value for _, value in items if isinstance(value, DecodedVideo)]
        records = iter(embed_videos(self._retriever, decoded))
        return [next(records) if isinstance(value, DecodedVideo) else value for _, value in items]

    def write(self, path: Path, outcome: VideoRecord | Undecodable) -> dict:
        """Queue the video for the next commit; an undecodable one is stored as failed and fails its row."""
        if isinstance(outcome, Undecodable):
            size, mtime = _stat_files([path]).get(path, (-1, -1))
            self._failures.append(Failure(path, size, mtime, outcome.message))
            self._commit_when_full()
            raise BadInputError(outcome.message)
        self._records.append(outcome)
        self._commit_when_full()
        return {"frames": len(outcome.timestamps), "duration": round(float(outcome.duration), 3)}

    def _commit_when_full(self) -> None:
        if len(self._records) + len(self._failures) >= self.batch_size:
            try:
                self.commit()
            except (ClipcliError, OSError) as err:
                raise _IndexWriteFailed(err) from err

    def commit(self) -> None:
        """Store the videos written since the last commit, in one transaction."""
        records, failures = self._records, self._failures
        self._records, self._failures = [], []
        if records or failures:
            self._index.write(records, failures)


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
    executor: Executor | None = None,
    decoder: Decoder = CPU_DECODERS[VIDEO],
) -> UpdateSummary:
    """Embed new and changed `files`, drop stored videos under `roots` that are gone.

    Holds the index lock throughout. Each batch of `batch_videos` is committed
    in one transaction, so an interruption keeps what was committed and a
    rerun picks up the rest. Unchanged files that failed before are not retried
    (`--reindex` retries everything). With an `executor` (Ray), the videos are
    decoded and embedded where it runs them; this process writes the index.
    """
    summary = UpdateSummary(index.folder, total=len(files))
    identity = index_identity(retriever, frames, sampling, decoder)
    job = IndexJob(
        retriever.source,
        frames=frames,
        sampling=sampling,
        batch_size=batch_videos,
        read_workers=workers or max(1, min(4, os.cpu_count() or 1)),  # memory: 2 x workers decoded videos
        decoder=decoder,
    )
    job.use_retriever(retriever)
    with index.lock(lock_timeout, on_wait=ui.notice):
        if index.identity != identity:
            summary.reset = index.identity is not None
            index.reset(identity)
        current = _stat_files(files)
        known = index.stamps(roots) if roots else index.stamps(current)
        gone = [path for path in known if path not in current]
        index.remove(gone)
        summary.removed = len(gone)
        job.use_index(index, known, current)
        try:
            report = run_job(job, list(current), overwrite=reindex, executor=executor)
        except _IndexWriteFailed as failed:
            raise failed.error from None
        job.commit()
    summary.results = [_with_skip_reason(result, known) for result in report.results]
    summary.embedded = len(report.ok)
    summary.failed = [(result.input, result.error or "") for result in report.failed]
    summary.unchanged = len(report.with_status("skipped"))
    summary.known_failed = sum(result.reason == FAILED_BEFORE for result in summary.results)
    return summary


def _with_skip_reason(result: Result, known: dict[Path, Stamp]) -> Result:
    """A skipped video says whether it is indexed or failed before (not the runner's generic reason)."""
    if result.status != "skipped":
        return result
    return Result.skipped(result.input, INDEXED if known[Path(result.input)].ok else FAILED_BEFORE)


@torch.no_grad()
def embed_videos(retriever: Retriever, batch: Sequence[DecodedVideo]) -> list[VideoRecord]:
    """Embed a batch's frames in one forward pass and pool each video's with the head."""
    if not batch:
        return []
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
    return [
        VideoRecord(
            video.path,
            video.size,
            video.mtime_ns,
            video.duration,
            pooled[row],
            units[offsets[row] : offsets[row + 1]],
            norms[offsets[row] : offsets[row + 1]],
            video.timestamps,
        )
        for row, video in enumerate(batch)
    ]


def summary_line(summary: dict) -> str:
    """One human line per index update (`UpdateSummary.as_dict()`), for stderr."""
    parts = [f"{summary['embedded']} embedded", f"{summary['unchanged']} unchanged"]
    if summary["removed"]:
        parts.append(f"{summary['removed']} removed")
    if summary["failed"]:
        parts.append(f"{summary['failed']} failed")
    if summary["known_failed"]:
        parts.append(f"{summary['known_failed']} failed before (--reindex retries them)")
    reset = " (model or sampling changed: re-embedded)" if summary["reset"] else ""
    return f"index {summary['index']}: {', '.join(parts)}{reset}"
