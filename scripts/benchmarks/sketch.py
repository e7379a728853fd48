"""CLIPasso: the rasterizer alone, optimisation steps, then sketches per hour with images batched."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from .common import peak_memory_mb, random_clip, sized


def bench_sketch(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """CLIPasso: the rasterizer alone (forward+backward), then optimisation steps with 3 seeds batched.

    Steps use RN101 (loss) and ViT-B/32 (saliency) with random weights, 16 strokes, 4 augmentations.
    On CUDA the whole 2000-step sketch is timed; on the CPU `--repeats` + 1 steps, extrapolated.
    The CLIP passes a step contains (sketch forward+backward of 15 views, target forward of 12) are
    timed alone, so the overhead of everything else shows.
    """
    import cv2

    from clipcli.pipelines.sketch_files import target_tensor
    from clipcli.pipelines.sketch_objective import ClipassoLoss, render_sketch
    from clipcli.pipelines.sketch_optimize import initial_points, optimize_strokes, sketch_target
    from clipcli.render.strokes import rasterize

    def fastest(fn: Callable[[], object], repeats: int) -> float:
        """Seconds of the fastest of `repeats` calls after a warm-up: a busy machine only ever adds time."""
        times = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
        return min(times[1:])

    results = []
    generator = torch.Generator().manual_seed(0)
    for strokes in sized(args, (16, 64, 256), (16,)):
        for batch in (1, 3):
            start = torch.rand(batch, strokes, 1, 2, generator=generator) * 224
            points = start + (torch.rand(batch, strokes, 4, 2, generator=generator) - 0.5) * 34
            points = points.to(device).requires_grad_(True)
            seconds = fastest(
                lambda points=points: rasterize(points).sum().backward(), sized(args, max(args.repeats, 5), 1)
            )
            results.append({"bench": "sketch-rasterize", "device": str(device), "strokes": strokes, "batch": batch,
                            "size": 224, "ms_forward_backward": round(seconds * 1000, 2)})  # fmt: skip

    loss_model, saliency_model = random_clip("RN101", device, args.tiny), random_clip("ViT-B/32", device, args.tiny)
    picture = np.full((224, 224, 3), 255, np.uint8)
    cv2.circle(picture, (90, 110), 50, (200, 40, 40), -1)
    cv2.rectangle(picture, (120, 40), (200, 180), (30, 90, 160), -1)
    target = target_tensor(picture).to(device)
    seeds, augmentations = sized(args, (0, 1000, 2000), (0,)), sized(args, 4, 1)
    loss = ClipassoLoss(loss_model, target)
    views = render_sketch(torch.rand(len(seeds) * (1 + augmentations), 16, 4, 2, device=device) * 224).detach()

    def clip_passes() -> None:
        with torch.no_grad():
            loss.features(target.expand(len(seeds) * augmentations, -1, -1, -1))
        sketch = views.clone().requires_grad_(True)
        sum(f.float().sum() for f in loss.features(sketch)).backward()

    clip_s = fastest(clip_passes, args.repeats)
    row = {"bench": "sketch-optimise", "device": str(device), "models": "RN101 + ViT-B/32",
           "dtype": str(loss_model.visual.conv1.weight.dtype).removeprefix("torch."), "strokes": 16,
           "seeds_batched": len(seeds), "augmentations": augmentations, "clip_passes_s": round(clip_s, 4)}  # fmt: skip
    # The official stopping rule would end random-weight runs after a few evaluations: every step is run.
    options = dict(strokes=16, seeds=seeds, augmentations=augmentations, early_stop=False)
    # On CUDA the whole sketch is timed with CUDA graphs (the default), and 200 steps without them.
    runs = [(2000, True), (200, False)] if device.type == "cuda" else [(args.repeats + 1, True)]
    for iterations, graphs in runs:
        stamps: list[float] = []
        start = time.perf_counter()
        on_step = lambda *_, stamps=stamps: stamps.append(time.perf_counter())  # noqa: E731
        result = sketch_target(target, loss_model, saliency_model, iterations=iterations, cuda_graphs=graphs,
                               on_step=on_step, **options)  # fmt: skip
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        total_s = time.perf_counter() - start
        # Stamps follow each step's backward; the last one is the final evaluation (no backward). Host syncs every
        # 10 steps keep the mean over many CUDA steps honest; on the CPU the fastest step is the least disturbed.
        steps = np.diff(stamps[:-1])
        step_s = float(steps[10:].mean() if device.type == "cuda" else steps.min())
        startup_s = total_s - step_s * iterations
        results.append(
            row
            | {
                "cuda_graphs": graphs and device.type == "cuda",
                "iterations_timed": result.iterations,
                "iterations_per_s": round(1 / step_s, 2),
                "ms_per_step": round(step_s * 1000, 2),
                "seconds_per_sketch_2000_steps": round(total_s if iterations == 2000 else startup_s + step_s * 2000, 1),
                "measured_or_extrapolated": "measured" if iterations == 2000 else f"{iterations} steps, extrapolated",
                "step_overhead_vs_clip_passes": round(step_s / clip_s - 1, 3),
                "peak_memory_mb": round(peak_memory_mb(device), 1),
            }
        )
    if device.type == "cuda":  # the same 30 steps with and without graphs; fp32 weights (random fp16 ones underflow)
        model32 = random_clip("RN101", device, args.tiny).float()
        init, _ = initial_points(target, saliency_model, 16, seeds)
        runs = [
            optimize_strokes(target, init, model32, iterations=30, augmentations=augmentations, early_stop=False,
                             cuda_graphs=graphs, generator=torch.Generator().manual_seed(0))
            for graphs in (True, False)
        ]  # fmt: skip
        results.append({"bench": "sketch-cuda-graphs-parity", "device": str(device), "dtype": "float32", "steps": 30,
                        "max_point_difference_px": round((runs[0].points - runs[1].points).abs().max().item(), 4),
                        "max_point_movement_px": round((runs[1].points - init).abs().max().item(), 3),
                        "eval_losses_graphs": runs[0].runs[0].eval_losses,
                        "eval_losses_eager": runs[1].runs[0].eval_losses})  # fmt: skip
    return results + bench_sketch_batches(args, device, loss_model, saliency_model)


def batch_sizes(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> tuple[int, list[int]]:
    """The default `--batch-images` here and the sizes to time: 1, it, and 4 (2 at --tiny) to compare."""
    from clipcli.pipelines.sketch import SketchSettings, default_batch_images

    chosen = default_batch_images(device, SketchSettings(), dtype)
    return chosen, sorted({1, chosen, sized(args, 4, 2)})


def bench_sketch_batches(args: argparse.Namespace, device: torch.device, loss_model, saliency_model) -> list[dict]:
    """Seconds per sketch and sketches per hour with K images (3 seeds each) optimised in one batch.

    Every step of every image runs (early stop off), so each image of a batch
    takes the same steps. On CUDA 200 steps and on the CPU `--repeats` + 1 are
    timed, and a 2000-step sketch extrapolated: start-up (saliency,
    initialisation) plus 2000 steps.
    """
    import cv2

    from clipcli.pipelines.sketch_files import target_tensor
    from clipcli.pipelines.sketch_optimize import Schedule, sketch_targets

    chosen, sizes = batch_sizes(args, device, loss_model.visual.conv1.weight.dtype)
    iterations = 200 if device.type == "cuda" else max(args.repeats, 1) + 1
    schedule = Schedule(iterations=iterations, augmentations=sized(args, 4, 1), early_stop=False)
    seeds = sized(args, (0, 1000, 2000), (0,))
    rows = []
    for batch in sizes:
        targets = []
        for index in range(batch):
            picture = np.full((224, 224, 3), 255, np.uint8)
            cv2.circle(picture, (60 + 12 * index, 110), 45, (200, 40, 40), -1)
            cv2.rectangle(picture, (120, 40 + 8 * index), (200, 180), (30, 90, 160), -1)
            targets.append(target_tensor(picture))
        stamps: list[float] = []
        start = time.perf_counter()
        sketch_targets(targets, loss_model, saliency_model, strokes=16, seeds=seeds, schedule=schedule, slots=batch,
                       on_step=lambda _, stamps=stamps: stamps.append(time.perf_counter()))  # fmt: skip
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        total_s = time.perf_counter() - start
        steps = np.diff(stamps[:-1])  # the last stamp is the final evaluation
        step_s = float(steps[10:].mean() if device.type == "cuda" else steps.min())
        per_batch_s = total_s - step_s * iterations + step_s * 2000
        rows.append({"bench": "sketch-batch", "device": str(device), "batch_images": batch,
                     "default_batch_images": batch == chosen, "seeds": len(seeds),
                     "augmentations": schedule.augmentations, "iterations_timed": iterations,
                     "ms_per_step": round(step_s * 1000, 2), "seconds_per_sketch_2000_steps": round(per_batch_s, 1),
                     "sketches_per_hour": round(3600 * batch / per_batch_s, 2),
                     "measured_or_extrapolated": f"{iterations} steps, extrapolated",
                     "peak_memory_mb": round(peak_memory_mb(device), 1)})  # fmt: skip
    return rows
