"""CLIP-ViL features: model, decoding and end-to-end images/s."""

from __future__ import annotations

import argparse
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from .common import peak_memory_mb, random_clip, sized, timed


def bench_features(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """CLIP-ViL vqa layout, RN50, batch 8: images/s for the model alone, for decoding, and for the whole run."""
    import cv2

    from clipcli.media.images import load_image
    from clipcli.pipelines.features import extract
    from clipcli.pipelines.features_grid import vqa_grid, vqa_pixels
    from clipcli.prefetch import read_ahead

    batch = sized(args, 8, 2)
    model = random_clip("RN50", device, args.tiny)
    images = torch.randn(batch, 3, 600, 1000, device=device)
    with torch.inference_mode():
        model_s = timed(partial(vqa_grid, model, images), device, args.repeats)
    count = batch * (1 if device.type == "cpu" else 16)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for index in range(count):  # 640x480 JPEGs, the size of most COCO images
            path = Path(folder) / f"img{index:04d}.jpg"
            cv2.imwrite(str(path), cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), (7, 7), 2))
            paths.append(path)
        start = time.perf_counter()
        for _ in read_ahead(paths, lambda p: vqa_pixels(load_image(p)), workers=4, ahead=2 * batch):
            pass
        decode_s = time.perf_counter() - start
        if device.type == "cuda":  # the timed model calls warmed the CPU path already
            extract(model, None, paths[:batch], out=Path(folder) / "warm", model_name="RN50", batch_size=batch)
        start = time.perf_counter()
        extract(model, None, paths, out=Path(folder) / "feats", model_name="RN50", batch_size=batch)
        run_s = time.perf_counter() - start
    row = {"bench": "features", "device": str(device), "model": "RN50", "layout": "vqa", "size": "600x1000",
           "dtype": str(model.dtype).removeprefix("torch."), "batch": batch, "images": count,
           "peak_memory_mb": round(peak_memory_mb(device), 1)}  # fmt: skip
    stages = {
        "model (stem..layer4)": batch / model_s,
        "decode+resize (4 threads, 640x480 JPEG)": count / decode_s,
        "end to end (decode, model, write .npy)": count / run_s,
    }
    return [{**row, "stage": stage, "images_per_s": round(rate, 2)} for stage, rate in stages.items()]
