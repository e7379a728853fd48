#!/usr/bin/env bash
# Usage: scripts/gpu_check_sketch.sh DEVICE OUT [--tiny]
#
# The device check of issue 20 (sketch on a GPU), under 6 minutes on one H100,
# nothing downloaded; one JSON object per section on stdout, all of them in
# OUT/gpu_check_sketch.json:
#   1. a profile of default sketch steps (torch.profiler): wall and kernel
#      time per step, host syncs, the busiest operators;
#   2. seconds per default sketch (16 strokes, 3 seeds, 4 augmentations, all
#      2000 steps, early stop off);
#   3. sketches per hour at --batch-images K = 1, 4, 8, 16, 200 steps each,
#      extrapolated to 2000;
#   4. the fp16 path (clip's CUDA weights) against fp32 on the same inputs:
#      loss within 1% and gradient cosine at least 0.99.
# Models: RN101 and ViT-B/32 of the released architectures with random
# weights (scripts/benchmarks/common.py random_clip), the convolutions
# He-initialised so that features keep their scale in fp16.
#
# DEVICE: cuda, cuda:N, cpu or auto. --tiny: tiny models and a few steps, to
# check this script on a CPU (tests/test_sketch_batch.py). Example:
#   scripts/gpu_check_sketch.sh cuda "$OUT"
#
# Exit status: 0 when done; 1 when the fp16 path is out of tolerance; 2 for a
# usage error; 124 when it ran past 340 s.
# PYTHON names the interpreter (default: .venv/bin/python, else python3).
set -euo pipefail

usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; }

case "${1:-}" in -h | --help) usage; exit 0 ;; esac
if (($# < 2)); then
    echo "gpu_check_sketch.sh: give DEVICE and OUT" >&2
    usage >&2
    exit 2
fi
device=$1 out=$2
shift 2
mkdir -p "$out"
out="$(cd "$out" && pwd)"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
    if [[ -x .venv/bin/python ]]; then python=.venv/bin/python; else python=python3; fi
fi
export PYTHONPATH="$repo:$repo/scripts${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

timeout 340 "$python" - --device "$device" --json "$out/gpu_check_sketch.json" "$@" <<'PY'
"""The python part of scripts/gpu_check_sketch.sh: one JSON object per section on stdout, as it goes."""

import argparse
import copy
import json
import math
import sys
import time
import warnings

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from benchmarks.common import random_clip  # noqa: E402
from clip.model import convert_weights  # noqa: E402

from clipcli.models.device import resolve_device  # noqa: E402
from clipcli.pipelines.sketch_files import target_tensor  # noqa: E402
from clipcli.pipelines.sketch_objective import ClipassoLoss, render_sketch  # noqa: E402
from clipcli.pipelines.sketch_optimize import (  # noqa: E402
    Schedule,
    Sketching,
    initial_points,
    optimize_many,
    sketch_targets,
)

LOSS_TOLERANCE = 1e-2  # relative, per sketch
GRADIENT_COSINE = 0.99  # of the gradient on the stroke points, fp16 against fp32

parser = argparse.ArgumentParser()
parser.add_argument("--tiny", action="store_true")
parser.add_argument("--device", default="auto")
parser.add_argument("--json", required=True)
args = parser.parse_args()
device = resolve_device(args.device)
cuda = device.type == "cuda"
tiny = args.tiny
seeds = (0,) if tiny else (0, 1000, 2000)
augmentations = 1 if tiny else 4
report = {"device": torch.cuda.get_device_name(device) if cuda else "cpu", "torch": torch.__version__, "tiny": tiny}


def say(section, value):
    report[section] = value
    print(json.dumps({section: value}), flush=True)


def synced():
    if cuda:
        torch.cuda.synchronize(device)
    return time.perf_counter()


def he_resnet():
    """Random RN101 in fp32 on the CPU, convolutions He-initialised (clip's init makes fp16 features underflow)."""
    model = random_clip("RN101", torch.device("cpu"), tiny).float()
    generator = torch.Generator().manual_seed(0)
    for module in model.visual.modules():
        if isinstance(module, torch.nn.Conv2d):
            fan_in = module.weight[0].numel()
            module.weight.data = torch.randn(module.weight.shape, generator=generator) * math.sqrt(2 / fan_in)
    return model.eval()


def half(model):
    model = copy.deepcopy(model)
    convert_weights(model)
    return model.to(device)


def picture(index):
    import cv2

    pixels = np.full((224, 224, 3), 255, np.uint8)
    cv2.circle(pixels, (60 + 12 * index, 110), 45, (200, 40, 40), -1)
    cv2.rectangle(pixels, (120, 40 + 8 * index), (200, 180), (30, 90, 160), -1)
    return target_tensor(pixels)


base = he_resnet()
loss_model = half(base) if cuda else base.to(device)  # the dtypes clip loads: fp16 on CUDA, fp32 on a CPU
saliency_model = random_clip("ViT-B/32", device, tiny)
dtype = str(loss_model.visual.conv1.weight.dtype).removeprefix("torch.")
say("models", {"loss": "RN101", "saliency": "ViT-B/32", "dtype": dtype, "seeds": len(seeds),
               "augmentations": augmentations, "strokes": 16})

# 1. Profile: steps of one default sketch, graphs already captured by a warm-up on the same loss.
loss = ClipassoLoss(loss_model)
target = picture(0)
init, _ = initial_points(target, saliency_model, 16, seeds)


def steps(count):
    stamps = []
    start = lambda: Sketching.start(loss.prepare(target), init, seeds, 1.0, torch.Generator().manual_seed(0))  # noqa: E731
    schedule = Schedule(iterations=count, augmentations=augmentations, early_stop=False)
    optimize_many([start], loss, schedule, on_step=lambda _: stamps.append(time.perf_counter()))
    return stamps


steps(1 if tiny else 15)
activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
profiled = 2 if tiny else 20
with torch.profiler.profile(activities=activities) as profiler:
    stamps = steps(profiled)
    synced()
events = profiler.key_averages()
wall_ms = (stamps[-2] - stamps[0]) / (len(stamps) - 2) * 1000
kernel_ms = sum(event.self_device_time_total for event in events) / 1000 / (profiled + 1) if cuda else None
syncs = {name: 0 for name in ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaMemcpyAsync", "aten::item")}
for event in events:
    if event.key in syncs:
        syncs[event.key] = round(event.count / (profiled + 1), 1)
say("profile", {"steps": profiled, "wall_ms_per_step": round(wall_ms, 2),
                "kernel_ms_per_step": None if kernel_ms is None else round(kernel_ms, 2),
                "gpu_busy_fraction": None if kernel_ms is None else round(kernel_ms / wall_ms, 3),
                "host_calls_per_step": syncs})
sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
print(events.table(sort_by=sort, row_limit=15), flush=True)

# 2. Seconds per default sketch, every step.
iterations = 2 if tiny else 2000
start = synced()
(result,) = sketch_targets([target], loss_model, saliency_model, seeds=seeds,
                           schedule=Schedule(iterations=iterations, augmentations=augmentations, early_stop=False))
seconds = synced() - start
say("default_sketch", {"iterations": result.iterations, "seconds": round(seconds, 2),
                       "ms_per_step": round(seconds / (iterations + 1) * 1000, 2)})

# 3. Sketches per hour at K images a batch.
rows = []
timed = 2 if tiny else 200
for batch in (1, 2) if tiny else (1, 4, 8, 16):
    stamps = []
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        start = synced()
        sketch_targets([picture(i) for i in range(batch)], loss_model, saliency_model, seeds=seeds, slots=batch,
                       schedule=Schedule(iterations=timed, augmentations=augmentations, early_stop=False),
                       on_step=lambda _: stamps.append(time.perf_counter()))
        total = synced() - start
    except torch.cuda.OutOfMemoryError:
        rows.append({"batch_images": batch, "error": "out of memory"})
        continue
    step = float(np.median(np.diff(stamps[:-1])[min(10, timed - 2):]))
    per_batch = total - step * timed + step * 2000
    rows.append({"batch_images": batch, "ms_per_step": round(step * 1000, 2),
                 "seconds_per_sketch_2000_steps": round(per_batch, 1),
                 "sketches_per_hour": round(3600 * batch / per_batch, 1),
                 "peak_memory_mb": round(torch.cuda.max_memory_allocated(device) / 2**20) if cuda else None})
say("batches", rows)

# 4. fp16 against fp32 on the same strokes, target and augmentations.
sketch_points = init.to(device).requires_grad_(True)
results = {}
for name, model in (("fp16", half(base)), ("fp32", base.to(device))):
    points = sketch_points.detach().clone().requires_grad_(True)
    total, plain = ClipassoLoss(model, target, cuda_graphs=False)(
        render_sketch(points), augmentations, torch.Generator().manual_seed(0)
    )
    total.sum().backward()
    results[name] = (total.detach().double(), points.grad.double().flatten())
loss_error = ((results["fp16"][0] - results["fp32"][0]).abs() / results["fp32"][0].abs()).max().item()
cosine = torch.nn.functional.cosine_similarity(results["fp16"][1], results["fp32"][1], dim=0).item()
passed = loss_error <= LOSS_TOLERANCE and cosine >= GRADIENT_COSINE
say("fp16_vs_fp32", {"max_relative_loss_difference": loss_error, "gradient_cosine": round(cosine, 5),
                     "tolerance": {"loss_relative": LOSS_TOLERANCE, "gradient_cosine": GRADIENT_COSINE},
                     "passed": passed})
with open(args.json, "w") as handle:
    json.dump(report, handle, indent=1)
sys.exit(0 if passed else 1)
PY
