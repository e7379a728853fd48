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

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipcli.batch import OutputNames
from clipcli.errors import BadInputError, ParameterError
from clipcli.media.h5clouds import H5_EXTENSIONS, H5Shapes, check_shape_index, h5_labels, is_h5
from clipcli.media.images import write_png
from clipcli.media.points import SUPPORTED_POINT_EXTENSIONS, load_points
from clipcli.models import load_clip
from clipcli.models.prompts import text_classifier
from clipcli.pipelines.point_prep import CloudOptions, check_cloud, prepare_clouds
from clipcli.pipelines.point_prompts import (
    backbone_key,
    class_prompts,
    dataset_of,
    paper_backbone,
    paper_dataset,
    view_weights,
)
from clipcli.render.contact_sheet import contact_sheet
from clipcli.render.projection import project_v1, project_v2, to_clip_images, view_names
from clipcli.runner import Executor, Job, Report, run_job

PROJECTIONS = ("v2", "v1")
DEFAULT_MODELS = {"v2": "ViT-B/16", "v1": "RN50"}  # the backbones of the papers' headline zero-shot numbers
V2_LOGIT_SCALE = 100.0
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


# ---------------------------------------------------------------- the method


def project(points: torch.Tensor, projection: str) -> torch.Tensor:
    """`[B,N,3]` -> the projection's depth maps `[B,V,h,w]`."""
    if projection == "v2":
        return project_v2(points)
    if projection == "v1":
        return project_v1(points, "zero-shot")
    raise ParameterError("projection", f"{projection!r}: choose one of {', '.join(PROJECTIONS)}")


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
            raise ParameterError("projection", f"{projection!r}: choose one of {', '.join(PROJECTIONS)}")
        text = text_classifier(model, class_prompts(labels, projection, prompts, model)).float()
        scale = float(model.logit_scale.detach().exp()) if projection == "v1" else V2_LOGIT_SCALE
        view_weight = torch.tensor(view_weights(weights, projection, labels, model))
        return cls(model, projection, list(labels), text, view_weight, scale)

    @torch.no_grad()
    def __call__(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`[B,N,3]` prepared clouds -> (logits `[B,C]`, depth maps `[B,V,h,w]`)."""
        maps = project(points, self.projection)
        return zero_shot_logits(encode_views(self.model, maps), self.text, self.weights, self.scale), maps


# ---------------------------------------------------------------- clouds in, predictions out


@dataclass(frozen=True)
class CloudSource:
    """Where one cloud comes from: a file, or shape `index` of an HDF5 set (with its label, if the set has them).

    `error` says why an HDF5 file's shapes could not be listed; reading the source raises it.
    """

    file: Path
    index: int | None = None
    label: int | None = None
    error: str | None = None

    @property
    def name(self) -> Path:
        """The input its result names: the file, or `FILE[index]` for a shape of a set."""
        return self.file if self.index is None else Path(f"{self.file}[{self.index}]")


def cloud_sources(paths: Sequence[Path], h5_index: int | None = None) -> list[CloudSource]:
    """The clouds the input files hold, in order: each file, or every shape of an HDF5 set (only `h5_index`)."""
    return [source for path in paths for source in _sources_of(path, h5_index)]


def _sources_of(path: Path, h5_index: int | None) -> list[CloudSource]:
    if not is_h5(path):
        return [CloudSource(path)]
    try:
        count, labels = h5_labels(path)
        if h5_index is not None:
            check_shape_index(h5_index, count, path)
    except BadInputError as err:
        return [CloudSource(path, error=str(err))]
    indices = range(count) if h5_index is None else [h5_index]
    return [CloudSource(path, index, None if labels is None else int(labels[index])) for index in indices]


def read_cloud(path: Path, seed: int = 0) -> np.ndarray:
    """A point-cloud or mesh file's points, checked (a mesh gives MESH_SAMPLES points of its surface, seeded)."""
    return check_cloud(load_points(path, mesh_samples=MESH_SAMPLES, seed=seed), path)


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


def views_path(source: CloudSource, out: Path) -> Path:
    suffix = "" if source.index is None else f"_{source.index:04d}"
    [path] = output_names(out).for_stem(f"{source.file.stem}{suffix}")
    return path


def check_settings(labels: Sequence[str], projection: str, prompts: str, weights: str, options: CloudOptions) -> None:
    """Every setting checked, so a bad one stops the command before the slow model load."""
    options.check()
    if projection not in PROJECTIONS:
        raise ParameterError("projection", f"{projection!r}: choose one of {', '.join(PROJECTIONS)}")
    for spec, parameter in ((prompts, "prompts"), (weights, "weights")):
        if spec.startswith("paper:"):
            paper_backbone(spec, None, parameter)
        if spec.startswith("paper") and projection == "v2":
            paper_dataset(labels, parameter)
    if projection == "v1" or not weights.startswith("paper"):
        view_weights(weights, projection)
    if projection == "v1" or not prompts.startswith("paper"):
        class_prompts(labels, projection, prompts)


@dataclass
class PointJob(Job, ABC):
    """PointCLIP on clouds: read and checked on threads, then prepared, projected and scored a batch at a time."""

    sources: dict[Path, CloudSource]  # by input name
    labels: list[str]
    projection: str = "v2"
    model_name: str | None = None
    prompts: str = "template"
    weights: str = "uniform"
    options: CloudOptions = CloudOptions()
    device: str = "auto"
    trust_checkpoint: bool = False
    batch_size: int = CLOUD_BATCH
    sets: H5Shapes = field(default_factory=H5Shapes)
    read_workers = 2

    def setup(self) -> None:
        model_name = self.model_name or DEFAULT_MODELS[self.projection]
        model, _ = load_clip(model_name, self.device, trust_checkpoint=self.trust_checkpoint)
        self._classifier = ZeroShotClassifier.build(model, self.labels, self.projection, self.prompts, self.weights)

    def read(self, path: Path) -> np.ndarray:
        source = self.sources[path]
        if source.error is not None:
            raise BadInputError(source.error)
        if source.index is None:
            return read_cloud(source.file, self.options.seed)
        return check_cloud(self.sets.shape(source.file, source.index), path)

    def compute_batch(self, items: Sequence[tuple[Path, np.ndarray]]) -> list[Any]:
        if not items:
            return []
        points = prepare_clouds([cloud for _, cloud in items], self.options, self._classifier.text.device)
        logits, maps = self._classifier(points)
        return self.outcomes(items, logits.cpu(), maps)

    @abstractmethod
    def outcomes(self, items: Sequence[tuple[Path, np.ndarray]], logits: torch.Tensor, maps: torch.Tensor) -> list:
        """One outcome per cloud of a batch from its logits `[B,C]` (on the CPU) and depth maps `[B,V,h,w]`."""

    def summary(self) -> dict:
        model = self.model_name or DEFAULT_MODELS[self.projection]
        return {"model": model, "projection": self.projection, "prompts": self.prompts, "view_weights": self.weights}

    def label_name(self, path: Path) -> str | None:
        """The true label of an HDF5 shape, by name (`#N` when outside the labels), else None."""
        label = self.sources[path].label
        if label is None:
            return None
        return self.labels[label] if 0 <= label < len(self.labels) else f"#{label}"


@dataclass
class PointClassifyJob(PointJob):
    """Top-k labels per cloud, and with `views_out` the views as CLIP sees them, written there."""

    top_k: int = 5
    views_out: Path | None = None
    name = "point-classify"

    def outcomes(
        self, items: Sequence[tuple[Path, np.ndarray]], logits: torch.Tensor, maps: torch.Tensor
    ) -> list[tuple[dict, np.ndarray | None]]:
        top = logits.softmax(dim=-1).topk(min(self.top_k, len(self.labels)), dim=-1)
        outcomes = []
        for row, (path, cloud) in enumerate(items):
            data: dict[str, Any] = {"points": len(cloud)}
            data["predictions"] = [
                {"label": self.labels[int(i)], "probability": round(float(p), 6)}
                for p, i in zip(top.values[row], top.indices[row], strict=True)
            ]
            if (label := self.label_name(path)) is not None:
                data["label"] = label
            picture = None if self.views_out is None else views_picture(maps[row], self.projection)
            outcomes.append((data, picture))
        return outcomes

    def write(self, path: Path, outcome: tuple[dict, np.ndarray | None]) -> dict:
        data, picture = outcome
        if picture is None or self.views_out is None:
            return data
        picture_path = views_path(self.sources[path], self.views_out)
        write_png(picture_path, picture)
        return data | {"views": str(picture_path)}


@dataclass
class PointEvalJob(PointJob):
    """The five best labels of each labelled shape, for accuracy; nothing is written."""

    name = "point-eval"

    def outcomes(
        self, items: Sequence[tuple[Path, np.ndarray]], logits: torch.Tensor, maps: torch.Tensor
    ) -> list[tuple[dict, str | None]]:
        ranked = logits.topk(min(5, len(self.labels)), dim=-1).indices
        backbone = backbone_key(self._classifier.model)
        return [
            ({"label": self.label_name(path), "predictions": [self.labels[int(i)] for i in ranked[row]]}, backbone)
            for row, (path, _) in enumerate(items)
        ]

    def write(self, path: Path, outcome: tuple[dict, str | None]) -> dict:
        data, self._backbone = outcome  # the model is where `compute` ran; the summary names its architecture
        return data


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
    executor: Executor | None = None,
) -> Report:
    """Top-k labels per cloud; one result per cloud (an HDF5 file gives one per shape), failures included."""
    if top_k < 1:
        raise ParameterError("top_k", f"must be at least 1, got {top_k}")
    check_settings(labels, projection, prompts, weights, options)
    if save_views:
        output_names(out).check(paths)
    sources = cloud_sources(paths, h5_index)
    job = PointClassifyJob(
        {source.name: source for source in sources},
        list(labels),
        projection=projection,
        model_name=model_name,
        prompts=prompts,
        weights=weights,
        options=options,
        device=device,
        trust_checkpoint=trust_checkpoint,
        batch_size=CLOUD_BATCH,
        top_k=top_k,
        views_out=out if save_views else None,
    )
    return run_job(job, [source.name for source in sources], executor=executor)


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
    executor: Executor | None = None,
) -> Report:
    """Top-1/top-5 and class-mean accuracy over ModelNet40/ScanObjectNN-format HDF5 files; one result per shape.

    By default clouds are used as the official code uses them: the first
    1024 stored points, no re-normalisation (the sets are already in the unit
    sphere and y-up). Sets without labels, or with labels beyond `labels`,
    stop the run before the model loads.
    """
    not_h5 = [path for path in paths if not is_h5(path)]
    if not_h5:
        raise BadInputError("point-eval reads HDF5 sets (.h5) with 'data' and 'label' arrays", not_h5[0])
    check_settings(labels, projection, prompts, weights, options)
    sources = cloud_sources(paths)
    _check_scorable(sources, labels)
    job = PointEvalJob(
        {source.name: source for source in sources},
        list(labels),
        projection=projection,
        model_name=model_name,
        prompts=prompts,
        weights=weights,
        options=options,
        device=device,
        trust_checkpoint=trust_checkpoint,
        batch_size=CLOUD_BATCH,
    )
    report = run_job(job, [source.name for source in sources], executor=executor)
    scored = [result.data for result in report.ok]
    position = {label: index for index, label in enumerate(labels)}
    truth = torch.tensor([position[row["label"]] for row in scored], dtype=torch.long)
    ranked = torch.tensor([[position[name] for name in row["predictions"]] for row in scored]) if scored else None
    backbone = getattr(job, "_backbone", None)
    dataset = dataset_of(labels)
    paper = PAPER_ACCURACY.get((projection, dataset, backbone)) if dataset and backbone else None
    settings = {"projection": projection, "prompts": prompts, "view_weights": weights, "backbone": backbone}
    report.summary = {**accuracy_report(truth, ranked, labels), "paper_top1": paper, "settings": settings}
    return report


def _check_scorable(sources: Sequence[CloudSource], labels: Sequence[str]) -> None:
    """Refuse sets with no labels, or labels beyond `labels`: their accuracy would mean nothing."""
    listed = [source for source in sources if source.error is None]
    unlabelled = [source for source in listed if source.label is None]
    if unlabelled:
        raise BadInputError("no 'label' array, so there is nothing to score against", unlabelled[0].file)
    beyond = [source for source in listed if source.label not in range(len(labels))]
    if beyond:
        raise BadInputError(f"label {beyond[0].label} is outside the {len(labels)} labels", beyond[0].name)


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
