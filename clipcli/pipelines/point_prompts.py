"""PointCLIP's text side: label sets, prompts per class, and the weight of each view.

V1 prompts with one template; V2 (zeroshot_cls/best_param.py) searched one
sentence per class and ten view weights per backbone on ModelNet40 and
ScanObjectNN, shipped in clipcli/data/ (`paper`); clipcli's averaged
templates stand in for any other label set. Facts: docs/methods/point.md.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from functools import cache, partial
from importlib import resources

from clipcli.errors import ParameterError
from clipcli.media.labels import packaged_lines, read_labels
from clipcli.render.projection import num_views

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
LABEL_SETS = {"modelnet40": "modelnet40_labels.txt", "scanobjectnn": "scanobjectnn_labels.txt"}
SEARCHED_FILE = "pointclip_v2_searched.json"  # per-class prompts and view weights from V2's best_param.py
BACKBONES = {"vit_b16": "ViT-B/16", "vit_b32": "ViT-B/32", "rn50": "RN50", "rn101": "RN101"}


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


def paper_backbone(spec: str, model, parameter: str) -> str:
    """The backbone named by `paper:KEY`, or the model's own for plain `paper`."""
    key = spec.partition(":")[2] or backbone_key(model)
    if key not in BACKBONES:
        known = ", ".join(f"paper:{k} ({name})" for k, name in BACKBONES.items())
        found = f"{key!r}" if spec.partition(":")[2] else "this model's architecture"
        raise ParameterError(parameter, f"{spec}: searched values exist only for {known}; not for {found}")
    return key


def paper_dataset(labels: Sequence[str], parameter: str) -> str:
    dataset = dataset_of(labels)
    if dataset is None:
        sets = " and ".join(LABEL_SETS)
        raise ParameterError(parameter, f"paper: PointCLIP V2 searched them only for the {sets} labels")
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
            raise ParameterError("prompts", f"{prompts}: PointCLIP V1 has a single template; use paper")
        dataset = paper_dataset(labels, "prompts")
        return [[sentence] for sentence in _searched()["prompts"][dataset][paper_backbone(prompts, model, "prompts")]]
    if "{}" in prompts:
        return [[prompts.replace("{}", name)] for name in names]
    raise ParameterError("prompts", f"{prompts!r}: use template, paper, paper:BACKBONE, or a sentence with {{}}")


def view_weights(spec: str, projection: str, labels: Sequence[str] = (), model=None) -> list[float]:
    """`--view-weights uniform|paper|paper:BACKBONE|w1,...,wV` -> one weight per view."""
    views = num_views(projection)
    if spec == "uniform":
        return [1.0] * views
    if spec.startswith("paper"):
        if projection == "v1":
            raise ParameterError(
                "weights",
                "paper: PointCLIP V1 ships no searched view weights (ZrrSkywalker/PointCLIP#20); give them as numbers",
            )
        dataset = paper_dataset(labels, "weights")
        return list(_searched()["view_weights"][dataset][paper_backbone(spec, model, "weights")])
    try:
        weights = [float(part) for part in spec.split(",")]
    except ValueError:
        raise ParameterError("weights", f"{spec!r}: use uniform, paper, or {views} comma-separated numbers") from None
    if len(weights) != views or not all(math.isfinite(w) and w >= 0 for w in weights) or not any(weights):
        raise ParameterError("weights", f"{spec!r}: {projection} has {views} views; give {views} weights >= 0")
    return weights
