"""Throughput benchmarks: `python scripts/bench.py {clip,decode,all} [options]`.

Models are architecture-identical to the released ones, with random weights,
so their cost is that of the real ones and nothing is downloaded. Each run
prints one JSON document: device, model, batch, throughput, peak memory.
Pipeline issues add their own subcommand to BENCHMARKS.
"""

from __future__ import annotations

import argparse
import json
import warnings

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")  # raised by `import clip`

import resource
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import clip
import numpy as np
import torch
from clip.model import CLIP, convert_weights

from clipcli.models.device import resolve_device

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


def random_clip(name: str, device: torch.device) -> CLIP:
    """A CLIP with the released architecture of `name`, random weights, `clip`'s dtype policy."""
    embed, resolution, layers, width, patch, text_width, text_layers = ARCHITECTURES[name]
    model = CLIP(embed, resolution, layers, width, patch, 77, 49408, text_width, text_width // 64, text_layers)
    convert_weights(model)
    model = model.to(device).eval()
    return model.float() if device.type == "cpu" else model


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


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_clip(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """encode_image and encode_text throughput per model."""
    results = []
    for name in args.models:
        model = random_clip(name, device)
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


def bench_decode(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """sample_frames throughput on a synthetic 640x360, 30 s, 25 fps H.264/MPEG-4 video."""
    import cv2

    from clipcli.media.video import sample_frames

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.mp4"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (640, 360))
        frame = np.zeros((360, 640, 3), np.uint8)
        for index in range(750):
            frame[:] = index % 255
            cv2.putText(frame, str(index), (50, 200), cv2.FONT_HERSHEY_SIMPLEX, 4, (255, 255, 255), 8)
            writer.write(frame)
        writer.release()
        results = []
        for backend in ("decord", "pyav"):
            for mode in ("uniform", "segment-centre"):
                decode = partial(sample_frames, path, args.frames, mode, backend=backend)
                seconds = timed(decode, device, args.repeats)
                results.append(
                    {
                        "bench": "decode",
                        "device": "cpu",
                        "backend": backend,
                        "mode": mode,
                        "frames": args.frames,
                        "videos_per_s": round(1 / seconds, 2),
                        "frames_per_s": round(args.frames / seconds, 1),
                        "peak_memory_mb": round(peak_memory_mb(torch.device("cpu")), 1),
                    }
                )
    return results


def bench_depth(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """DepthCLIP images/s at 416x544 (flip on, RN50), and the extra memory a 4000x3000 photo costs."""
    import cv2

    from clipcli.pipelines.depth import depth_for_image, estimate_depth

    model = random_clip("RN50", device)
    photo = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 256, (3000, 4000, 3), dtype=np.uint8), (5, 5), 1)
    before = peak_memory_mb(device)
    start = time.perf_counter()
    depth = depth_for_image(model, photo, "auto", bins=None, words=None, template="This {} is {}",
                            temperature=0.1, flip=True)  # fmt: skip
    results = [
        {
            "bench": "depth-photo",
            "device": str(device),
            "input": "4000x3000 RGB (36 MB uint8)",
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


BENCHMARKS: dict[str, Callable[[argparse.Namespace, torch.device], list[dict]]] = {
    "clip": bench_clip,
    "decode": bench_decode,
    "depth": bench_depth,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", choices=[*BENCHMARKS, "all"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--models", nargs="+", default=["RN50", "ViT-B/32"], choices=list(ARCHITECTURES))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    names = list(BENCHMARKS) if args.bench == "all" else [args.bench]
    results = [row for name in names for row in BENCHMARKS[name](args, device)]
    json.dump({"torch": torch.__version__, "results": results}, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
