"""Video decoding: sample_frames throughput per backend and mode."""

from __future__ import annotations

import argparse
import tempfile
from functools import partial
from pathlib import Path

import torch

from .common import peak_memory_mb, sized, timed, write_counter_video


def bench_decode(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """sample_frames throughput on a synthetic 640x360, 30 s, 25 fps MPEG-4 video."""
    from clipcli.media.video import sample_frames

    with tempfile.TemporaryDirectory() as folder:
        path = write_counter_video(Path(folder) / "bench.mp4", sized(args, 750, 25), *sized(args, (640, 360), (64, 48)))
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
