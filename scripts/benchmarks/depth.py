"""DepthCLIP: images/s and the memory a full-size photo costs."""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np
import torch

from .common import peak_memory_mb, random_clip, sized, timed


def bench_depth(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """DepthCLIP images/s at 416x544 (flip on, RN50), and the extra memory a 4000x3000 photo costs."""
    import cv2

    from clipcli.pipelines.depth import depth_for_image, estimate_depth

    model = random_clip("RN50", device, args.tiny)
    height, width = sized(args, (3000, 4000), (300, 400))
    photo = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8), (5, 5), 1)
    before = peak_memory_mb(device)
    start = time.perf_counter()
    depth = depth_for_image(model, photo, "auto")
    results = [
        {
            "bench": "depth-photo",
            "device": str(device),
            "input": f"{width}x{height} RGB ({photo.nbytes / 2**20:.0f} MB uint8)",
            "seconds": round(time.perf_counter() - start, 3),
            "output_mb": round(depth.nbytes / 2**20, 1),
            "peak_growth_mb": round(peak_memory_mb(device) - before, 1),
        }
    ]
    images = torch.randn(args.batch, 3, 416, 544, device=device)
    seconds = timed(partial(estimate_depth, model, images), device, args.repeats)
    results.append(
        {
            "bench": "depth",
            "device": str(device),
            "model": "RN50",
            "size": "416x544",
            "flip": True,
            "batch": args.batch,
            "images_per_s": round(args.batch / seconds, 2),
            "peak_memory_mb": round(peak_memory_mb(device), 1),
        }
    )
    return results
