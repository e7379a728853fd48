"""ActionCLIP evaluation: top-1, top-5 and mean class accuracy over a labelled list of videos.

The protocol is the official single-view test (sallymmx/ActionCLIP test.py
`validate` over datasets/datasets.py `Action_DATASETS` with
`random_shift=False`): T segment-centre frames per video, one centre crop, the
16 prompt templates, and a hit when the true class is the best (top-1) or among
the five best (top-5) of the template-averaged probabilities. Videos are
classified exactly as `classify-action` does (clipcli.pipelines.action), a few
videos per forward pass.

Two list formats are read, one entry a line:
- `VIDEO LABEL`: a video file (or a folder of frames) and its class, as an index
  into `--labels` or a class name (any case; `_` for spaces; UCF101 CamelCase);
- the official lists (lists/k4001/val_frames_re.txt): `PATH FRAMES LABEL`, where
  PATH is a folder of `img_00001.jpg`... frames (TSN extraction) holding FRAMES
  frames, or a video file (its own frame count is used).
Relative paths are taken from `--root`, else from the list file's folder.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipcli.errors import BadInputError
from clipcli.media.frame_indices import sample_indices
from clipcli.media.images import load_image
from clipcli.media.sampling import sample_video
from clipcli.pipelines import action, action_text
from clipcli.pipelines.point_prompts import backbone_key
from clipcli.runner import Executor, Job, Report, run_job

FRAME_TEMPLATE = "img_{:05d}.jpg"  # configs/*/*.yaml image_tmpl, with index_bias 1
FRAME_INDEX_BIAS = 1
VIDEOS_PER_PASS = 8
TOP_K = 5
ARCHITECTURES = {"vit_b32": "ViT-B/32", "vit_b16": "ViT-B/16"}

README = "sallymmx/ActionCLIP README.md, Pretrained Models (single view, Kinetics-400-trained Transf head)"
ZERO_SHOT_SOURCE = (
    "X-CLIP (Ni et al. 2022) Table 3, its re-implementation of ActionCLIP-meanP trained on Kinetics-400 "
    "(microsoft/VideoX#63); the ActionCLIP paper gives zero-shot results only as a plot (Figure 3)"
)
# (label set, architecture, frames): (top-1, top-5); top-5 None where the table has none.
FINE_TUNED = {
    ("kinetics400", "ViT-B/32", 8): (78.36, 94.25),
    ("kinetics400", "ViT-B/16", 8): (81.09, 95.49),
    ("kinetics400", "ViT-B/16", 16): (81.68, 95.87),
    ("kinetics400", "ViT-B/16", 32): (82.32, 96.20),
    ("hmdb51", "ViT-B/16", 32): (76.2, None),
    ("ucf101", "ViT-B/16", 32): (97.1, None),
}
ZERO_SHOT = {("hmdb51", "ViT-B/16"): 40.8, ("ucf101", "ViT-B/16"): 58.3}


@dataclass(frozen=True)
class Entry:
    """One line of the list: where the video is, its class index, and (official lists) its frame count."""

    line: int
    source: Path
    label: int
    frame_count: int | None = None


# ---------------------------------------------------------------- the list


def read_list(path: Path, labels: Sequence[str], root: Path | None = None) -> list[Entry]:
    """Every entry of a list file, in order; a line that cannot be read is a usage error naming it."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise BadInputError("no such list file", path) from None
    except (OSError, UnicodeDecodeError) as err:
        raise BadInputError(f"cannot read the list ({err})", path) from None
    base = root if root is not None else Path(path).parent
    classes = _class_index(labels)
    entries: list[Entry] = []
    first_lines: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        entry = _parse_line(line.strip(), number, base, classes, len(labels), path)
        first = first_lines.setdefault(os.path.realpath(entry.source), number)
        if first != number:
            raise BadInputError(f"line {number}: {entry.source} is listed twice (line {first} too)", path)
        entries.append(entry)
    if not entries:
        raise BadInputError("no videos in the list (one 'VIDEO LABEL' per line)", path)
    return entries


def _parse_line(line: str, number: int, base: Path, classes: dict[str, int], count: int, path: Path) -> Entry:
    fields = line.split()
    if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
        source, frames, label = fields[0], int(fields[1]), fields[2]
    elif len(fields) >= 2:
        source, frames, label = fields[0], None, line[len(fields[0]) :].strip()
    else:
        raise BadInputError(f"line {number}: expected 'VIDEO LABEL' or 'FRAMES_FOLDER FRAMES LABEL'", path)
    if frames == 0:
        raise BadInputError(f"line {number}: a frame folder of 0 frames", path)
    return Entry(number, base / source, _label_index(label, number, classes, count, path), frames)


def _label_index(label: str, number: int, classes: dict[str, int], count: int, path: Path) -> int:
    if label.isdigit():
        if int(label) >= count:
            raise BadInputError(f"line {number}: class {label} is outside the {count} --labels (0-{count - 1})", path)
        return int(label)
    index = classes.get(label_key(label))
    if index is None:
        raise BadInputError(f"line {number}: label {label!r} is not in --labels", path)
    return index


def label_key(name: str) -> str:
    """How a list's class name is matched: 'ApplyEyeMakeup', 'apply_eye_makeup' and 'Apply Eye Makeup' alike."""
    return " ".join(action_text.split_camel_case(name).replace("_", " ").lower().split())


def _class_index(labels: Sequence[str]) -> dict[str, int]:
    """Matching keys to class indices; a key two labels share matches neither (the index is then needed)."""
    keys = [label_key(name) for name in labels]
    shared = {key for key, count in Counter(keys).items() if count > 1}
    return {key: index for index, key in enumerate(keys) if key not in shared}


# ---------------------------------------------------------------- reading


def read_clip(entry: Entry, num_frames: int) -> np.ndarray:
    """`[T,H,W,3]` uint8 frames of the entry at the official test positions (segment centres)."""
    try:
        if entry.source.is_dir():
            return read_frame_folder(entry.source, num_frames, entry.frame_count)
        return sample_video(entry.source, num_frames, action.SAMPLING).frames
    except OSError as err:
        raise BadInputError(f"cannot read it ({err.strerror or err})", entry.source) from None


def read_frame_folder(folder: Path, num_frames: int, frame_count: int | None) -> np.ndarray:
    """A TSN frame folder's frames at the segment centres; its count from the list, else the files there."""
    if frame_count is None:
        frame_count = sum(1 for _ in folder.glob(FRAME_TEMPLATE.replace("{:05d}", "[0-9]" * 5)))
        if frame_count == 0:
            raise BadInputError(f"no {FRAME_TEMPLATE.format(1)}... frames in the folder", folder)
    indices = sample_indices(frame_count, num_frames, action.SAMPLING) + FRAME_INDEX_BIAS
    frames = []
    for index in indices:
        frame_path = folder / FRAME_TEMPLATE.format(index)
        if not frame_path.is_file():
            raise BadInputError(f"missing frame {frame_path.name} (the list says {frame_count} frames)", folder)
        frames.append(load_image(frame_path))
    if len({frame.shape for frame in frames}) > 1:
        raise BadInputError("frames of different sizes", folder)
    return np.stack(frames)


# ---------------------------------------------------------------- classifying


@dataclass
class ActionEvalJob(Job):
    """Each listed video's top-5 classes: clips decoded ahead on threads, classified a few per forward pass."""

    entries: dict[Path, Entry]
    labels: list[str]
    model_name: str | None = None
    checkpoint: Path | None = None
    frames: int | None = None
    device: str = "auto"
    trust_checkpoint: bool = False
    name = "action-eval"
    batch_size = VIDEOS_PER_PASS

    def __post_init__(self) -> None:
        self.read_workers = action.decode_workers(len(self.entries))

    def setup(self) -> None:
        self._classifier = action.load_classifier(
            self.labels, model_name=self.model_name, checkpoint=self.checkpoint, frames=self.frames,
            device=self.device, trust_checkpoint=self.trust_checkpoint,
        )  # fmt: skip

    def read(self, path: Path) -> np.ndarray:
        return read_clip(self.entries[path], self._classifier.num_frames)

    def compute_batch(self, items: Sequence[tuple[Path, np.ndarray]]) -> list[tuple[dict, dict]]:
        probabilities = action.classify_clips(self._classifier, [clip for _, clip in items])
        facts = self._model_facts()
        return [
            (self._scored(self.entries[path], row), facts) for (path, _), row in zip(items, probabilities, strict=True)
        ]

    def _scored(self, entry: Entry, probabilities: np.ndarray) -> dict:
        top = np.argsort(-probabilities, kind="stable")[:TOP_K]
        return {
            "line": entry.line,
            "label": self.labels[entry.label],
            "class": entry.label,
            "top_classes": top.tolist(),
            "predictions": action.top_predictions(probabilities, self.labels, TOP_K),
        }

    def write(self, path: Path, outcome: tuple[dict, dict]) -> dict:
        row, self._facts = outcome  # the model is where `compute` ran (an actor on a cluster), not always here
        return row

    def summary(self) -> dict:
        """The model's facts, for the report and for finding the published figures; None when nothing was scored."""
        return getattr(self, "_facts", dict.fromkeys(("architecture", "head", "frames")))

    def _model_facts(self) -> dict:
        classifier = self._classifier
        return {
            "architecture": ARCHITECTURES.get(backbone_key(classifier.model) or ""),
            "head": classifier.fusion.kind,
            "frames": classifier.num_frames,
        }


# ---------------------------------------------------------------- scores


def accuracy(truth: Sequence[int], ranked: Sequence[Sequence[int]]) -> dict:
    """Top-1, top-5 and mean class accuracy (%), the last over the classes present, as test.py counts hits."""
    if len(truth) == 0:
        return {"top1": None, "top5": None, "mean_class": None}
    true = np.asarray(truth)
    hit1 = np.array([row[0] == label for row, label in zip(ranked, true, strict=True)])
    hit5 = np.array([label in row[:TOP_K] for row, label in zip(ranked, true, strict=True)])
    per_class = [hit1[true == label].mean() for label in np.unique(true)]
    return {
        "top1": 100 * float(hit1.mean()),
        "top5": 100 * float(hit5.mean()),
        "mean_class": 100 * float(np.mean(per_class)),
    }


def dataset_of(source: str, labels: Sequence[str]) -> str | None:
    """The shipped label set `--labels` names or holds (a file of exactly its classes counts too)."""
    if source in action_text.LABEL_SETS:
        return source
    keys = [label_key(name) for name in labels]
    for name in action_text.LABEL_SETS:
        if keys == [label_key(label) for label in action_text.load_label_set(name)]:
            return name
    return None


def published(dataset: str | None, architecture: str | None, frames: int) -> dict:
    """The published figures for this label set, architecture and frame count; None where there is none."""
    known = dataset is not None and architecture is not None
    fine_tuned = FINE_TUNED.get((dataset, architecture, frames)) if known else None  # type: ignore[arg-type]
    zero_shot = ZERO_SHOT.get((dataset, architecture)) if known else None  # type: ignore[arg-type]
    return {
        "fine_tuned": None if fine_tuned is None else {"top1": fine_tuned[0], "top5": fine_tuned[1]},
        "zero_shot": None if zero_shot is None else {"top1": zero_shot, "top5": None},
        "source": f"fine-tuned: {README}; zero-shot: {ZERO_SHOT_SOURCE}",
    }


def evaluate(
    list_file: Path,
    *,
    labels: str = "kinetics400",
    root: Path | None = None,
    limit: int | None = None,
    model_name: str | None = None,
    checkpoint: Path | None = None,
    frames: int | None = None,
    device: str = "auto",
    trust_checkpoint: bool = False,
    executor: Executor | None = None,
) -> Report:
    """Accuracy over the list's first `limit` entries (all by default), beside the published figures.

    The list is read and checked before any model loads; unreadable videos are
    failed results, left out of the scores.
    """
    if limit is not None and limit < 1:
        raise BadInputError(f"--limit must be at least 1, got {limit}")
    if root is not None and not root.is_dir():
        raise BadInputError("is not a folder (--root)", root)
    source, names = action.parse_labels(labels)
    entries = read_list(list_file, names, root)[:limit]
    job = ActionEvalJob(
        {entry.source: entry for entry in entries},
        names,
        model_name=model_name,
        checkpoint=checkpoint,
        frames=frames,
        device=device,
        trust_checkpoint=trust_checkpoint,
    )
    report = run_job(job, [entry.source for entry in entries], executor=executor)
    for result in report.failed:
        result.data["line"] = job.entries[Path(result.input)].line
    scored = [result.data for result in report.ok]
    model = report.summary
    dataset = dataset_of(source, names)
    report.summary = {
        "list": str(list_file),
        "labels": source,
        "classes": len(names),
        "dataset": dataset,
        **model,
        "videos": len(scored),
        **accuracy([row["class"] for row in scored], [row["top_classes"] for row in scored]),
        "published": published(dataset, model["architecture"], model["frames"]),
    }
    return report
