"""AudioCLIP: audio-tower throughput."""

from __future__ import annotations

import argparse
from functools import partial

import torch

from .common import peak_memory_mb, sized, timed


def bench_audio(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """AudioCLIP audio tower: 5 s clips/s through encode_audio, and through the fbsp front end alone."""
    from clipcli.models.audio_tower import SAMPLE_RATE, ESResNeXtFBSP

    tower = ESResNeXtFBSP(embed_dim=1024).to(device).eval()  # random weights, released architecture, fp32
    clip_seconds = sized(args, 5, 0.25)
    clips = torch.randn(args.batch, int(clip_seconds * SAMPLE_RATE), device=device) * 3000.0  # int16 scale
    results = []
    with torch.inference_mode():
        for stage, fn in (("encode_audio", tower), ("fbsp_front_end", tower.log_power_bands)):
            seconds = timed(partial(fn, clips), device, args.repeats)
            results.append(
                {
                    "bench": "audio",
                    "device": str(device),
                    "model": "AudioCLIP ESResNeXt-fbsp",
                    "stage": stage,
                    "dtype": "float32",
                    "batch": args.batch,
                    "clip_seconds": clip_seconds,
                    "clips_per_s": round(args.batch / seconds, 2),
                    "realtime_factor": round(clip_seconds * args.batch / seconds, 1),
                    "peak_memory_mb": round(peak_memory_mb(device), 1),
                }
            )
    return results
