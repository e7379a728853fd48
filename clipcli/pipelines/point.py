"""PointCLIP V2 (default) and PointCLIP: zero-shot point-cloud classification with CLIP.

A cloud is rendered into depth images from several views (`clipcli.render.
projection`), each view goes through CLIP's image encoder, and the per-view
features, L2-normalised and weighted, are matched against class prompts:

    logit_k = scale * sum_v w_v cos(f_v, t_k) / sqrt(V)

which is the official `concat(w_v f_v / |f_v|) . repeat(t_k, V) / |repeat(t_k, V)|`.
V1 uses CLIP's `logit_scale.exp()` as its scale, V2 a fixed 100, as their code
does. Facts: docs/methods/point.md.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, partial
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from clipcli import ui
from clipcli.batch import OutputNames, run_batch
from clipcli.errors import BadInputError
from clipcli.media.h5clouds import H5_EXTENSIONS, is_h5, read_h5_clouds
from clipcli.media.images import write_png
from clipcli.media.labels import packaged_lines, read_labels
from clipcli.media.points import SUPPORTED_POINT_EXTENSIONS, load_points
from clipcli.models import load_clip
from clipcli.models.prompts import text_classifier
from clipcli.pipelines.point_prep import CloudOptions, check_cloud, prepare_clouds
from clipcli.render.contact_sheet import contact_sheet
from clipcli.render.projection import num_views, project_v1, project_v2, to_clip_images, view_names

PROJECTIONS = ("v2", "v1")
DEFAULT_MODELS = {"v2": "ViT-B/16", "v1": "RN50"}  # the backbones of the papers' headline zero-shot numbers
V1_TEMPLATE = "point cloud depth map of a {}."  # trainers/zeroshot.py
# clipcli's generic stand-ins for V2's per-class searched sentences, for any label set: the V1
# template and sentence shapes that recur among the searched ones, averaged (CLIP's ensembling).
V2_TEMPLATES = (
    "point cloud depth map of a {}.",
    "a depth map of a {}.",
    "This is a depth map of a 3D model of a {}.",
    "a grayscale depth map of a {}.",
    "an obscure grayscale depth map of a {} model.",
    "a 3D model of a {} composed of gray, fuzzy balls.",
    "a {} rendered in grayscale on a white background.",
)
V2_LOGIT_SCALE = 100.0
LABEL_SETS = {"modelnet40": "modelnet40_labels.txt", "scanobjectnn": "scanobjectnn_labels.txt"}
SEARCHED_FILE = "pointclip_v2_searched.json"  # per-class prompts and view weights from V2's best_param.py
BACKBONES = {"vit_b16": "ViT-B/16", "vit_b32": "ViT-B/32", "rn50": "RN50", "rn101": "RN101"}
# Zero-shot top-1 (%) on the full test sets, with the searched prompts and view weights (V2) or
# plain zero-shot (V1): PointCLIP_V2 zeroshot_cls/README.md; PointCLIP paper (RN50).
PAPER_ACCURACY = {
    ("v2", "modelnet40", "rn50"): 39.38,
    ("v2", "modelnet40", "rn101"): 46.31,
    ("v2", "modelnet40", "vit_b32"): 55.14,
    ("v2", "modelnet40", "vit_b16"): 64.26,
    ("v2", "scanobjectnn", "rn50"): 35.32,
    ("v2", "scanobjectnn", "rn101"): 29.84,
    ("v2", "scanobjectnn", "vit_b32"): 36.36,
    ("v2", "scanobjectnn", "vit_b16"): 35.66,
    ("v1", "modelnet40", "rn50"): 20.18,
}
CLOUD_BATCH = 32  # clouds per CLIP pass (x 10 views)
MESH_SAMPLES = 10_000  # surface points drawn from a mesh before subsampling
INPUT_EXTENSIONS = (*SUPPORTED_POINT_EXTENSIONS, *H5_EXTENSIONS)


# ---------------------------------------------------------------- labels


def load_label_set(name: str) -> list[str]:
    """A shipped label set in the official label order."""
    return list(packaged_lines(LABEL_SETS[name]))


def parse_labels(spec: str) -> list[str]:
    """`--labels`: modelnet40, scanobjectnn, a label file, or `a,b,c` -> the labels (as `classify` takes them)."""
    return read_labels(spec, {name: partial(load_label_set, name) for name in LABEL_SETS}).names


def dataset_of(labels: Sequence[str]) -> str | None:
    """Which shipped set `labels` is, in the official order (the searched prompts are per class, in order)."""
    return next((name for name in LABEL_SETS if list(labels) == load_label_set(name)), None)


# ---------------------------------------------------------------- prompts and view weights


@cache
def _searched() -> dict:
    return json.loads(resources.files("clipcli.data").joinpath(SEARCHED_FILE).read_text(encoding="utf-8"))


def backbone_key(model) -> str | None:
    """`vit_b16`, `vit_b32`, `rn50` or `rn101` when `model` has that architecture, else None."""
    visual = model.visual
    if hasattr(visual, "transformer"):
        patch, width = visual.conv1.kernel_size[0], visual.conv1.out_channels
        layers = len(visual.transformer.resblocks)
        return {(16, 768, 12): "vit_b16", (32, 768, 12): "vit_b32"}.get((patch, width, layers))
    depths = tuple(len(getattr(visual, f"layer{i}")) for i in range(1, 5))
    width = visual.conv1.out_channels * 2
    resnets: dict[tuple[tuple[int, ...], int], str] = {((3, 4, 6, 3), 64): "rn50", ((3, 4, 23, 3), 64): "rn101"}
    return resnets.get((depths, width))


def _paper_backbone(spec: str, model, option: str) -> str:
    """The backbone named by `paper:KEY`, or the model's own for plain `paper`."""
    key = spec.partition(":")[2] or backbone_key(model)
    if key not in BACKBONES:
        known = ", ".join(f"paper:{k} ({name})" for k, name in BACKBONES.items())
        found = f"{key!r}" if spec.partition(":")[2] else "this model's architecture"
        raise BadInputError(f"{option} {spec}: searched values exist only for {known}; not for {found}")
    return key


def _paper_dataset(labels: Sequence[str], option: str) -> str:
    dataset = dataset_of(labels)
    if dataset is None:
        raise BadInputError(f"{option} paper: PointCLIP V2 searched them only for --labels {' and '.join(LABEL_SETS)}")
    return dataset


def class_prompts(labels: Sequence[str], projection: str, prompts: str = "template", model=None) -> list[list[str]]:
    """Prompts per class for `--prompts template|paper|paper:BACKBONE|'custom {} text'`.

    `template`: V1's "point cloud depth map of a {}." (V1), or the averaged
    V2_TEMPLATES (V2). `paper`: V1's template (V1), or V2's one searched
    sentence per class (ModelNet40/ScanObjectNN only; tuned on the test sets).
    """
    names = [label.replace("_", " ") for label in labels]
    if prompts == "template" or (prompts == "paper" and projection == "v1"):
        templates = (V1_TEMPLATE,) if projection == "v1" else V2_TEMPLATES
        return [[template.format(name) for template in templates] for name in names]
    if prompts.startswith("paper"):
        if projection == "v1":
            raise BadInputError(f"--prompts {prompts}: PointCLIP V1 has a single template; use --prompts paper")
        dataset = _paper_dataset(labels, "--prompts")
        return [
            [sentence] for sentence in _searched()["prompts"][dataset][_paper_backbone(prompts, model, "--prompts")]
        ]
    if "{}" in prompts:
        return [[prompts.replace("{}", name)] for name in names]
    raise BadInputError(f"--prompts {prompts!r}: use template, paper, paper:BACKBONE, or a sentence with {{}}")


def view_weights(spec: str, projection: str, labels: Sequence[str] = (), model=None) -> list[float]:
    """`--view-weights uniform|paper|paper:BACKBONE|w1,...,wV` -> one weight per view."""
    views = num_views(projection)
    if spec == "uniform":
        return [1.0] * views
    if spec.startswith("paper"):
        if projection == "v1":
            raise BadInputError(
                "--view-weights paper: PointCLIP V1 ships no searched view weights (ZrrSkywalker/PointCLIP#20); "
                "give them as numbers"
            )
        dataset = _paper_dataset(labels, "--view-weights")
        return list(_searched()["view_weights"][dataset][_paper_backbone(spec, model, "--view-weights")])
    try:
        weights = [float(part) for part in spec.split(",")]
    except ValueError:
        raise BadInputError(
            f"--view-weights {spec!r}: use uniform, paper, or {views} comma-separated numbers"
        ) from None
    if len(weights) != views or not all(math.isfinite(w) and w >= 0 for w in weights) or not any(weights):
        raise BadInputError(f"--view-weights {spec!r}: {projection} has {views} views; give {views} weights >= 0")
    return weights


# ---------------------------------------------------------------- the method


def project(points: torch.Tensor, projection: str) -> torch.Tensor:
    """`[B,N,3]` -> the projection's depth maps `[B,V,h,w]`."""
    if projection == "v2":
        return project_v2(points)
    if projection == "v1":
        return project_v1(points, "zero-shot")
    raise BadInputError(f"--projection {projection!r}: choose one of {', '.join(PROJECTIONS)}")


@torch.no_grad()
def encode_views(model, maps: torch.Tensor) -> torch.Tensor:
    """Depth maps `[B,V,h,w]` -> L2-normalised CLIP image features `[B,V,D]` (float32).

    The maps are resized to the model's input size and fed raw, with no
    CLIP mean/std normalisation, as both official codes do.
    """
    dtype = next(model.parameters()).dtype
    images = to_clip_images(maps, model.visual.input_resolution).to(dtype)
    features = model.encode_image(images).float()
    features = features / features.norm(dim=-1, keepdim=True)
    return features.view(maps.shape[0], maps.shape[1], -1)


def zero_shot_logits(features: torch.Tensor, text: torch.Tensor, weights: torch.Tensor, scale: float) -> torch.Tensor:
    """`[B,V,D]` normalised view features, `[D,C]` normalised class embeddings, `[V]` weights -> `[B,C]`."""
    weighted = features * weights.to(features)[None, :, None]
    return scale * torch.einsum("bvd,dc->bc", weighted, text.to(features)) / math.sqrt(features.shape[1])


@dataclass
class ZeroShotClassifier:
    """CLIP, a projection, the class embeddings and view weights: clouds in, logits out."""

    model: object
    projection: str
    labels: list[str]
    text: torch.Tensor  # [D, C], L2-normalised columns
    weights: torch.Tensor  # [V]
    scale: float

    @classmethod
    def build(
        cls, model, labels: Sequence[str], projection: str = "v2", prompts: str = "template", weights: str = "uniform"
    ) -> ZeroShotClassifier:
        if projection not in PROJECTIONS:
            raise BadInputError(f"--projection {projection!r}: choose one of {', '.join(PROJECTIONS)}")
        text = text_classifier(model, class_prompts(labels, projection, prompts, model)).float()
        scale = float(model.logit_scale.detach().exp()) if projection == "v1" else V2_LOGIT_SCALE
        view_weight = torch.tensor(view_weights(weights, projection, labels, model))
        return cls(model, projection, list(labels), text, view_weight, scale)

    @torch.no_grad()
    def __call__(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`[B,N,3]` prepared clouds -> (logits `[B,C]`, depth maps `[B,V,h,w]`)."""
        maps = project(points, self.projection)
        return zero_shot_logits(encode_views(self.model, maps), self.text, self.weights, self.scale), maps


# ---------------------------------------------------------------- files in, predictions out


@dataclass
class Cloud:
    """One cloud to classify: where it came from, its points, its label index in an HDF5 set."""

    source: Path
    name: str
    points: np.ndarray
    index: int | None = None
    label: int | None = None


def read_clouds(path: Path, h5_index: int | None = None, seed: int = 0) -> list[Cloud]:
    """The clouds in one input file (one, or every shape of an HDF5 set), checked."""
    if is_h5(path):
        data, labels = read_h5_clouds(path, h5_index)
        first = h5_index or 0
        clouds = []
        for offset, points in enumerate(data):
            index = first + offset
            check_cloud(points, f"{path}[{index}]")
            label = None if labels is None else int(labels[offset])
            clouds.append(Cloud(path, f"{path}[{index}]", points, index, label))
        return clouds
    return [Cloud(path, str(path), check_cloud(load_points(path, mesh_samples=MESH_SAMPLES, seed=seed), path))]


def _classify_batch(classifier: ZeroShotClassifier, batch: Sequence[Cloud], options: CloudOptions, on_batch) -> None:
    """Prepare, project and score one batch; `on_batch(clouds, logits on the CPU, maps)` gets the results."""
    points = prepare_clouds([cloud.points for cloud in batch], options, classifier.text.device)
    logits, maps = classifier(points)
    on_batch(batch, logits.cpu(), maps)


def _stream(classifier, paths: Sequence[Path], h5_index: int | None, options: CloudOptions, on_batch):
    """Read the inputs one by one (a bad one is reported and skipped), classifying CLOUD_BATCH clouds at a time.

    Only a batch and one file's clouds are held at once. Returns the per-file
    read results and the names of the clouds each file gave.
    """
    pending: list[Cloud] = []
    names: dict[str, list[str]] = {}

    def classify_pending(at_least: int) -> None:
        while len(pending) >= at_least and pending:
            batch = pending[:CLOUD_BATCH]
            del pending[:CLOUD_BATCH]
            _classify_batch(classifier, batch, options, on_batch)

    def read(path: Path) -> dict:
        found = read_clouds(path, h5_index, options.seed)
        names[str(path)] = [cloud.name for cloud in found]
        pending.extend(found)
        classify_pending(CLOUD_BATCH)
        return {"clouds": len(found)}

    results = run_batch(paths, read, description=f"PointCLIP {classifier.projection}")
    classify_pending(1)
    return results, names


def _read_all(paths: Sequence[Path], seed: int) -> tuple[list[dict], list[Cloud]]:
    """Read every input (a bad one is reported and skipped); the read results and all clouds."""
    clouds: list[Cloud] = []

    def read(path: Path) -> dict:
        found = read_clouds(path, None, seed)
        clouds.extend(found)
        return {"clouds": len(found)}

    return run_batch(paths, read, description="reading clouds"), clouds


def _predict(classifier: ZeroShotClassifier, clouds: Sequence[Cloud], options: CloudOptions, on_batch) -> None:
    """Classify clouds CLOUD_BATCH at a time, with a progress bar over clouds."""
    with ui.progress() as bar:
        task = bar.add_task(f"PointCLIP {classifier.projection}", total=len(clouds))
        for start in range(0, len(clouds), CLOUD_BATCH):
            _classify_batch(classifier, clouds[start : start + CLOUD_BATCH], options, on_batch)
            bar.advance(task, min(CLOUD_BATCH, len(clouds) - start))


def views_picture(maps: torch.Tensor, projection: str) -> np.ndarray:
    """One cloud's maps `[V,h,w]` -> a captioned RGB grid of the views as CLIP sees them, in two rows.

    V1 depth maps (0 = background, farther = brighter) are divided by their
    largest depth so they can be shown.
    """
    images = to_clip_images(maps[None].float().cpu(), 224)[:, 0]
    if projection == "v1":
        images = images / images.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
    names = [f"{i + 1}: {name}" for i, name in enumerate(view_names(projection))]
    return contact_sheet(images.numpy(), columns=-(-len(images) // 2), captions=names)


def output_names(out: Path) -> OutputNames:
    """NAME_views.png in `out` (NAME_NNNN_views.png for shape N of an HDF5 set), the --save-views pictures."""
    return OutputNames(out, ("{}_views.png",))


def views_path(cloud: Cloud, out: Path) -> Path:
    suffix = "" if cloud.index is None else f"_{cloud.index:04d}"
    [path] = output_names(out).for_stem(f"{cloud.source.stem}{suffix}")
    return path


def _setup(model_name: str | None, projection: str, labels, prompts, weights, options, device, trust_checkpoint):
    """Check every option (before the slow model load), then load CLIP and build the classifier."""
    options.check()
    if projection not in PROJECTIONS:
        raise BadInputError(f"--projection {projection!r}: choose one of {', '.join(PROJECTIONS)}")
    for spec, option in ((prompts, "--prompts"), (weights, "--view-weights")):
        if spec.startswith("paper:"):
            _paper_backbone(spec, None, option)
        if spec.startswith("paper") and projection == "v2":
            _paper_dataset(labels, option)
    if projection == "v1" or not weights.startswith("paper"):
        view_weights(weights, projection)
    if not prompts.startswith("paper"):
        class_prompts(labels, projection, prompts)
    model, _ = load_clip(model_name or DEFAULT_MODELS[projection], device, trust_checkpoint=trust_checkpoint)
    return ZeroShotClassifier.build(model, labels, projection, prompts, weights)


def classify(
    paths: Sequence[Path],
    *,
    labels: Sequence[str],
    projection: str = "v2",
    model_name: str | None = None,
    prompts: str = "template",
    weights: str = "uniform",
    options: CloudOptions = CloudOptions(),
    top_k: int = 5,
    h5_index: int | None = None,
    save_views: bool = False,
    out: Path = Path("."),
    device: str = "auto",
    trust_checkpoint: bool = False,
) -> list[dict]:
    """Top-k labels per cloud; one result per cloud (an HDF5 file gives one per shape), failures included."""
    if top_k < 1:
        raise BadInputError(f"--top-k must be at least 1, got {top_k}")
    if save_views:
        output_names(out).check(paths)
    classifier = _setup(model_name, projection, labels, prompts, weights, options, device, trust_checkpoint)
    predictions: dict[str, dict] = {}

    def record(batch: list[Cloud], logits: torch.Tensor, maps: torch.Tensor) -> None:
        probabilities = logits.softmax(dim=-1)
        top = probabilities.topk(min(top_k, len(classifier.labels)), dim=-1)
        for row, cloud in enumerate(batch):
            result = {"input": cloud.name, "status": "ok", "points": len(cloud.points)}
            result["predictions"] = [
                {"label": classifier.labels[int(i)], "probability": round(float(p), 6)}
                for p, i in zip(top.values[row], top.indices[row], strict=True)
            ]
            if cloud.label is not None:
                result["label"] = _label_name(cloud.label, classifier.labels)
            if save_views:
                result["views"] = str(views_path(cloud, out))
                write_png(views_path(cloud, out), views_picture(maps[row], projection))
            predictions[cloud.name] = result

    read_results, names = _stream(classifier, paths, h5_index, options, record)
    results = []
    for read in read_results:  # keep input order; each file expands into its clouds
        results += [predictions[name] for name in names[read["input"]]] if read["status"] == "ok" else [read]
    return results


def _label_name(label: int, labels: Sequence[str]) -> str:
    return labels[label] if 0 <= label < len(labels) else f"#{label}"


# ---------------------------------------------------------------- accuracy on HDF5 test sets


def evaluate(
    paths: Sequence[Path],
    *,
    labels: Sequence[str],
    projection: str = "v2",
    model_name: str | None = None,
    prompts: str = "template",
    weights: str = "uniform",
    options: CloudOptions = CloudOptions(sampling="first", normalize=False),
    device: str = "auto",
    trust_checkpoint: bool = False,
) -> dict:
    """Top-1/top-5 and class-mean accuracy over ModelNet40/ScanObjectNN-format HDF5 files.

    By default clouds are used as the official code uses them: the first
    1024 stored points, no re-normalisation (the sets are already in the unit
    sphere and y-up).
    """
    not_h5 = [path for path in paths if not is_h5(path)]
    if not_h5:
        raise BadInputError("point-eval reads HDF5 sets (.h5) with 'data' and 'label' arrays", not_h5[0])
    classifier = _setup(model_name, projection, labels, prompts, weights, options, device, trust_checkpoint)
    read_results, clouds = _read_all(paths, options.seed)
    unlabelled = sorted({str(c.source) for c in clouds if c.label is None})
    if unlabelled:
        raise BadInputError("no 'label' array, so there is nothing to score against", unlabelled[0])
    too_high = [c for c in clouds if c.label not in range(len(labels))]
    if too_high:
        raise BadInputError(f"label {too_high[0].label} is outside the {len(labels)} --labels", too_high[0].name)
    truth: list[int | None] = []  # every cloud's label, all present by now
    ranked: list[torch.Tensor] = []

    def record(batch: list[Cloud], logits: torch.Tensor, maps: torch.Tensor) -> None:
        truth.extend(cloud.label for cloud in batch)
        ranked.append(logits.topk(min(5, len(labels)), dim=-1).indices)

    _predict(classifier, clouds, options, record)
    report = accuracy_report(torch.tensor(truth, dtype=torch.long), torch.cat(ranked) if ranked else None, labels)
    backbone = backbone_key(classifier.model)
    dataset = dataset_of(labels)
    paper = PAPER_ACCURACY.get((projection, dataset, backbone)) if dataset and backbone else None
    settings = {"projection": projection, "prompts": prompts, "view_weights": weights, "backbone": backbone}
    return {**report, "paper_top1": paper, "settings": settings, "files": read_results}


def accuracy_report(truth: torch.Tensor, ranked: torch.Tensor | None, labels: Sequence[str]) -> dict:
    """Overall top-1/top-5 and class-mean accuracy (%) from true labels `[S]` and ranked predictions `[S,k]`."""
    if ranked is None or len(truth) == 0:
        return {"shapes": 0, "top1": None, "top5": None, "class_mean": None, "per_class": {}}
    hit1 = ranked[:, 0] == truth
    hit5 = (ranked == truth[:, None]).any(dim=1)
    counts = torch.bincount(truth, minlength=len(labels))
    correct = torch.bincount(truth, weights=hit1.double(), minlength=len(labels))
    present = counts > 0
    per_class = {labels[i]: round(100 * float(correct[i] / counts[i]), 2) for i in present.nonzero().flatten().tolist()}
    return {
        "shapes": len(truth),
        "top1": round(100 * float(hit1.double().mean()), 2),
        "top5": round(100 * float(hit5.double().mean()), 2),
        "class_mean": round(100 * float((correct[present] / counts[present]).mean()), 2),
        "per_class": per_class,
    }
