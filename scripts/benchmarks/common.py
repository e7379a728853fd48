"""Shared by every benchmark: random-weight CLIPs, tiny sizes, timing, memory and synthetic media."""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from clip.model import CLIP, convert_weights

# (embed_dim, image_resolution, vision_layers, vision_width, patch, text_width, text_layers)
ARCHITECTURES = {
    "RN50": (1024, 224, (3, 4, 6, 3), 64, None, 512, 12),
    "RN101": (512, 224, (3, 4, 23, 3), 64, None, 512, 12),
    "RN50x4": (640, 288, (4, 6, 10, 6), 80, None, 640, 12),
    "RN50x16": (768, 384, (6, 8, 18, 8), 96, None, 768, 12),
    "RN50x64": (1024, 448, (3, 15, 36, 10), 128, None, 1024, 12),
    "ViT-B/32": (512, 224, 12, 768, 32, 512, 12),
    "ViT-B/16": (512, 224, 12, 768, 16, 512, 12),
    "ViT-L/14": (768, 224, 24, 1024, 14, 768, 12),
    "ViT-L/14@336px": (768, 336, 24, 1024, 14, 768, 12),
}


def random_clip(name: str, device: torch.device, tiny: bool = False) -> CLIP:
    """A CLIP with the released architecture of `name`, random weights, `clip`'s dtype policy.

    `tiny` keeps the family, input resolution, patch size, embedding width and
    the ResNet's layer4 = k x embedding ratio, with one block per stage and
    one head per tower, so every pipeline accepts it and it runs in milliseconds.
    """
    embed, resolution, layers, width, patch, text_width, text_layers = ARCHITECTURES[name]
    if tiny:
        layers, text_width, text_layers = (1 if patch else (1, 1, 1, 1)), 64, 1
        embed, width = (embed, 64) if patch else (embed * 8 // width, 8)
    model = CLIP(embed, resolution, layers, width, patch, 77, 49408, text_width, text_width // 64, text_layers)
    convert_weights(model)
    model = model.to(device).eval()
    return model.float() if device.type == "cpu" else model


def sized(args: argparse.Namespace, full, tiny):
    """`full`, or `tiny` under --tiny: the sizes the test suite runs every benchmark at, to see it still works."""
    return tiny if args.tiny else full


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median seconds per call after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def seconds_once(fn: Callable[[], object]) -> float:
    """Wall seconds of one call of `fn`."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_counter_video(path: Path, frames: int, width: int, height: int) -> Path:
    """A 25 fps MPEG-4 clip whose frames show their own number on a grey that changes every frame."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (width, height))
    frame = np.zeros((height, width, 3), np.uint8)
    for index in range(frames):
        frame[:] = index % 255
        cv2.putText(frame, str(index), (50, 200), cv2.FONT_HERSHEY_SIMPLEX, 4, (255, 255, 255), 8)
        writer.write(frame)
    writer.release()
    return path
