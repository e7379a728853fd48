"""CLIP4Clip text-to-video retrieval over folders of videos, with an incremental index.

Zero-shot (the default) is CLIP4Clip's meanP over OpenAI CLIP: 12 frames per
video, each frame's CLIP embedding L2-normalised, averaged, renormalised, and
ranked by cosine with the query's text embedding. With a fine-tuned
CLIP4Clip checkpoint its CLIP tower embeds frames and text and its seqTransf
or seqLSTM head pools the frames. Facts: docs/methods/retrieve.md.

Indexing is incremental (size + mtime, as rclip), so only new or changed
videos are decoded; embeddings live in `clipcli.store.index`. Queries are
tokenised as CLIP4Clip does (`max_words` 32: start token, at most 30 BPE
tokens, end token) and embedded once per process.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import os
import re
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from clip.simple_tokenizer import SimpleTokenizer

from clipcli import ui
from clipcli.errors import BadInputError, PartialFailure
from clipcli.media.images import load_image
from clipcli.media.sampling import FPS, KEYFRAMES, UNIFORM, sample_video
from clipcli.media.video import VIDEO_EXTENSIONS
from clipcli.models import load_clip
from clipcli.models.clip4clip import MeanPHead, load_clip4clip
from clipcli.models.device import resolve_device
from clipcli.models.frames import preprocess_frames
from clipcli.models.weights import file_sha256, resolve_weights
from clipcli.store import ann
from clipcli.store.ann import AnnIndex
from clipcli.store.index import Failure, Matrix, VideoIndex, VideoRecord, discard_if_damaged

MAX_WORDS = 32  # CLIP4Clip's --max_words for MSR-VTT, MSVD and LSMDC
DEFAULT_FRAMES = 12  # CLIP4Clip's --max_frames for the same
SAMPLINGS = (UNIFORM, FPS, KEYFRAMES)
PAPER_MSRVTT = {  # text-to-video on MSR-VTT 1k-A, ViT-B/32 (docs/methods/retrieve.md)
    "meanP (9k)": {"R@1": 43.1, "R@5": 70.4, "R@10": 80.8, "MnR": 16.2},
    "seqTransf (9k)": {"R@1": 44.5, "R@5": 71.4, "R@10": 81.6},
    "zero-shot CLIP-straight": {"R@1": 31.2, "R@5": 53.7, "R@10": 64.2, "MdR": 4.0},
}


# ---------------------------------------------------------------- models


@cache
def _tokenizer() -> SimpleTokenizer:
    return SimpleTokenizer()


def tokenize(texts: Sequence[str], max_words: int = MAX_WORDS, context_length: int = 77) -> torch.Tensor:
    """CLIP4Clip's text input: SOT + BPE, cut to `max_words - 1` tokens, then EOT, zero-padded.

    CLIP's text tower is causal and pools at EOT, so padding to 77 instead of
    `max_words` gives CLIP4Clip's embedding exactly.
    """
    tokenizer = _tokenizer()
    start, end = tokenizer.encoder["<|startoftext|>"], tokenizer.encoder["<|endoftext|>"]
    tokens = torch.zeros(len(texts), context_length, dtype=torch.long)
    for row, text in enumerate(texts):
        ids = ([start] + tokenizer.encode(text))[: max_words - 1] + [end]
        tokens[row, : len(ids)] = torch.tensor(ids)
    return tokens


@dataclass
class Retriever:
    """A CLIP tower and a CLIP4Clip head, and what identifies them in an index."""

    model: torch.nn.Module
    head: MeanPHead
    tower: str  # "sha256:..." of the weights file the embeddings come from
    device: torch.device
    max_words: int = MAX_WORDS
    _texts: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @classmethod
    def load(
        cls,
        model_name: str = "ViT-B/32",
        checkpoint: str | Path | None = None,
        device: str | torch.device = "auto",
        *,
        trust_checkpoint: bool = False,
    ) -> Retriever:
        """Zero-shot meanP on a CLIP model, or a CLIP4Clip checkpoint's tower and head."""
        torch_device = resolve_device(device)
        if checkpoint is not None:
            model, head = load_clip4clip(checkpoint, torch_device, trust_checkpoint=trust_checkpoint)
            return cls(model, head, f"sha256:{file_sha256(checkpoint)}", torch_device)
        path = resolve_weights(model_name)
        model, _ = load_clip(path, torch_device, trust_checkpoint=trust_checkpoint)
        return cls(model, MeanPHead().to(torch_device), f"sha256:{file_sha256(path)}", torch_device)

    @property
    def resolution(self) -> int:
        return self.model.visual.input_resolution

    def identity(self, frames: int, sampling: str) -> dict:
        """What an index built by this retriever with these settings must match."""
        return {"tower": self.tower, "head": self.head.kind, "frames": frames, "sampling": sampling}

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """`[Q, D]` normalised float32 text embeddings (cached per text)."""
        missing = list(dict.fromkeys(text for text in texts if text not in self._texts))
        for start in range(0, len(missing), batch_size):
            chunk = missing[start : start + batch_size]
            embeddings = F.normalize(
                self.model.encode_text(tokenize(chunk, self.max_words).to(self.device)).float(), dim=-1
            )
            self._texts.update(zip(chunk, embeddings, strict=True))
        return torch.stack([self._texts[text] for text in texts])

    @torch.no_grad()
    def encode_image(self, rgb: np.ndarray) -> torch.Tensor:
        """`[1, D]` normalised embedding of a query image (CLIP preprocessing)."""
        pixels = preprocess_frames(rgb[None], self.resolution, self.device).to(self.model.dtype)
        return F.normalize(self.model.encode_image(pixels).float(), dim=-1)

    @torch.no_grad()
    def encode_frames(self, pixels: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
        """Raw CLIP frame features `[N, D]` float32 for preprocessed `[N, 3, R, R]` frames."""
        chunks = [
            self.model.encode_image(pixels[start : start + batch_size].to(self.device, self.model.dtype)).float()
            for start in range(0, len(pixels), batch_size)
        ]
        return torch.cat(chunks)

    @torch.no_grad()
    def frame_scores(self, query: torch.Tensor, features: np.ndarray) -> np.ndarray:
        """Cosine of the query with each frame's head output (CLIP frames for meanP), `[n]`."""
        frames = torch.as_tensor(features, device=self.device).unsqueeze(0)
        mask = torch.ones(frames.shape[:2], device=self.device)
        outputs = F.normalize(self.head.frame_outputs(frames, mask)[0], dim=-1)
        return (outputs @ query.to(self.device)).cpu().numpy()


# ---------------------------------------------------------------- finding videos


def index_home() -> Path:
    """Where per-folder indexes live: `$CLIPCLI_INDEX_HOME`, else `$XDG_DATA_HOME/clipcli/indexes`."""
    if os.environ.get("CLIPCLI_INDEX_HOME"):
        return Path(os.environ["CLIPCLI_INDEX_HOME"]).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or os.path.join("~", ".local", "share")
    return Path(data).expanduser() / "clipcli" / "indexes"


def default_index_dir(root: Path) -> Path:
    """The index folder for a folder (or file) searched without --index: its name plus a hash of its path."""
    absolute = os.path.abspath(root)
    digest = hashlib.sha1(os.fsencode(absolute)).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.basename(absolute) or "root")[:40]
    return index_home() / f"{name}-{digest}"


def walk_videos(root: Path) -> list[Path]:
    """Video files under `root` (by extension, case-insensitive), sorted, absolute.

    Follows symlinks but never enters a directory twice, so symlink loops end;
    skips hidden directories (names starting with "."). A file root is itself.
    """
    root = Path(os.path.abspath(root))
    if not root.is_dir():
        return [root]
    found: list[Path] = []
    visited: set[tuple[int, int]] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        try:
            stat = os.stat(folder)
        except OSError:
            dirs[:] = []
            continue
        if (stat.st_dev, stat.st_ino) in visited:
            dirs[:] = []
            continue
        visited.add((stat.st_dev, stat.st_ino))
        dirs[:] = sorted(name for name in dirs if not name.startswith("."))
        found += [Path(folder) / name for name in files if os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS]
    return sorted(found)


def check_roots(items: Sequence[str | Path]) -> list[Path]:
    """Absolute folders/files, each of which must exist."""
    if not items:
        raise BadInputError("give at least one folder (or video file) to search")
    roots = []
    for item in items:
        path = Path(item).expanduser()
        if not path.exists():
            raise BadInputError("no such file or folder", path)
        roots.append(Path(os.path.abspath(path)))
    return list(dict.fromkeys(roots))


# ---------------------------------------------------------------- indexing


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
    return f"{path}: cannot decode ({type(err).__name__}: {str(err).strip().splitlines()[0][:200] if str(err) else ''})"


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


def _decoded_stream(
    paths: Sequence[Path], frames: int, sampling: str, resolution: int, workers: int
) -> Iterator[tuple[Path, DecodedVideo | BaseException]]:
    """Decoded videos in order, `workers` at a time ahead, so memory stays bounded."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clipcli-decode")
    pending: deque[tuple[Path, Future]] = deque()
    queue = iter(paths)
    try:
        for path in queue:
            pending.append((path, pool.submit(decode_video, path, frames, sampling, resolution)))
            if len(pending) >= 2 * workers:
                break
        while pending:
            path, future = pending.popleft()
            try:
                yield path, future.result()
            except _DECODE_ERRORS as err:
                yield path, err
            following = next(queue, None)
            if following is not None:
                pending.append((following, pool.submit(decode_video, following, frames, sampling, resolution)))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _embed(index, retriever, paths, summary, frames, sampling, batch_videos, workers) -> None:
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    batch: list[DecodedVideo] = []
    failures: list[Failure] = []
    stream = _decoded_stream(paths, frames, sampling, retriever.resolution, workers)
    with ui.progress() as bar, contextlib.closing(stream):
        task = bar.add_task(_progress_text(summary), total=len(paths))
        for path, decoded in stream:
            if isinstance(decoded, BaseException):
                message = _failure_message(path, decoded)
                ui.stderr.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
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


# ---------------------------------------------------------------- searching


@dataclass
class Hit:
    rank: int
    score: float  # cosine similarity of the query and the video embedding
    path: Path
    duration: float
    segment: dict | None = None

    def as_dict(self) -> dict:
        row = {
            "rank": self.rank,
            "score": round(self.score, 6),
            "path": str(self.path),
            "duration": round(self.duration, 3),
        }
        if self.segment is not None:
            row["segment"] = self.segment
        return row


def best_segment(scores: np.ndarray, timestamps: np.ndarray, duration: float) -> dict:
    """The best-matching time range: the run of frames around the best one scoring at least
    halfway between the best and the clip's mean, from midway to the frame before it to
    midway to the frame after it (the clip's ends for the first and last frames)."""
    scores, timestamps = np.asarray(scores, np.float64), np.asarray(timestamps, np.float64)
    peak = int(np.argmax(scores))
    threshold = (scores[peak] + scores.mean()) / 2
    low = high = peak
    while low > 0 and scores[low - 1] >= threshold:
        low -= 1
    while high < len(scores) - 1 and scores[high + 1] >= threshold:
        high += 1
    start = 0.0 if low == 0 else (timestamps[low - 1] + timestamps[low]) / 2
    end = max(duration, timestamps[-1]) if high == len(scores) - 1 else (timestamps[high] + timestamps[high + 1]) / 2
    return {
        "start": round(float(start), 3),
        "end": round(float(end), 3),
        "peak": round(float(timestamps[peak]), 3),
        "peak_score": round(float(scores[peak]), 6),
    }


def rank_videos(query: torch.Tensor, matrix: np.ndarray, top_k: int) -> tuple[list, list]:
    """Exact top-k by one matrix product on the CPU: (row indices, cosine scores), best first.

    `matrix` is the fp16 `[N, D]` snapshot in host memory. The search stays on
    the CPU even with a GPU: moving the matrix there costs more than the
    product (1M videos, H100: 118 ms on CUDA against 30 ms here). Converting
    N x D halves to floats also costs more than the product, so the fp16
    product (fp32 accumulation) picks the candidates within 2e-3 of the k-th
    score (its rounding error is about 5e-4) and those are re-scored in fp32:
    the same top-k as an fp32 product.
    """
    if len(matrix) == 0:
        return [], []
    top_k = min(top_k, len(matrix))
    with warnings.catch_warnings():  # a memory-mapped snapshot is read-only; it is only read here
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        videos = torch.from_numpy(matrix)
    query = query.detach().cpu().float()
    try:
        rough = (videos @ query.half()).float()
    except RuntimeError:  # a torch without CPU half matmul
        rough = videos.float() @ query
    threshold = torch.topk(rough, top_k).values[-1] - 2e-3
    candidates = (rough >= threshold).nonzero().flatten()
    best = torch.topk(videos[candidates].float() @ query, top_k)
    return candidates[best.indices].tolist(), best.values.tolist()


def rank_videos_ann(query: torch.Tensor, part: Matrix, approximate: AnnIndex, top_k: int) -> tuple[list, list] | None:
    """Top-k by the approximate index, re-scored exactly: (row indices of `part`, fp32 cosines), best first.

    `part` is (a selection of) the snapshot `approximate` indexes. None when
    the lists it scanned held fewer than `top_k` of the part's videos.
    """
    top_k = min(top_k, len(part))
    query = query.detach().cpu().float()
    rows = approximate.search(query.numpy(), top_k, part.rows)
    if len(rows) < top_k:
        return None
    positions = rows if part.rows is None else np.searchsorted(part.rows, rows)
    scores = torch.from_numpy(part.embeddings[positions]).float() @ query
    best = torch.topk(scores, top_k)
    return positions[best.indices.numpy()].tolist(), best.values.tolist()


def check_ann(mode: str) -> None:
    """A valid `--ann`, and faiss for `--ann on`."""
    if mode not in ann.MODES:
        raise BadInputError(f"--ann {mode!r}: expected one of {', '.join(ann.MODES)}")
    if mode == "on":
        ann.require_faiss()


def use_ann(mode: str, videos: int, threshold: int = ann.DEFAULT_THRESHOLD) -> bool:
    """Whether to search `videos` videos approximately: `--ann on`, or `auto` above the threshold with faiss."""
    check_ann(mode)
    return mode == "on" or (mode == "auto" and videos > threshold and ann.available())


def search(
    groups: Sequence[tuple[VideoIndex, Sequence[Path]]],
    retriever: Retriever,
    query: torch.Tensor,
    top_k: int = 10,
    segments: bool = False,
    *,
    ann_mode: str = "auto",
    ann_threshold: int = ann.DEFAULT_THRESHOLD,
) -> list[Hit]:
    """The top-k videos under the groups' roots for a normalised query embedding `[D]`.

    Exact, unless `use_ann(ann_mode, videos, ann_threshold)` says so for an
    index's videos: then its approximate index picks the candidates, and their
    scores are exact all the same.
    """
    owners, parts, seen = [], [], set()
    for index, roots in groups:
        found = index.matrix(roots)
        if len(groups) > 1:  # the roots of two default indexes may overlap: keep each video once
            fresh = [row for row, key in enumerate(found.keys) if key not in seen]
            seen.update(found.keys)
            if len(fresh) < len(found):
                found = found.take(fresh)
        if len(found):
            owners.append(index)
            parts.append(found)
    ranked = []  # (score, part, row)
    for number, (index, part) in enumerate(zip(owners, parts, strict=True)):
        if part.embeddings.shape[1] != query.shape[-1]:
            raise BadInputError(
                f"the index holds {part.embeddings.shape[1]}-d embeddings but the model makes {query.shape[-1]}-d "
                "ones; rerun with --reindex"
            )
        found = None
        if use_ann(ann_mode, len(part), ann_threshold):
            found = rank_videos_ann(query, part, index.ann(on_build=ui.notice), top_k)
        if found is None:
            found = rank_videos(query, part.embeddings, top_k)
        ranked += [(score, number, row) for row, score in zip(*found, strict=True)]
    ranked.sort(key=lambda item: -item[0])
    hits = []
    for rank, (score, number, row) in enumerate(ranked[:top_k], start=1):
        path = parts[number].path(row)
        stored = owners[number].frames(path)
        hit = Hit(rank, float(score), path, stored.duration)
        if segments:
            hit.segment = best_segment(
                retriever.frame_scores(query, stored.features), stored.timestamps, stored.duration
            )
        hits.append(hit)
    return hits


# ---------------------------------------------------------------- the command


@dataclass
class RetrieveResult:
    hits: list[Hit]
    summaries: list[UpdateSummary]


def check_options(top_k: int, frames: int, sampling: str) -> None:
    if top_k < 1:
        raise BadInputError(f"--top-k must be at least 1, got {top_k}")
    if frames < 1:
        raise BadInputError(f"--frames must be at least 1, got {frames}")
    if sampling not in SAMPLINGS:
        raise BadInputError(f"--sampling {sampling!r}: expected one of {', '.join(SAMPLINGS)}")


def index_groups(roots: Sequence[Path], index_dir: Path | None) -> list[tuple[Path, list[Path]]]:
    """(index folder, roots it covers): one shared --index, else one default index per root."""
    if index_dir is not None:
        return [(Path(index_dir).expanduser(), list(roots))]
    return [(default_index_dir(root), [root]) for root in roots]


def open_indexes(
    retriever: Retriever,
    groups: Sequence[tuple[Path, list[Path]]],
    *,
    frames: int,
    sampling: str,
    update: bool,
    reindex: bool = False,
) -> tuple[list[tuple[VideoIndex, list[Path]]], list[UpdateSummary]]:
    """Open (and unless `update` is false, refresh) each group's index; `reindex` rebuilds a damaged one."""
    opened, summaries = [], []
    try:
        for folder, roots in groups:
            damage = discard_if_damaged(folder, on_wait=ui.notice) if update and reindex else None
            index = VideoIndex(folder, create=update)
            opened.append((index, roots))
            if damage is not None:
                ui.notice(f"{index.db_path}: the index was damaged ({damage}); building it afresh")
            if update:
                files = list(dict.fromkeys(path for root in roots for path in walk_videos(root)))
                summaries.append(
                    update_index(
                        index, retriever, files, roots=roots, frames=frames, sampling=sampling, reindex=reindex
                    )
                )
            elif index.identity != retriever.identity(frames, sampling):
                raise BadInputError(
                    f"index was built with another model or --frames/--sampling ({index.identity}); "
                    "rerun without --no-update to re-embed",
                    folder,
                )
    except BaseException:
        for index, _ in opened:
            index.close()
        raise
    return opened, summaries


def run(
    items: Sequence[str | Path],
    query: str | None = None,
    image: Path | None = None,
    *,
    top_k: int = 10,
    frames: int = DEFAULT_FRAMES,
    sampling: str = "uniform",
    model_name: str = "ViT-B/32",
    checkpoint: Path | None = None,
    index_dir: Path | None = None,
    update: bool = True,
    reindex: bool = False,
    segments: bool = False,
    device: str = "auto",
    trust_checkpoint: bool = False,
    ann_mode: str = "auto",
) -> RetrieveResult:
    """Update the indexes of `items` (folders or videos) and return the top-k videos for the query."""
    check_options(top_k, frames, sampling)
    check_ann(ann_mode)
    if (query is None) == (image is None):
        raise BadInputError("give a text QUERY or --image QUERY.jpg (one of them)")
    if query is not None and not query.strip():
        raise BadInputError("the query is empty")
    roots = check_roots(items)
    picture = load_image(image) if image is not None else None
    retriever = Retriever.load(model_name, checkpoint, device, trust_checkpoint=trust_checkpoint)
    embedding = retriever.encode_image(picture)[0] if picture is not None else retriever.encode_text([query])[0]
    opened, summaries = open_indexes(
        retriever, index_groups(roots, index_dir), frames=frames, sampling=sampling, update=update, reindex=reindex
    )
    try:
        hits = search(opened, retriever, embedding, top_k, segments, ann_mode=ann_mode)
    finally:
        for index, _ in opened:
            index.close()
    return RetrieveResult(hits, summaries)


# ---------------------------------------------------------------- evaluation


def retrieval_metrics(similarity: np.ndarray, targets: np.ndarray) -> dict:
    """Text-to-video R@1/5/10 (%), MdR and MnR from a `[texts, videos]` similarity matrix.

    `targets[i]` is the column of text i's video. A text's rank is the number
    of videos scoring strictly higher than its own (0 = first), as CLIP4Clip's
    `compute_metrics` finds it (which, on exact ties, counts every tied place).
    """
    similarity = np.asarray(similarity, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if similarity.ndim != 2 or len(targets) != len(similarity) or len(targets) == 0:
        raise BadInputError(f"need a [texts, videos] matrix and one target per text, got {similarity.shape}")
    own = similarity[np.arange(len(targets)), targets]
    ranks = (similarity > own[:, None]).sum(axis=1)
    return {
        "R@1": float(np.mean(ranks < 1) * 100),
        "R@5": float(np.mean(ranks < 5) * 100),
        "R@10": float(np.mean(ranks < 10) * 100),
        "MdR": float(np.median(ranks) + 1),
        "MnR": float(np.mean(ranks) + 1),
        "queries": len(ranks),
    }


def read_pairs(csv_path: Path) -> list[tuple[str, str]]:
    """(video_id, sentence) rows of an MSR-VTT-style CSV (columns `video_id` and `sentence`)."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"video_id", "sentence"} <= set(reader.fieldnames):
                raise BadInputError(f"needs video_id and sentence columns, has {reader.fieldnames}", csv_path)
            pairs = [(row["video_id"].strip(), row["sentence"].strip()) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise BadInputError(f"unreadable CSV ({err})", csv_path) from None
    if not pairs:
        raise BadInputError("has no rows", csv_path)
    return pairs


def find_videos(videos_dir: Path, ids: Sequence[str]) -> dict[str, Path]:
    """Each id's file, `VIDEOS_DIR/**/ID.<video extension>`; an id two files share is refused."""
    if not videos_dir.is_dir():
        raise BadInputError("not a folder", videos_dir)
    by_stem: dict[str, list[Path]] = {}
    for path in walk_videos(videos_dir):
        by_stem.setdefault(path.stem, []).append(path)
    missing = [video_id for video_id in dict.fromkeys(ids) if video_id not in by_stem]
    if missing:
        raise BadInputError(f"{len(missing)} video(s) of the CSV are not in the folder (e.g. {missing[0]})", videos_dir)
    for video_id in dict.fromkeys(ids):
        if len(by_stem[video_id]) > 1:
            first, second = by_stem[video_id][:2]
            raise BadInputError(f"{first} and {second} both have the id {video_id}; keep one")
    return {video_id: by_stem[video_id][0] for video_id in ids}


def evaluate(
    csv_path: Path,
    videos_dir: Path,
    *,
    frames: int = DEFAULT_FRAMES,
    sampling: str = "uniform",
    model_name: str = "ViT-B/32",
    checkpoint: Path | None = None,
    index_dir: Path | None = None,
    device: str = "auto",
    trust_checkpoint: bool = False,
) -> dict:
    """Text-to-video metrics for a CSV of (video_id, sentence) over the videos in a folder.

    The CSV's videos are indexed (incrementally, in the folder's index), every
    sentence is ranked against all of them, and videos that fail to decode are
    left out with their sentences (reported as `failed`).
    """
    check_options(1, frames, sampling)
    pairs = read_pairs(csv_path)
    videos = find_videos(videos_dir, [video_id for video_id, _ in pairs])
    retriever = Retriever.load(model_name, checkpoint, device, trust_checkpoint=trust_checkpoint)
    folder = Path(index_dir).expanduser() if index_dir is not None else default_index_dir(videos_dir)
    with VideoIndex(folder) as index:
        files = list(dict.fromkeys(Path(os.path.abspath(path)) for path in videos.values()))
        summary = update_index(index, retriever, files, frames=frames, sampling=sampling)
        matrix = index.matrix(files)
    paths = matrix.paths
    column = {path: position for position, path in enumerate(paths)}
    kept = [(video_id, sentence) for video_id, sentence in pairs if Path(os.path.abspath(videos[video_id])) in column]
    if not kept:
        raise BadInputError("no video of the CSV could be indexed", videos_dir)
    texts = retriever.encode_text([sentence for _, sentence in kept]).cpu().numpy()
    similarity = texts @ matrix.embeddings.astype(np.float32).T
    targets = np.array([column[Path(os.path.abspath(videos[video_id]))] for video_id, _ in kept])
    return {
        "csv": str(csv_path),
        "videos": len(paths),
        "sentences": len(pairs),
        "evaluated": len(kept),
        "head": retriever.head.kind,
        "frames": frames,
        "sampling": sampling,
        "text_to_video": retrieval_metrics(similarity, targets),
        "index": summary.as_dict(),
        "failed": [{"path": path, "error": error} for path, error in summary.failed],
        "paper_msrvtt_1ka": PAPER_MSRVTT,
    }


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


def raise_for_eval(report: dict) -> None:
    """Exit 4 when some of the CSV's videos failed to index (their sentences were left out)."""
    if report["index"]["failed"]:
        raise PartialFailure(report["index"]["failed"], report["index"]["videos"])
