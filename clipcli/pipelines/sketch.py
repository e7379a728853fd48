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
- the seeds run as one batch, not one process after another (and `batch_images`
  images share that batch, each still optimised as alone);
- the sketch kept is the one the loss was measured on (the official code saves
  the parameters one Adam step later);
- non-square images are padded to a white square (the official `fix_scale`),
  not stretched; `--mask auto` is GrabCut, not U2Net;
- images with fewer edge pixels than strokes, where the official code fails,
  start them from the saliency map alone, or uniformly (`start_probabilities`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from clip.model import ModifiedResNet, VisionTransformer

from clipcli import ui
from clipcli.errors import BadInputError, ParameterError
from clipcli.media.decoders import CPU_DECODERS, IMAGE, Decoder, select_decoder
from clipcli.models import load_clip, resolve_device
from clipcli.pipelines.sketch_files import (
    SketchOutputs,
    auto_mask,
    output_names,
    read_target,
    whiten_background,
    write_outputs,
)
from clipcli.pipelines.sketch_init import FALLBACK_NOTICES, saliency_map
from clipcli.pipelines.sketch_objective import CANVAS, sketch_loss
from clipcli.pipelines.sketch_optimize import (
    Schedule,
    SeedRun,
    Sketching,
    SketchResult,
    optimize_strokes,
    sketch_target,
    sketch_targets,
)
from clipcli.runner import Executor, Job, Report, run_job
from clipcli.store.atomic import atomic_write

__all__ = ["saliency_map", "sketch_loss", "optimize_strokes", "sketch_target", "run"]

SEED_STEP = 1000  # run_object_sketching.py: seeds 0, 1000, 2000
# Bytes RN101 saves for the backward of one 224 px view in fp32 (307 MiB), counted with
# torch.autograd.graph.saved_tensors_hooks on the CPU; half of it in fp16.
ACTIVATION_BYTES_PER_VIEW = 307 * 2**20
MAX_BATCH_IMAGES = 16


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
                raise ParameterError(name, f"must be at least {low}")
        if self.strokes > CANVAS * CANVAS:
            raise ParameterError("strokes", f"must be at most {CANVAS * CANVAS}, one per pixel of the canvas")
        for name in ("width", "lr"):
            if not getattr(self, name) > 0:
                raise ParameterError(name, "must be positive")
        if self.patience is not None and self.patience < 1:
            raise ParameterError("patience", "must be at least 1")

    @property
    def schedule(self) -> Schedule:
        return Schedule(
            iterations=self.iterations,
            lr=self.lr,
            width=self.width,
            augmentations=self.augmentations,
            patience=self.patience,
            early_stop=self.early_stop,
        )

    @property
    def seed_list(self) -> list[int]:
        return [self.seed + SEED_STEP * i for i in range(self.seeds)]


@dataclass
class SketchOutcome:
    """One image's sketch before anything is written: the optimisation, the auto mask, the notices to show."""

    result: SketchResult
    foreground: np.ndarray | None
    seconds: float
    device: str
    notices: list[str] = field(default_factory=list)


@dataclass
class SketchJob(Job):
    """CLIPasso sketches of images: targets read ahead, each optimised in turn, the files written by the driver."""

    out: Path
    settings: SketchSettings = SketchSettings()
    model_name: str = "RN101"
    saliency_model_name: str = "ViT-B/32"
    mask: str = "none"
    animate: str | None = None
    size: int = 448
    device: str = "auto"
    trust_checkpoint: bool = False
    batch_images: int | None = None
    decoder: Decoder = CPU_DECODERS[IMAGE]
    name = "sketch"
    read_workers = 1

    def __post_init__(self) -> None:
        self.batch_size = self.batch_images or 1

    def setup(self) -> None:
        """Load the models; `batch_images=None` then takes `default_batch_images` for the device they are on."""
        device = resolve_device(self.device)
        self._loss_model, self._saliency_model = load_models(
            self.model_name, self.saliency_model_name, device, self.trust_checkpoint
        )
        if self.batch_images is None:
            self.batch_size = default_batch_images(device, self.settings, self._loss_model.visual.conv1.weight.dtype)

    def outputs(self, path: Path) -> SketchOutputs:
        return SketchOutputs.for_input(path, self.out, self.animate, self.mask == "auto")

    def done(self, path: Path) -> bool:
        return self.outputs(path).all_exist()

    def read(self, path: Path) -> torch.Tensor:
        return read_target(path, self.mask, self.decoder)

    def compute(self, path: Path, value: torch.Tensor) -> SketchOutcome:
        (outcome,) = self.compute_batch([(path, value)])
        if isinstance(outcome, BadInputError):
            raise outcome
        return outcome

    def compute_batch(self, items: Sequence[tuple[Path, torch.Tensor]]) -> list[SketchOutcome | BadInputError]:
        """The items' sketches, up to `batch_size` images optimised in one batch (`optimize_many`).

        A finished image's slot goes to the next of these items, else the
        batch shrinks; the runner hands `batch_size` items a call, so within
        a call the batch only shrinks.
        """
        outcomes: list[SketchOutcome | BadInputError | None] = [None] * len(items)
        masked: dict[int, tuple[torch.Tensor, np.ndarray | None, list[str]]] = {}
        for index, (path, target) in enumerate(items):
            try:
                masked[index] = self.masked_target(path, target)
            except BadInputError as err:
                outcomes[index] = err
        order = list(masked)
        settings = self.settings
        results = sketch_targets(
            [masked[index][0] for index in order],
            self._loss_model,
            self._saliency_model,
            strokes=settings.strokes,
            seeds=settings.seed_list,
            schedule=settings.schedule,
            cuda_graphs=settings.cuda_graphs,
            slots=self.batch_size,
            on_step=self.step_reporter([items[index][0] for index in order]),
        )
        for index, result in zip(order, results, strict=True):
            path, (_, foreground, notices) = items[index][0], masked[index]
            outcomes[index] = (
                result if isinstance(result, BadInputError) else self.outcome(path, result, foreground, notices)
            )
        return outcomes  # type: ignore[return-value]  # every item got its outcome or its error

    def outcome(
        self, path: Path, result: SketchResult, foreground: np.ndarray | None, notices: list[str]
    ) -> SketchOutcome:
        if result.init in FALLBACK_NOTICES:
            notices = [*notices, f"{path}: {FALLBACK_NOTICES[result.init].format(strokes=self.settings.strokes)}"]
        device = str(self._loss_model.visual.conv1.weight.device)
        return SketchOutcome(result, foreground, result.seconds, device, notices)

    def step_reporter(self, paths: list[Path]) -> Callable[[list[tuple[int, Sketching]]], None]:
        """Progress after each step: every image in the batch, its step and its best loss."""
        iterations = self.settings.iterations

        def report(batch: list[tuple[int, Sketching]]) -> None:
            self.progress("; ".join(step_line(paths[i], image.iteration, iterations, image.runs) for i, image in batch))

        return report

    def masked_target(self, path: Path, target: torch.Tensor) -> tuple[torch.Tensor, np.ndarray | None, list[str]]:
        """The target with `--mask auto`'s background whitened, the mask, and the notice where none was found."""
        if self.mask != "auto":
            return target, None, []
        foreground = auto_mask(target, self._saliency_model)
        if foreground is None:
            return target, None, [f"{path}: --mask auto found no object; sketching the whole image"]
        return whiten_background(target, foreground), foreground, []

    def write(self, path: Path, outcome: SketchOutcome) -> dict[str, Any]:
        for notice in outcome.notices:
            ui.notice(notice)
        outputs = self.outputs(path)
        write_outputs(outcome.result, outputs, self.settings.width, self.size, outcome.foreground)
        record = self.record(path, outputs, outcome)
        with atomic_write(outputs.json, "w") as handle:
            json.dump(self.details(record, outcome.result), handle, indent=1)
        return {key: value for key, value in record.items() if key != "input"} | {"json": str(outputs.json)}

    def record(self, path: Path, outputs: SketchOutputs, outcome: SketchOutcome) -> dict[str, Any]:
        """What was made of one image: its files, the chosen seed and its loss, the steps and the time."""
        result = outcome.result
        chosen = result.runs[result.chosen]
        return {
            "input": str(path),
            "svg": str(outputs.svg),
            "png": str(outputs.png),
            "animation": str(outputs.animation) if outputs.animation else None,
            "mask": str(outputs.mask) if outputs.mask and outcome.foreground is not None else None,
            "chosen_seed": chosen.seed,
            "loss": chosen.best_loss,
            "best_iteration": chosen.best_iteration,
            "iterations": result.iterations,
            "seconds": round(outcome.seconds, 3),
            "device": outcome.device,
        }

    def details(self, record: dict[str, Any], result: SketchResult) -> dict[str, Any]:
        """NAME_sketch.json: the record, the chosen strokes, every seed's evaluations and the settings."""
        return {
            **record,
            "canvas": CANVAS,
            "width": self.settings.width,
            "init": result.init,
            "strokes": np.round(result.points[result.chosen].double().numpy(), 4).tolist(),
            "seeds": [
                {k: v for k, v in asdict(run).items() if not k.startswith("_")}
                | {"stopped_early": run.stopped_at is not None}
                for run in result.runs
            ],
            "settings": asdict(self.settings),
        }

    def summary(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "saliency_model": self.saliency_model_name,
            "mask": self.mask,
            "animate": self.animate,
            "size": self.size,
            "batch_images": self.batch_size,
            "settings": asdict(self.settings),
        }


def step_line(path: Path, iteration: int, iterations: int, runs: list[SeedRun]) -> str:
    """`cat.png step 120/2000 loss 0.4213`: how the image being sketched is going, for the progress bar."""
    return f"{path.name} step {iteration}/{iterations} loss {min(run.best_loss for run in runs):.4f}"


def default_batch_images(device: torch.device, settings: SketchSettings, dtype: torch.dtype) -> int:
    """`--batch-images` when not given: 1 on a CPU; on CUDA as many as 90% of the free memory holds, up to 16.

    An image costs its views' saved activations twice over (the backward's
    transients and the CUDA graphs' pools): `seeds x (1 + augmentations)`
    views of `ACTIVATION_BYTES_PER_VIEW` each. An estimate, not a measurement
    on a GPU; `--batch-images` overrides it.
    """
    if device.type != "cuda":
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    views = settings.seeds * (1 + settings.augmentations)
    per_image = 2 * views * ACTIVATION_BYTES_PER_VIEW * torch.finfo(dtype).bits // 32
    return max(1, min(MAX_BATCH_IMAGES, int(0.9 * free) // per_image))


def load_models(model_name: str, saliency_name: str, device: torch.device, trust_checkpoint: bool = False):
    """The loss ResNet and the saliency ViT, refused where they are of the wrong kind or size."""
    loss_model, _ = load_clip(model_name, device, trust_checkpoint=trust_checkpoint)
    if not isinstance(loss_model.visual, ModifiedResNet):
        raise ParameterError("model_name", f"{model_name}: the CLIPasso loss needs a CLIP ResNet (RN50, RN101, ...)")
    saliency_model, _ = load_clip(saliency_name, device, trust_checkpoint=trust_checkpoint)
    if not isinstance(saliency_model.visual, VisionTransformer):
        raise ParameterError(
            "saliency_model_name", f"{saliency_name}: the saliency map needs a CLIP ViT (ViT-B/32, ...)"
        )
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
    executor: Executor | None = None,
    decode: str = "auto",
    batch_images: int | None = None,
) -> Report:
    """Sketch many images; one result per input (skipped and failed ones included), the settings in the summary.

    `batch_images` images are optimised in one batch (None: `default_batch_images`).
    """
    settings.check()
    if batch_images is not None and batch_images < 1:
        raise ParameterError("batch_images", "must be at least 1")
    if animate not in (None, "gif", "mp4"):
        raise ParameterError("animate", f"{animate}: expected gif or mp4")
    if size < 16:
        raise ParameterError("size", "must be at least 16")
    if mask not in ("none", "auto") and not Path(mask).exists():
        raise BadInputError("no such mask file or folder", mask)
    decoder = select_decoder(decode, device, IMAGE)
    output_names(out).check(images)
    job = SketchJob(
        out=out,
        settings=settings,
        model_name=model_name,
        saliency_model_name=saliency_model_name,
        mask=mask,
        animate=animate,
        size=size,
        device=device,
        trust_checkpoint=trust_checkpoint,
        decoder=decoder,
        batch_images=batch_images,
    )
    return run_job(job, images, overwrite=overwrite, executor=executor)
