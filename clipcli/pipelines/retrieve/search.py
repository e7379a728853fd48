"""Ranking indexed videos for a query embedding: exact, or approximate then re-scored exactly."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clipcli import ui
from clipcli.errors import BadInputError, ParameterError
from clipcli.pipelines.retrieve.model import Retriever
from clipcli.store import ann
from clipcli.store.ann import AnnIndex
from clipcli.store.index import Matrix, VideoIndex


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
        raise ParameterError("ann_mode", f"{mode!r}: expected one of {', '.join(ann.MODES)}")
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
