"""CLIPasso's optimisation (docs/methods/sketch.md): Adam moves every seed's strokes as one batch,
evaluates every 10 steps, keeps each seed's best sketch and stops by CLIPasso's rule (`SeedRun`).

Several images share one batch (`optimize_many`): each keeps its own Adam,
augmentation stream, stopping rule and best states, so batching changes its
speed, not its sketch.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from clipcli.errors import BadInputError
from clipcli.pipelines.sketch_init import (
    EDGE_STARTS,
    initial_strokes,
    saliency_map,
    sample_start_pixels,
    start_probabilities,
    xdog_edges,
)
from clipcli.pipelines.sketch_objective import CANVAS, ClipassoLoss, Target, render_sketch

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

    `init` names the rule the start pixels came from (`sketch_init.start_probabilities`);
    `seconds` is the time from the image's initialisation to its last step.
    """

    points: torch.Tensor
    runs: list[SeedRun]
    iterations: int
    snapshots: list[tuple[int, torch.Tensor]]
    init: str = EDGE_STARTS
    seconds: float = 0.0

    @property
    def chosen(self) -> int:
        """Index of the seed with the lowest best evaluation loss."""
        return min(range(len(self.runs)), key=lambda i: self.runs[i].best_loss)


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """How every image is optimised: steps, Adam's rate, stroke width, augmentations and the stopping rules."""

    iterations: int = 2000
    lr: float = 1.0
    width: float = 1.5
    augmentations: int = 4
    patience: int | None = None
    early_stop: bool = True


@dataclass
class Sketching:
    """One image being optimised: its strokes and their Adam, its augmentation stream, runs and best states.

    Everything an image's result depends on is its own, so it comes out the
    same whichever images share its batch.
    """

    target: Target
    points: torch.Tensor
    optimizer: torch.optim.Optimizer
    generator: torch.Generator | None
    runs: list[SeedRun]
    best: torch.Tensor
    init: str = EDGE_STARTS
    started: float = field(default_factory=time.perf_counter)
    snapshots: list[tuple[int, torch.Tensor]] = field(default_factory=list)
    iteration: int = 0
    finished: bool = False

    @classmethod
    def start(
        cls,
        target: Target,
        init_points: torch.Tensor,
        seeds: Sequence[int],
        lr: float,
        generator: torch.Generator | None,
        init: str = EDGE_STARTS,
    ) -> Sketching:
        points = init_points.detach().to(target.image.device, torch.float32).clone().requires_grad_(True)
        optimizer = torch.optim.Adam([points], lr=lr, betas=(0.9, 0.999), eps=1e-8)
        best = points.detach().cpu().clone()
        return cls(target, points, optimizer, generator, [SeedRun(seed) for seed in seeds], best, init)

    def evaluate(self, evaluation: torch.Tensor, schedule: Schedule) -> None:
        """Note the evaluation loss of the current state where it is due; finished once every seed stopped."""
        final = self.iteration == schedule.iterations
        if self.iteration % EVAL_EVERY == 0 or final:
            state = self.points.detach().cpu().clone()
            self.snapshots.append((self.iteration, state))
            for index, (run, value) in enumerate(zip(self.runs, evaluation.cpu().tolist(), strict=True)):
                if run.stopped_at is None and run.record(self.iteration, value, schedule.patience, schedule.early_stop):
                    self.best[index] = state[index]
        self.finished = final or all(run.stopped_at is not None for run in self.runs)

    def advance(self) -> None:
        if not self.finished:
            self.optimizer.step()
            self.iteration += 1

    def result(self) -> SketchResult:
        seconds = time.perf_counter() - self.started
        return SketchResult(self.best, self.runs, self.iteration, self.snapshots, self.init, seconds)


StepReport = Callable[[list[tuple[int, Sketching]]], None]


def optimize_many(
    starts: Sequence[Callable[[], Sketching]],
    loss: ClipassoLoss,
    schedule: Schedule,
    *,
    slots: int = 1,
    on_step: StepReport | None = None,
) -> list[SketchResult | BadInputError]:
    """Optimise several images in one batch of up to `slots` at a time; a result or an error per image, in order.

    `starts[i]()` initialises image i when a slot is free (a `BadInputError`
    there fails that image alone). Every step renders and scores all images
    in the batch at once; each image evaluates, stops and steps on its own,
    and an image that finishes frees its slot for the next one (or the batch
    shrinks). `on_step` gets `(index, image)` for each image in the batch
    after each step.
    """
    outcomes: list[SketchResult | BadInputError | None] = [None] * len(starts)
    waiting = deque(enumerate(starts))
    batch: list[tuple[int, Sketching]] = []
    while waiting or batch:
        while waiting and len(batch) < max(1, slots):
            index, start = waiting.popleft()
            try:
                batch.append((index, start()))
            except BadInputError as err:
                outcomes[index] = err
        if not batch:
            break
        _step([image for _, image in batch], loss, schedule)
        if on_step is not None:
            on_step(batch)
        for index, image in batch:
            if image.finished:
                outcomes[index] = image.result()
            image.advance()
        batch = [(index, image) for index, image in batch if not image.finished]
    return outcomes  # type: ignore[return-value]  # every image got its result or its error


def _step(images: list[Sketching], loss: ClipassoLoss, schedule: Schedule) -> None:
    """Render every image's strokes, score them, and leave each training image's gradients on its points.

    Images at their last step are scored un-augmented, without gradients and
    one by one, as a lone run scores its last step.
    """
    sketches = render_sketch(torch.cat([image.points for image in images]), schedule.width)
    parts = dict(zip(map(id, images), sketches.split([image.points.shape[0] for image in images]), strict=True))
    training = [image for image in images if image.iteration < schedule.iterations]
    last = [image for image in images if image.iteration == schedule.iterations]
    evaluations: dict[int, torch.Tensor] = {}
    if training:
        totals, firsts = loss.losses(
            [parts[id(image)] for image in training],
            [image.target for image in training],
            schedule.augmentations,
            [image.generator for image in training],
        )
        for image in training:
            image.optimizer.zero_grad(set_to_none=True)
        torch.cat(totals).sum().backward()
        evaluations |= dict(zip(map(id, training), firsts, strict=True))
    for image in last:  # once per image, each alone: as its lone run scores it
        with torch.no_grad():
            _, (evaluations[id(image)],) = loss.losses([parts[id(image)]], [image.target], 0, [None])
    for image in images:
        image.evaluate(evaluations[id(image)], schedule)


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
    loss = ClipassoLoss(model, cuda_graphs=cuda_graphs)
    seeds = list(seeds) if seeds is not None else list(range(init_points.shape[0]))
    schedule = Schedule(
        iterations=iterations, lr=lr, width=width, augmentations=augmentations, patience=patience, early_stop=early_stop
    )
    report = None if on_step is None else lambda batch: on_step(batch[0][1].iteration, batch[0][1].runs)
    start = lambda: Sketching.start(loss.prepare(target), init_points, seeds, lr, generator)  # noqa: E731
    (result,) = optimize_many([start], loss, schedule, on_step=report)
    if isinstance(result, BadInputError):
        raise result
    return result


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


def sketch_targets(
    targets: Sequence[torch.Tensor],
    loss_model,
    saliency_model,
    *,
    strokes: int = 16,
    seeds: Sequence[int] = (0, 1000, 2000),
    schedule: Schedule = Schedule(),
    cuda_graphs: bool = True,
    slots: int = 1,
    on_step: StepReport | None = None,
) -> list[SketchResult | BadInputError]:
    """The whole method on many `[1, 3, 224, 224]` targets, up to `slots` optimised in one batch.

    Each image is initialised when it enters the batch and draws its
    augmentations from its own generator seeded with the first seed, so its
    sketch is the one `sketch_target` makes of it alone.
    """
    loss = ClipassoLoss(loss_model, cuda_graphs=cuda_graphs)

    def starter(target: torch.Tensor) -> Callable[[], Sketching]:
        def start() -> Sketching:
            init, rule = initial_points(target, saliency_model, strokes, seeds)
            generator = torch.Generator().manual_seed(int(seeds[0]))
            return Sketching.start(loss.prepare(target), init, seeds, schedule.lr, generator, rule)

        return start

    return optimize_many([starter(target) for target in targets], loss, schedule, slots=slots, on_step=on_step)


def sketch_target(
    target: torch.Tensor,
    loss_model,
    saliency_model,
    *,
    strokes: int = 16,
    seeds: Sequence[int] = (0, 1000, 2000),
    cuda_graphs: bool = True,
    on_step: Callable[[int, list[SeedRun]], None] | None = None,
    **options,
) -> SketchResult:
    """The whole method on a `[1, 3, 224, 224]` target in [0, 1]: initialise, optimise all seeds as one batch.

    `options` are `Schedule`'s; the augmentations are drawn from a
    generator seeded with the first seed, so a run is repeatable.
    """
    report = None if on_step is None else lambda batch: on_step(batch[0][1].iteration, batch[0][1].runs)
    (outcome,) = sketch_targets(
        [target], loss_model, saliency_model, strokes=strokes, seeds=seeds, schedule=Schedule(**options),
        cuda_graphs=cuda_graphs, on_step=report,
    )  # fmt: skip
    if isinstance(outcome, BadInputError):
        raise outcome
    return outcome
