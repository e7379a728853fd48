"""`clipcli retrieve-eval`: text-to-video R@K, MdR and MnR on a CSV of captions, as CLIP4Clip measures them."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from clipcli.errors import BadInputError
from clipcli.pipelines.retrieve.command import check_options
from clipcli.pipelines.retrieve.files import default_index_dir, find_videos
from clipcli.pipelines.retrieve.indexing import DEFAULT_FRAMES, update_index
from clipcli.pipelines.retrieve.model import Retriever
from clipcli.runner import Executor, Report
from clipcli.store.index import VideoIndex

PAPER_MSRVTT = {  # text-to-video on MSR-VTT 1k-A, ViT-B/32 (docs/methods/retrieve.md)
    "meanP (9k)": {"R@1": 43.1, "R@5": 70.4, "R@10": 80.8, "MnR": 16.2},
    "seqTransf (9k)": {"R@1": 44.5, "R@5": 71.4, "R@10": 81.6},
    "zero-shot CLIP-straight": {"R@1": 31.2, "R@5": 53.7, "R@10": 64.2, "MdR": 4.0},
}


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
    executor: Executor | None = None,
) -> Report:
    """Text-to-video metrics for a CSV of (video_id, sentence) over the videos in a folder.

    The CSV's videos are indexed (incrementally, in the folder's index; with
    `executor`, embedded where it runs them), every sentence is ranked against
    all of them, and videos that fail to decode are left out with their
    sentences (failed rows of the report). The metrics are in its summary.
    """
    check_options(1, frames, sampling)
    pairs = read_pairs(csv_path)
    videos = find_videos(videos_dir, [video_id for video_id, _ in pairs])
    retriever = Retriever.load(model_name, checkpoint, device, trust_checkpoint=trust_checkpoint)
    folder = Path(index_dir).expanduser() if index_dir is not None else default_index_dir(videos_dir)
    with VideoIndex(folder) as index:
        files = list(dict.fromkeys(Path(os.path.abspath(path)) for path in videos.values()))
        summary = update_index(index, retriever, files, frames=frames, sampling=sampling, executor=executor)
        matrix = index.matrix(files)
    paths = matrix.paths
    column = {path: position for position, path in enumerate(paths)}
    kept = [(video_id, sentence) for video_id, sentence in pairs if Path(os.path.abspath(videos[video_id])) in column]
    if not kept:
        raise BadInputError("no video of the CSV could be indexed", videos_dir)
    texts = retriever.encode_text([sentence for _, sentence in kept]).cpu().numpy()
    similarity = texts @ matrix.embeddings.astype(np.float32).T
    targets = np.array([column[Path(os.path.abspath(videos[video_id]))] for video_id, _ in kept])
    return Report(
        "retrieve-eval",
        summary.results,
        {
            "csv": str(csv_path),
            "videos": len(paths),
            "sentences": len(pairs),
            "evaluated": len(kept),
            "head": retriever.head.kind,
            "frames": frames,
            "sampling": sampling,
            "text_to_video": retrieval_metrics(similarity, targets),
            "index": summary.as_dict(),
            "paper_msrvtt_1ka": PAPER_MSRVTT,
        },
    )
