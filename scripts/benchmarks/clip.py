"""CLIP towers: encode_image and encode_text throughput."""

from __future__ import annotations

import argparse
from functools import partial

import clip
import torch

from .common import peak_memory_mb, random_clip, timed


def bench_clip(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """encode_image and encode_text throughput per model."""
    results = []
    for name in args.models:
        model = random_clip(name, device, args.tiny)
        dtype = model.visual.conv1.weight.dtype
        resolution = model.visual.input_resolution
        images = torch.rand(args.batch, 3, resolution, resolution, device=device, dtype=dtype)
        tokens = clip.tokenize(["a photo of a dog playing in the park"] * args.batch).to(device)
        with torch.inference_mode():
            image_s = timed(partial(model.encode_image, images), device, args.repeats)
            text_s = timed(partial(model.encode_text, tokens), device, args.repeats)
        results.append(
            {
                "bench": "clip",
                "device": str(device),
                "model": name,
                "dtype": str(dtype).removeprefix("torch."),
                "batch": args.batch,
                "images_per_s": round(args.batch / image_s, 2),
                "texts_per_s": round(args.batch / text_s, 2),
                "peak_memory_mb": round(peak_memory_mb(device), 1),
            }
        )
    return results
