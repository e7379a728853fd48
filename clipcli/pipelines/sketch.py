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

import contextlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from clip.model import ModifiedResNet, VisionTransformer
from PIL import Image

from clipcli import ui
from clipcli.batch import OutputNames, failed_row, skipped_row
from clipcli.errors import BadInputError, first_line
from clipcli.media.images import IMAGE_EXTENSIONS, load_image
from clipcli.models import load_clip, resolve_device
from clipcli.models.normalize import clip_normalize, clip_stats
from clipcli.pipelines.sketch_augment import augment, random_augmentations
from clipcli.pipelines.sketch_init import (
    EDGE_STARTS,
    FALLBACK_NOTICES,
    grabcut_mask,
    initial_strokes,
    saliency_map,
    sample_start_pixels,
    start_probabilities,
    xdog_edges,
)
from clipcli.render.animation import write_gif, write_mp4, write_png
from clipcli.render.strokes import rasterize
from clipcli.render.svg import write_svg
from clipcli.store.atomic import atomic_write

__all__ = ["saliency_map", "sketch_loss", "optimize_strokes", "sketch_target", "run"]

CANVAS = 224
FC_WEIGHT = 0.1  # clip_fc_loss_weight
EVAL_EVERY = 10  # eval_interval
MIN_DELTA = 1e-5  # smaller changes of the evaluation loss do not count as improvements
SEED_STEP = 1000  # run_object_sketching.py: seeds 0, 1000, 2000
PAD = 20  # fix_image_scale pads to max(height, width) + 20


# ---------------------------------------------------------------- loss


def resnet_features(visual: ModifiedResNet, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(`layer2`, `layer3`, attention-pool output) of a CLIP ResNet for normalised `images`.

    The stages are taken by name with hooks: CLIPasso picks them by child index,
    which points at the wrong modules in today's `clip` (docs/methods/sketch.md).
    """
    kept: dict[str, torch.Tensor] = {}
    handles = [
        getattr(visual, name).register_forward_hook(lambda module, args, output, name=name: kept.update({name: output}))
        for name in ("layer2", "layer3")
    ]
    try:
        pooled = visual(images)
    finally:
        for handle in handles:
            handle.remove()
    return kept["layer2"], kept["layer3"], pooled


@contextlib.contextmanager
def _frozen(module: torch.nn.Module):
    """No weight gradients while the graph is built: we differentiate w.r.t. the image only."""
    flags = [(parameter, parameter.requires_grad) for parameter in module.parameters()]
    for parameter, _ in flags:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


class ClipassoLoss:
    """CLIPasso's loss against one target; the target's un-augmented features are computed once.

    On CUDA the training step's two fixed-shape ResNet passes (augmented
    targets forward; sketch views forward and backward) are captured once as
    CUDA graphs and replayed: eager RN101 is bound by kernel launches (a step
    took 42 ms eager and 17 ms replayed on an H100). `cuda_graphs=False` keeps
    them eager; the arithmetic is the same either way. Where a capture fails,
    one notice says so and the run goes on eagerly.
    """

    def __init__(self, model, target: torch.Tensor, cuda_graphs: bool = True):
        if not isinstance(model.visual, ModifiedResNet):
            raise ValueError("the CLIPasso loss needs a CLIP ResNet (RN101 in CLIPasso)")
        if target.ndim != 4 or target.shape[0] != 1 or target.shape[1] != 3:
            raise ValueError(f"target must be [1, 3, H, W], got {tuple(target.shape)}")
        self.visual = model.visual
        weight = self.visual.conv1.weight
        self.target = target.to(weight.device, torch.float32)
        self.cuda_graphs = cuda_graphs and weight.is_cuda
        self._stats = clip_stats(torch.float32, weight.device)
        self._graphed: dict[tuple, Callable] = {}
        with torch.no_grad():
            self.target_features = self.features(self.target)

    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Stage outputs for `[n, 3, H, W]` images in [0, 1], in the model's dtype."""
        with _frozen(self.visual):
            pixels = clip_normalize(images, self._stats)
            return resnet_features(self.visual, pixels.to(self.visual.conv1.weight.dtype))

    def __call__(
        self, sketch: torch.Tensor, augmentations: int = 4, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss `[B]` over 1 + `augmentations` pairs, un-augmented loss `[B]` detached).

        Augmented pair j of sketch b is `augment(sketch[b])` vs `augment(target)`
        with the same parameters.
        """
        batch = sketch.shape[0]
        sketch = sketch.to(self.target.device, torch.float32)
        plain = [t.expand(batch, *t.shape[1:]) for t in self.target_features]
        views, theirs = sketch, plain
        if augmentations > 0:
            count = batch * augmentations
            params = random_augmentations(count, sketch.shape[-1], generator)
            stacked = torch.cat([sketch.repeat_interleave(augmentations, 0), self.target.expand(count, -1, -1, -1)], 1)
            warped = augment(stacked, params)  # one warp for both halves: identical parameters
            with torch.no_grad():
                augmented = self._replay("target", self.features, warped[:, 3:].contiguous())
            views = torch.cat([sketch, warped[:, :3]])
            theirs = [torch.cat(pair) for pair in zip(plain, augmented, strict=True)]
            per_view = self._replay("views", self._view_losses, views, *theirs)
        else:
            per_view = self._view_losses(views, *theirs)
        first = per_view[:batch]
        total = (first + per_view[batch:].view(batch, augmentations).sum(1)) / (1 + augmentations)
        return total, first.detach()

    def _view_losses(self, views: torch.Tensor, *theirs: torch.Tensor) -> torch.Tensor:
        return pair_losses(self.features(views), theirs)

    def _replay(self, name: str, fn: Callable, *args: torch.Tensor):
        """`fn(*args)`, through CUDA graphs captured for these shapes on first use when `cuda_graphs` is on.

        The graphs' outputs are reused buffers: valid until the next call.
        """
        if not self.cuda_graphs:
            return fn(*args)
        key = (name, torch.is_grad_enabled(), *(tuple(arg.shape) for arg in args))
        if key not in self._graphed:
            samples = tuple(arg.detach().clone().requires_grad_(arg.requires_grad) for arg in args)
            try:
                self._graphed[key] = torch.cuda.make_graphed_callables(fn, samples)
            except (RuntimeError, AssertionError) as error:  # capture refused; the warm-ups changed no state
                self.cuda_graphs = False
                ui.notice(f"CUDA graphs unavailable here, running eagerly: {first_line(error)}")
                return fn(*args)
        return self._graphed[key](*args)


def pair_losses(ours: Sequence[torch.Tensor], theirs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per pair: MSE of `layer2` + MSE of `layer3` + 0.1 x (1 - cosine) of the pooled embeddings, in fp32."""
    geometric = sum(
        (x.float() - y.float()).square().mean(dim=(1, 2, 3)) for x, y in zip(ours[:2], theirs[:2], strict=True)
    )
    semantic = 1 - F.cosine_similarity(ours[2].float(), theirs[2].float(), dim=1)
    return geometric + FC_WEIGHT * semantic


def sketch_loss(
    sketch: torch.Tensor,
    target: torch.Tensor,
    model,
    augmentations: int = 4,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """CLIPasso's loss per sketch, `[B]`.

    `sketch` `[B, 3, 224, 224]` and `target` `[1, 3, 224, 224]` in [0, 1], un-normalised;
    `model` a CLIP ResNet. The mean over the un-augmented pair and `augmentations`
    augmented pairs (drawn from `generator`) of `layer2` MSE + `layer3` MSE +
    0.1 x (1 - cosine) of the attention-pool outputs. `augmentations=0` is the
    evaluation loss.
    """
    total, _ = ClipassoLoss(model, target)(sketch, augmentations, generator)
    return total


def render_sketch(points: torch.Tensor, width: float = 1.5, size: int = CANVAS) -> torch.Tensor:
    """`[B, 3, size, size]` black strokes on white, as the loss sees them."""
    return (1.0 - rasterize(points, width, size))[:, None].expand(-1, 3, -1, -1)


# ---------------------------------------------------------------- optimisation


@dataclass
class SeedRun:
    """One seed's evaluation history and best sketch, with CLIPasso's stopping rule.

    Official rule: an evaluation improves when it is more than 1e-5 below the
    best; the second evaluation (not necessarily in a row) within 1e-5 of the
    best since the last improvement stops the run. `patience` adds: stop after
    that many evaluations without improvement. `record(..., early_stop=False)`
    turns the official rule off (`patience` still applies).
    """

    seed: int
    best_loss: float = math.inf
    best_iteration: int = 0
    eval_iterations: list[int] = field(default_factory=list)
    eval_losses: list[float] = field(default_factory=list)
    stopped_at: int | None = None
    _armed: bool = False
    _stale: int = 0

    def record(self, iteration: int, loss: float, patience: int | None = None, early_stop: bool = True) -> bool:
        """Note an evaluation; True when it is the new best."""
        self.eval_iterations.append(iteration)
        self.eval_losses.append(loss)
        delta = loss - self.best_loss
        improved = delta < -MIN_DELTA
        if improved:
            self.best_loss, self.best_iteration, self._armed, self._stale = loss, iteration, False, 0
        else:
            self._stale += 1
        if abs(delta) <= MIN_DELTA and early_stop:
            if self._armed:
                self.stopped_at = iteration
            self._armed = True
        if patience is not None and self._stale >= patience:
            self.stopped_at = iteration
        return improved


@dataclass
class SketchResult:
    """Best strokes per seed `[S, N, 4, 2]` (CPU), the runs, steps taken, snapshots at evaluations.

    `init` names the rule the start pixels came from (`sketch_init.start_probabilities`).
    """

    points: torch.Tensor
    runs: list[SeedRun]
    iterations: int
    snapshots: list[tuple[int, torch.Tensor]]
    init: str = EDGE_STARTS

    @property
    def chosen(self) -> int:
        """Index of the seed with the lowest best evaluation loss."""
        return min(range(len(self.runs)), key=lambda i: self.runs[i].best_loss)


def optimize_strokes(
    target: torch.Tensor,
    init_points: torch.Tensor,
    model,
    *,
    seeds: Sequence[int] | None = None,
    iterations: int = 2000,
    lr: float = 1.0,
    width: float = 1.5,
    augmentations: int = 4,
    patience: int | None = None,
    early_stop: bool = True,
    cuda_graphs: bool = True,
    generator: torch.Generator | None = None,
    on_step: Callable[[int, list[SeedRun]], None] | None = None,
) -> SketchResult:
    """Optimise the strokes of several seeds `[S, N, 4, 2]` at once against `target` `[1, 3, 224, 224]`.

    Step i renders, computes the loss, and (for i < `iterations`) takes an Adam
    step; states 0, 10, ... and the last are evaluated with the un-augmented
    loss of that same forward pass. So `iterations=2000` is the official
    2001-iteration loop (whose final step is never evaluated). `early_stop`
    is CLIPasso's stopping rule (see `SeedRun`); `cuda_graphs` see `ClipassoLoss`.
    """
    device = model.visual.conv1.weight.device
    points = init_points.detach().to(device, torch.float32).clone().requires_grad_(True)
    seeds = list(seeds) if seeds is not None else list(range(points.shape[0]))
    runs = [SeedRun(seed) for seed in seeds]
    optimizer = torch.optim.Adam([points], lr=lr, betas=(0.9, 0.999), eps=1e-8)
    loss = ClipassoLoss(model, target, cuda_graphs)
    best = points.detach().cpu().clone()
    snapshots: list[tuple[int, torch.Tensor]] = []
    iteration = 0
    for iteration in range(iterations + 1):
        final = iteration == iterations
        sketch = render_sketch(points, width)
        if final:
            with torch.no_grad():
                _, evaluation = loss(sketch, 0, generator)
        else:
            total, evaluation = loss(sketch, augmentations, generator)
            optimizer.zero_grad(set_to_none=True)
            total.sum().backward()
        if iteration % EVAL_EVERY == 0 or final:
            state = points.detach().cpu().clone()
            snapshots.append((iteration, state))
            for index, (run, value) in enumerate(zip(runs, evaluation.cpu().tolist(), strict=True)):
                if run.stopped_at is None and run.record(iteration, value, patience, early_stop):
                    best[index] = state[index]
        if on_step is not None:
            on_step(iteration, runs)
        if all(run.stopped_at is not None for run in runs):
            break
        if not final:
            optimizer.step()
    return SketchResult(best, runs, iteration, snapshots)


def initial_points(
    target: torch.Tensor, saliency_model, strokes: int, seeds: Sequence[int]
) -> tuple[torch.Tensor, str]:
    """`[S, N, 4, 2]` CLIPasso initial strokes for each seed (saliency x XDoG, softmax 0.3, random walk).

    Also the rule the start pixels came from: `EDGE_STARTS` unless the image
    has too few edge pixels (`start_probabilities`).
    """
    image = target[0].float().cpu()
    probabilities, rule = start_probabilities(saliency_map(image, saliency_model), xdog_edges(image), strokes)
    points = torch.stack([initial_strokes(sample_start_pixels(probabilities, strokes, s), s, CANVAS) for s in seeds])
    return points, rule


def sketch_target(
    target: torch.Tensor,
    loss_model,
    saliency_model,
    *,
    strokes: int = 16,
    seeds: Sequence[int] = (0, 1000, 2000),
    **options,
) -> SketchResult:
    """The whole method on a `[1, 3, 224, 224]` target in [0, 1]: initialise, optimise all seeds as one batch.

    `options` go to `optimize_strokes`; the augmentations are drawn from a
    generator seeded with the first seed, so a run is repeatable.
    """
    init, rule = initial_points(target, saliency_model, strokes, seeds)
    generator = torch.Generator().manual_seed(int(seeds[0]))
    result = optimize_strokes(target, init, loss_model, seeds=seeds, generator=generator, **options)
    return replace(result, init=rule)


# ---------------------------------------------------------------- files


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


def output_names(out: Path) -> OutputNames:
    """Every file a sketch can write in `out`: NAME_sketch.{svg,png,json,gif,mp4} and NAME_mask.png."""
    sketch = ("{}_sketch.svg", "{}_sketch.png", "{}_sketch.json", "{}_sketch.gif", "{}_sketch.mp4")
    return OutputNames(out, (*sketch, "{}_mask.png"))


@dataclass(frozen=True)
class SketchOutputs:
    """Output paths for one input: NAME_sketch.{svg,png,json}, the animation and the auto mask."""

    svg: Path
    png: Path
    json: Path
    animation: Path | None
    mask: Path | None

    @classmethod
    def for_input(cls, image: Path, out: Path, animate: str | None, auto_mask: bool) -> SketchOutputs:
        svg, png, json_file, gif, mp4, mask = output_names(out).for_input(image)
        animation = {"gif": gif, "mp4": mp4}.get(animate) if animate is not None else None
        return cls(svg, png, json_file, animation, mask if auto_mask else None)

    def all_exist(self) -> bool:
        return all(path.exists() for path in (self.svg, self.png, self.json, self.animation, self.mask) if path)


def square_on_white(image: np.ndarray) -> np.ndarray:
    """Pad a non-square RGB image to a centred white square of side max(H, W) + 20 (CLIPasso's fix_scale)."""
    height, width = image.shape[:2]
    if height == width:
        return image
    side = max(height, width) + PAD
    canvas = np.full((side, side, 3), 255, np.uint8)
    top, left = side // 2 - height // 2, side // 2 - width // 2
    canvas[top : top + height, left : left + width] = image
    return canvas


def target_tensor(image: np.ndarray) -> torch.Tensor:
    """RGB uint8 -> `[1, 3, 224, 224]` in [0, 1]: white-square padding, then PIL bicubic, as torchvision's Resize."""
    resized = Image.fromarray(square_on_white(image)).resize((CANVAS, CANVAS), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(resized, np.float32) / 255.0).permute(2, 0, 1)[None].contiguous()


def _user_mask(mask: Path, image_path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Boolean object mask from a file (or from `mask/<input stem>.*` when `mask` is a folder)."""
    if mask.is_dir():
        matches = [p for p in sorted(mask.glob(f"{image_path.stem}.*")) if p.suffix.lower() in IMAGE_EXTENSIONS]
        if not matches:
            raise BadInputError(f"no mask {image_path.stem}.* in {mask}", image_path)
        mask = matches[0]
    pixels = load_image(mask)
    if pixels.shape[:2] != shape:
        raise BadInputError(f"mask is {pixels.shape[1]}x{pixels.shape[0]}, the image {shape[1]}x{shape[0]}", mask)
    return pixels.max(axis=2) > 127


def prepare_target(path: Path, mask: str | Path, saliency_model) -> tuple[torch.Tensor, np.ndarray | None]:
    """The target `[1, 3, 224, 224]` for an image file, background whitened per `mask`; and the auto mask."""
    image = load_image(path)
    if mask not in ("none", "auto"):
        image = np.where(_user_mask(Path(mask), path, image.shape[:2])[..., None], image, np.uint8(255))
    target = target_tensor(image)
    if mask != "auto":
        return target, None
    pixels = np.ascontiguousarray((target[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    foreground = grabcut_mask(pixels, saliency_map(target[0], saliency_model))
    if foreground is None:
        ui.notice(f"{path}: --mask auto found no object; sketching the whole image")
        return target, None
    return torch.where(torch.from_numpy(foreground), target, torch.ones(())), foreground


def render_png(points: torch.Tensor, width: float, size: int) -> np.ndarray:
    """`[F, size, size]` grey images of strokes `[F, N, 4, 2]` given on the 224 canvas, scaled up."""
    scale = size / CANVAS
    frames = []
    with torch.no_grad():
        for chunk in points.split(16):
            frames.append((1.0 - rasterize(chunk.float() * scale, width * scale, size)).numpy())
    return np.concatenate(frames)


def _write_outputs(result: SketchResult, outputs: SketchOutputs, width: float, size: int, mask) -> None:
    chosen = result.chosen
    points = result.points[chosen]
    write_svg(outputs.svg, points.numpy(), width, CANVAS)
    write_png(outputs.png, render_png(points[None], width, size)[0])
    if outputs.mask is not None and mask is not None:
        write_png(outputs.mask, mask.astype(np.float32))
    if outputs.animation is not None:
        best = result.runs[chosen].best_iteration
        frames = render_png(torch.stack([p[chosen] for i, p in result.snapshots if i <= best]), width, size)
        (write_gif if outputs.animation.suffix == ".gif" else write_mp4)(outputs.animation, list(frames))


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
    _write_outputs(result, outputs, settings.width, size, foreground)
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
