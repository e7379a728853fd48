"""CLIPasso's optimisation (docs/methods/sketch.md): Adam moves every seed's strokes as one batch,
evaluates every 10 steps, keeps each seed's best sketch and stops by CLIPasso's rule (`SeedRun`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch

from clipcli.pipelines.sketch_init import (
    EDGE_STARTS,
    initial_strokes,
    saliency_map,
    sample_start_pixels,
    start_probabilities,
    xdog_edges,
)
from clipcli.pipelines.sketch_objective import CANVAS, ClipassoLoss, render_sketch

EVAL_EVERY = 10  # eval_interval
MIN_DELTA = 1e-5  # smaller changes of the evaluation loss do not count as improvements


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
