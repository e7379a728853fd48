"""`clipcli sketch`: CLIPasso object sketching (Vinker et al., SIGGRAPH 2022) on our own rasterizer.

Facts from docs/methods/sketch.md (yael-vinker/CLIPasso @92262f7): 16 black cubic
strokes of half-width 1.5 start at saliency-sampled edge pixels
(`sketch_init`), and Adam (lr 1.0) moves their pixel-space control points for
2000 steps to minimise, against the target, RN101's `layer2` + `layer3` MSE
plus 0.1 x (1 - cosine) of its attention-pool output, averaged over the
un-augmented pair and 4 jointly augmented pairs (`sketch_augment`). Every 10
steps the un-augmented loss is recorded; each seed keeps its best sketch, and
the seed with the lowest loss wins.

Where this differs from the official code, on purpose (also in --help and README):
- strokes are drawn by `clipcli.render.strokes.rasterize`, not diffvg;
- the seeds run as one batch, not one process after another;
- the sketch kept is the one the loss was measured on (the official code saves
  the parameters one Adam step later);
- non-square images are padded to a white square (the official `fix_scale`),
  not stretched; `--mask auto` is GrabCut, not U2Net;
- images with fewer edge pixels than strokes, where the official code fails,
  start them from the saliency map alone, or uniformly (`start_probabilities`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from clip.model import ModifiedResNet, VisionTransformer

from clipcli import ui
from clipcli.batch import failed_row, skipped_row
from clipcli.errors import BadInputError
from clipcli.models import load_clip, resolve_device
from clipcli.pipelines.sketch_files import SketchOutputs, output_names, prepare_target, write_outputs
from clipcli.pipelines.sketch_init import FALLBACK_NOTICES, saliency_map
from clipcli.pipelines.sketch_objective import CANVAS, sketch_loss
from clipcli.pipelines.sketch_optimize import SeedRun, optimize_strokes, sketch_target
from clipcli.store.atomic import atomic_write

__all__ = ["saliency_map", "sketch_loss", "optimize_strokes", "sketch_target", "run"]

SEED_STEP = 1000  # run_object_sketching.py: seeds 0, 1000, 2000


@dataclass(frozen=True, kw_only=True)
class SketchSettings:
    """The command's options; the defaults are the official run's.

    Keyword-only: ten numbers in a row are easily passed in the wrong order.
    """

    strokes: int = 16
    iterations: int = 2000
    seeds: int = 3
    width: float = 1.5
    augmentations: int = 4
    lr: float = 1.0
    patience: int | None = None
    seed: int = 0
    early_stop: bool = True
    cuda_graphs: bool = True

    def check(self) -> None:
        for name, low in (("strokes", 1), ("iterations", 0), ("seeds", 1), ("augmentations", 0)):
            if getattr(self, name) < low:
                raise BadInputError(f"--{name} must be at least {low}")
        if self.strokes > CANVAS * CANVAS:
            raise BadInputError(f"--strokes must be at most {CANVAS * CANVAS}, one per pixel of the canvas")
        if not self.width > 0 or not self.lr > 0:
            raise BadInputError("--width and --lr must be positive")
        if self.patience is not None and self.patience < 1:
            raise BadInputError("--patience must be at least 1")

    @property
    def seed_list(self) -> list[int]:
        return [self.seed + SEED_STEP * i for i in range(self.seeds)]


def sketch_file(
    path: Path,
    outputs: SketchOutputs,
    loss_model,
    saliency_model,
    settings: SketchSettings,
    *,
    mask: str | Path = "none",
    size: int = 448,
    on_step: Callable[[int, list[SeedRun]], None] | None = None,
) -> dict:
    """Sketch one image file and write its outputs; returns the summary row."""
    start = time.perf_counter()
    target, foreground = prepare_target(path, mask, saliency_model)
    result = sketch_target(
        target,
        loss_model,
        saliency_model,
        strokes=settings.strokes,
        seeds=settings.seed_list,
        iterations=settings.iterations,
        lr=settings.lr,
        width=settings.width,
        augmentations=settings.augmentations,
        patience=settings.patience,
        on_step=on_step,
        early_stop=settings.early_stop,
        cuda_graphs=settings.cuda_graphs,
    )
    if result.init in FALLBACK_NOTICES:
        ui.notice(f"{path}: {FALLBACK_NOTICES[result.init].format(strokes=settings.strokes)}")
    write_outputs(result, outputs, settings.width, size, foreground)
    chosen = result.runs[result.chosen]
    seconds = round(time.perf_counter() - start, 3)
    device = str(loss_model.visual.conv1.weight.device)
    record = {
        "input": str(path),
        "svg": str(outputs.svg),
        "png": str(outputs.png),
        "animation": str(outputs.animation) if outputs.animation else None,
        "mask": str(outputs.mask) if outputs.mask and foreground is not None else None,
        "chosen_seed": chosen.seed,
        "loss": chosen.best_loss,
        "best_iteration": chosen.best_iteration,
        "iterations": result.iterations,
        "seconds": seconds,
        "device": device,
    }
    details = {
        **record,
        "canvas": CANVAS,
        "width": settings.width,
        "init": result.init,
        "strokes": np.round(result.points[result.chosen].double().numpy(), 4).tolist(),
        "seeds": [
            {k: v for k, v in asdict(run).items() if not k.startswith("_")}
            | {"stopped_early": run.stopped_at is not None}
            for run in result.runs
        ],
        "settings": asdict(settings),
    }
    with atomic_write(outputs.json, "w") as handle:
        json.dump(details, handle, indent=1)
    return {k: v for k, v in record.items() if k != "input"} | {"json": str(outputs.json)}


def _load_models(model_name: str, saliency_name: str, device: torch.device, trust_checkpoint: bool = False):
    loss_model, _ = load_clip(model_name, device, trust_checkpoint=trust_checkpoint)
    if not isinstance(loss_model.visual, ModifiedResNet):
        raise BadInputError(f"--model {model_name}: the CLIPasso loss needs a CLIP ResNet (RN50, RN101, ...)")
    saliency_model, _ = load_clip(saliency_name, device, trust_checkpoint=trust_checkpoint)
    if not isinstance(saliency_model.visual, VisionTransformer):
        raise BadInputError(f"--saliency-model {saliency_name}: the saliency map needs a CLIP ViT (ViT-B/32, ...)")
    for model in (loss_model, saliency_model):
        if model.visual.input_resolution != CANVAS:
            raise BadInputError(f"CLIPasso works at {CANVAS} px; this model takes {model.visual.input_resolution} px")
    return loss_model, saliency_model


def run(
    images: Sequence[Path],
    *,
    out: Path,
    settings: SketchSettings = SketchSettings(),
    model_name: str = "RN101",
    saliency_model_name: str = "ViT-B/32",
    mask: str = "none",
    animate: str | None = None,
    size: int = 448,
    overwrite: bool = False,
    device: str = "auto",
    trust_checkpoint: bool = False,
) -> list[dict]:
    """Sketch many images; one result row per input (skipped and failed ones included)."""
    settings.check()
    if animate not in (None, "gif", "mp4"):
        raise BadInputError(f"--animate {animate}: expected gif or mp4")
    if size < 16:
        raise BadInputError("--size must be at least 16")
    if mask not in ("none", "auto") and not Path(mask).exists():
        raise BadInputError("no such mask file or folder", mask)
    output_names(out).check(images)
    loss_model, saliency_model = _load_models(model_name, saliency_model_name, resolve_device(device), trust_checkpoint)
    results: list[dict] = []
    with ui.progress() as bar:
        for path in images:
            outputs = SketchOutputs.for_input(path, out, animate, mask == "auto")
            if not overwrite and outputs.all_exist():
                results.append(skipped_row(path))
                continue
            task = bar.add_task(path.name, total=settings.iterations)

            def on_step(iteration: int, runs: list[SeedRun], task=task, name=path.name) -> None:
                best = min(run.best_loss for run in runs)
                bar.update(task, completed=iteration, description=f"{name} loss {best:.4f}")

            try:
                row = sketch_file(
                    path, outputs, loss_model, saliency_model, settings, mask=mask, size=size, on_step=on_step
                )
                results.append({"input": str(path), "status": "ok", **row})
            except BadInputError as err:
                results.append(failed_row(path, err))
            bar.update(task, completed=settings.iterations)
    return results
