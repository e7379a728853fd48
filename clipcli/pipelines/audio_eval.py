"""Zero-shot AudioCLIP accuracy on ESC-50 and UrbanSound8K, as the official code evaluates it.

Facts from AndreyGuzhov/AudioCLIP: the clips of a test fold come from the
metadata CSV (utils/datasets/esc50.py `ESC50.load_data`, us8k.py
`UrbanSound8K.load_data`); ESC-50 is read mono at 44.1 kHz times 32768 and
centre-padded or centre-cropped to 220500 samples (protocols/audioclip-esc50.json,
utils/transforms.py `RandomPadding`/`RandomCrop` with `train=False`); UrbanSound8K
keeps stereo (a mono file is duplicated), is cut to its first 4 s and min-max
rescaled to [-32768, 32767] per clip (us8k.py `_load_worker`, `mono: false`).
Class names are the metadata's with `_` turned into a space, scored bare (no
prompt) by softmax over `clamp(exp(logit_scale_at), 1, 100) * cos`
(ignite_trainer/_trainer.py `eval_step`). Each fold is one official run
(`--Dataset.args.fold N`); the published figure is the mean of the folds'
accuracies, so "overall" here is that mean, each fold weighing the same.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from clipcli.errors import BadInputError
from clipcli.media.audio import load_audio, load_channels
from clipcli.models.audio_tower import SAMPLE_RATE
from clipcli.models.audioclip import AudioCLIP
from clipcli.models.weights import resolve_weights
from clipcli.pipelines.audio import DEFAULT_CHECKPOINT, INT16_SCALE, encode_texts, load_audioclip, zero_shot_scores
from clipcli.runner import Executor, Job, Report, run_job

ESC50_LENGTH = 220500  # 5 s at 44.1 kHz (protocols/audioclip-esc50.json)
US8K_LENGTH = 176400  # 4 s at 44.1 kHz (protocols/audioclip-us8k.json, us8k.py's cut)
TOP_K = 5
PUBLISHED = {
    "esc50": {"top1": 69.40},
    "us8k": {"top1": 68.78},
}
PUBLISHED_SOURCE = "AudioCLIP (Guzhov et al. 2021, arXiv:2106.13043), zero-shot, abstract and README"


@dataclass(frozen=True)
class Layout:
    """Where a dataset keeps its metadata and clips, and which CSV columns say what."""

    name: str
    title: str
    metadata: str
    file_column: str
    class_column: str
    name_column: str
    fold_folders: bool  # audio/foldN/NAME rather than audio/NAME

    def clip_path(self, root: Path, filename: str, fold: int) -> Path:
        return root / "audio" / f"fold{fold}" / filename if self.fold_folders else root / "audio" / filename


LAYOUTS = {
    "esc50": Layout("esc50", "ESC-50", "meta/esc50.csv", "filename", "target", "category", False),
    "us8k": Layout("us8k", "UrbanSound8K", "metadata/UrbanSound8K.csv", "slice_file_name", "classID", "class", True),
}


@dataclass(frozen=True)
class Clip:
    path: Path
    fold: int
    target: int  # the class's position in `EvalSet.labels`


@dataclass
class EvalSet:
    """A dataset as its metadata lists it: class names in class-id order and every clip, in CSV order."""

    layout: Layout
    root: Path
    labels: list[str]
    clips: list[Clip]

    @property
    def folds(self) -> list[int]:
        return sorted({clip.fold for clip in self.clips})


# ---------------------------------------------------------------- the datasets


def detect_dataset(root: Path) -> str:
    """`esc50` or `us8k`, from which metadata file the root holds."""
    found = [name for name, layout in LAYOUTS.items() if (root / layout.metadata).is_file()]
    if len(found) != 1:
        wanted = " or ".join(f"{layout.metadata} ({layout.title})" for layout in LAYOUTS.values())
        held = "both" if found else "neither"
        raise BadInputError(f"needs {wanted}; it has {held} (use --dataset)", root)
    return found[0]


def read_dataset(root: Path, dataset: str = "auto") -> EvalSet:
    """The dataset at `root` in its official layout (`dataset`: esc50, us8k or auto)."""
    if not root.is_dir():
        raise BadInputError("no such folder" if not root.exists() else "not a folder", root)
    if dataset not in (*LAYOUTS, "auto"):
        raise BadInputError(f"--dataset {dataset!r}: expected esc50, us8k or auto")
    layout = LAYOUTS[detect_dataset(root) if dataset == "auto" else dataset]
    csv_path = root / layout.metadata
    rows = _metadata_rows(csv_path, layout)
    names: dict[int, str] = {}
    paths: set[Path] = set()
    for row in rows:
        if names.setdefault(row.class_id, row.name) != row.name:
            known = names[row.class_id]
            raise BadInputError(
                f"line {row.line}: class {row.class_id} is {row.name!r} here, {known!r} before", csv_path
            )
        path = layout.clip_path(root, row.file, row.fold)
        if path in paths:
            raise BadInputError(f"line {row.line}: {row.file} is listed twice", csv_path)
        paths.add(path)
    class_ids = sorted(names)
    position = {class_id: index for index, class_id in enumerate(class_ids)}
    clips = [Clip(layout.clip_path(root, row.file, row.fold), row.fold, position[row.class_id]) for row in rows]
    return EvalSet(layout, root, [names[class_id] for class_id in class_ids], clips)


class MetadataRow(NamedTuple):
    line: int
    file: str
    fold: int
    class_id: int
    name: str  # with `_` as spaces, as the official loaders give it to the model


def _metadata_rows(csv_path: Path, layout: Layout) -> list[MetadataRow]:
    """Every row of the metadata CSV, checked for the columns the evaluation reads."""
    if not csv_path.is_file():
        raise BadInputError("no such file" if not csv_path.exists() else "not a file", csv_path)
    try:
        with open(csv_path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            table, header = list(reader), reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise BadInputError(f"cannot read the metadata ({err})", csv_path) from None
    needed = (layout.file_column, "fold", layout.class_column, layout.name_column)
    missing = [column for column in needed if column not in header]
    if missing:
        raise BadInputError(f"no {', '.join(missing)} column(s): not the {layout.title} metadata", csv_path)
    if not table:
        raise BadInputError("lists no clips", csv_path)
    rows = []
    for line, row in enumerate(table, 2):
        try:
            fold, class_id = int(row["fold"]), int(row[layout.class_column])
        except (TypeError, ValueError):
            raise BadInputError(f"line {line}: fold and {layout.class_column} must be integers", csv_path) from None
        name = (row[layout.name_column] or "").replace("_", " ").strip()
        filename = (row[layout.file_column] or "").strip()
        if not filename or not name:
            raise BadInputError(f"line {line}: empty {layout.file_column} or {layout.name_column}", csv_path)
        rows.append(MetadataRow(line, filename, fold, class_id, name))
    return rows


def parse_folds(text: str | None) -> list[int] | None:
    """`--folds 1,3` -> [1, 3]; None means every fold."""
    if text is None:
        return None
    try:
        folds = sorted({int(part) for part in text.split(",")})
    except ValueError:
        raise BadInputError(f"--folds {text!r}: expected comma-separated fold numbers") from None
    return folds


def select_clips(dataset: EvalSet, folds: Sequence[int] | None, limit: int | None) -> list[Clip]:
    """The clips of `folds`, fold by fold in CSV order, the first `limit` of them."""
    if folds is not None:
        absent = [fold for fold in folds if fold not in dataset.folds]
        if absent:
            held = ", ".join(map(str, dataset.folds))
            raise BadInputError(f"--folds: no fold {absent[0]} in {dataset.layout.metadata} (it has {held})")
    wanted = dataset.folds if folds is None else folds
    chosen = [clip for fold in wanted for clip in dataset.clips if clip.fold == fold]
    if limit is not None:
        if limit < 1:
            raise BadInputError(f"--limit {limit}: must be at least 1")
        chosen = chosen[:limit]
    return chosen


# ---------------------------------------------------------------- the official clip preparation


def pad_centre(wave: np.ndarray, length: int) -> np.ndarray:
    """`[C, T]` centred in `length` samples, filled with the channel mean of the first/last sample (RandomPadding)."""
    if wave.shape[-1] >= length:
        return wave
    left = int(round(0.5 * (length - wave.shape[-1])))
    right = length - left - wave.shape[-1]
    fill = [
        np.full((wave.shape[0], count), wave[:, edge].mean(), wave.dtype) for count, edge in ((left, 0), (right, -1))
    ]
    return np.concatenate([fill[0], wave, fill[1]], axis=-1)


def crop_centre(wave: np.ndarray, length: int) -> np.ndarray:
    """`[C, T]` cut to `length` at its centre, or at the head or tail when the centre is much quieter (RandomCrop)."""
    if wave.shape[-1] <= length:
        return wave
    left = int(round(0.5 * (wave.shape[-1] - length)))
    half_std = wave.std(ddof=1) * 0.5
    centre = wave[:, left : left + length]
    if centre.std(ddof=1) >= half_std:
        return centre
    head = wave[:, :length]
    if half_std > head.std(ddof=1) > centre.std(ddof=1):
        return wave[:, -length:]
    return head


def esc50_wave(path: Path) -> np.ndarray:
    """Mono `[1, 220500]` on the int16 scale, as the ESC-50 evaluation feeds it."""
    wave = load_audio(path, SAMPLE_RATE)[None] * np.float32(INT16_SCALE)
    return crop_centre(pad_centre(wave, ESC50_LENGTH), ESC50_LENGTH)


def us8k_wave(path: Path) -> np.ndarray:
    """Stereo `[2, 176400]`: the first 4 s, min-max rescaled to [-32768, 32767], as the UrbanSound8K evaluation."""
    wave = load_channels(path, SAMPLE_RATE)
    if wave.shape[0] == 1:
        wave = np.concatenate([wave, wave])
    if wave.shape[0] != 2:
        raise BadInputError(f"{wave.shape[0]} channels; UrbanSound8K clips are mono or stereo", path)
    wave = wave[:, :US8K_LENGTH]
    low, high = float(wave.min()), float(wave.max())
    if high == low:
        raise BadInputError("every sample is equal, so the official min-max rescale is undefined", path)
    rescaled = (wave.astype(np.float64) - low) * (32767.0 + 32768.0) / (high - low) - 32768.0
    return pad_centre(rescaled.astype(np.float32), US8K_LENGTH)


READERS = {"esc50": esc50_wave, "us8k": us8k_wave}


# ---------------------------------------------------------------- scoring


@torch.inference_mode()
def clip_scores(model: AudioCLIP, waves: Sequence[np.ndarray], label_features: torch.Tensor) -> torch.Tensor:
    """Softmax scores `[B, C]` of a batch of prepared clips over the labels."""
    features = model.encode_audio(torch.from_numpy(np.stack(waves))).float().cpu()
    return zero_shot_scores(features, label_features, model.logit_scale_at.detach().cpu())


def clip_record(clip: Clip, scores: torch.Tensor, labels: Sequence[str]) -> dict:
    """One clip's result: its fold, true label, top-5 labels and whether it was right at 1 and at 5."""
    ranked = scores.topk(min(TOP_K, len(labels))).indices.tolist()
    return {
        "fold": clip.fold,
        "label": labels[clip.target],
        "predicted": [labels[index] for index in ranked],
        "top1": ranked[0] == clip.target,
        "top5": clip.target in ranked,
    }


def accuracies(records: Sequence[dict], folds: Sequence[int]) -> tuple[list[dict], dict]:
    """Per-fold top-1/top-5 (%) over the clips scored, and their mean over the folds that have any."""
    per_fold = []
    for fold in folds:
        scored = [record for record in records if record["fold"] == fold]
        if scored:
            per_fold.append(
                {
                    "fold": fold,
                    "clips": len(scored),
                    **{key: 100.0 * sum(record[key] for record in scored) / len(scored) for key in ("top1", "top5")},
                }
            )
    overall = {
        "folds": len(per_fold),
        "clips": sum(fold["clips"] for fold in per_fold),
        **{key: float(np.mean([fold[key] for fold in per_fold])) if per_fold else None for key in ("top1", "top5")},
    }
    return per_fold, overall


# ---------------------------------------------------------------- the run


@dataclass
class AudioEvalJob(Job):
    """Each clip prepared as its dataset's official loader does, scored in batches against the class names."""

    dataset: str
    labels: list[str]
    clips: dict[Path, Clip]
    checkpoint: str = DEFAULT_CHECKPOINT
    device: str = "auto"
    trust_checkpoint: bool = False
    batch_size: int = 16
    name = "audio-eval"
    read_workers = 2

    def setup(self) -> None:
        self._model = load_audioclip(
            resolve_weights(self.checkpoint).resolve(), self.device, trust_checkpoint=self.trust_checkpoint
        )
        self._label_features = encode_texts(self._model, self.labels, LAYOUTS[self.dataset].metadata)

    def read(self, path: Path) -> np.ndarray:
        return READERS[self.dataset](path)

    def compute_batch(self, items: Sequence[tuple[Path, np.ndarray]]) -> list[dict]:
        scores = clip_scores(self._model, [wave for _, wave in items], self._label_features)
        return [clip_record(self.clips[path], row, self.labels) for (path, _), row in zip(items, scores, strict=True)]


def evaluate(
    root: Path,
    *,
    dataset: str = "auto",
    folds: Sequence[int] | None = None,
    limit: int | None = None,
    checkpoint: str = DEFAULT_CHECKPOINT,
    batch_size: int = 16,
    device: str = "auto",
    trust_checkpoint: bool = False,
    executor: Executor | None = None,
) -> Report:
    """Zero-shot top-1/top-5 per fold and overall, beside the published figure; one result per clip."""
    if batch_size < 1:
        raise BadInputError(f"--batch-size {batch_size}: must be at least 1")
    eval_set = read_dataset(root, dataset)
    clips = select_clips(eval_set, folds, limit)
    job = AudioEvalJob(
        eval_set.layout.name,
        eval_set.labels,
        {clip.path: clip for clip in clips},
        checkpoint=checkpoint,
        device=device,
        trust_checkpoint=trust_checkpoint,
        batch_size=batch_size,
    )
    report = run_job(job, [clip.path for clip in clips], executor=executor)
    for result, clip in zip(report.results, clips, strict=True):
        if result.status != "ok":
            result.data = {"fold": clip.fold}
    per_fold, overall = accuracies([result.data for result in report.ok], sorted({clip.fold for clip in clips}))
    report.summary = {
        "dataset": eval_set.layout.name,
        "root": str(root),
        "checkpoint": checkpoint,
        "labels": len(eval_set.labels),
        "clips": len(clips),
        "skipped": len(clips) - len(report.ok),
        "folds": per_fold,
        "overall": overall,
        "averaging": "mean of the per-fold accuracies, as the paper's cross-validation",
        "published": {**PUBLISHED[eval_set.layout.name], "source": PUBLISHED_SOURCE},
    }
    return report
