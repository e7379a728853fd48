"""ActionCLIP: model, text-embedding cache and end-to-end throughput."""

from __future__ import annotations

import argparse
import tempfile
import time
from functools import partial
from pathlib import Path

import clip
import numpy as np
import torch

from .common import peak_memory_mb, random_clip, sized, timed, write_counter_video


def bench_action(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """ActionCLIP on ViT-B/32, 8 frames: clips/s (model only), text-embedding cache miss vs hit, videos/s with decoding.

    The text cache is timed on Kinetics-400 (6,400 prompts) on CUDA and on HMDB51 (816) on the CPU.
    """
    import os
    import shutil
    from unittest import mock

    from clipcli.media.video import sample_frames
    from clipcli.models.actionclip import MeanFusion, TransformerFusion
    from clipcli.models.text_encoder import encode_prompts
    from clipcli.pipelines import action, action_text
    from clipcli.prefetch import read_ahead

    frames, model = 8, random_clip("ViT-B/32", device, args.tiny)
    names400 = action_text.load_label_set("kinetics400")
    text = torch.nn.functional.normalize(torch.randn(16 * 400, 512, device=device), dim=-1)
    pixels = np.random.default_rng(0).integers(0, 256, (args.batch * frames, 256, 340, 3), dtype=np.uint8)
    results = []
    for fusion in (MeanFusion(), TransformerFusion(512, 6, 8).to(device).eval()):
        classify = partial(action.classify_frames, model, fusion, pixels, frames, text, names400)
        with torch.inference_mode():
            seconds = timed(classify, device, args.repeats)
        results.append({"bench": "action-model", "device": str(device), "model": "ViT-B/32", "fusion": fusion.kind,
                        "frames": frames, "frame_size": "340x256", "batch": args.batch, "classes": 400,
                        "clips_per_s": round(args.batch / seconds, 2),
                        "peak_memory_mb": round(peak_memory_mb(device), 1)})  # fmt: skip

    label_set = "kinetics400" if device.type == "cuda" else "hmdb51"
    names = action_text.load_label_set(label_set)
    prompts = action_text.template_prompts(names)[:256]
    with torch.inference_mode():
        full_s = timed(lambda: model.encode_text(clip.tokenize(prompts).to(device)), device, 1)
        trimmed_s = timed(partial(encode_prompts, model, prompts), device, 1)
    with tempfile.TemporaryDirectory() as cache, mock.patch.dict(os.environ, {"XDG_CACHE_HOME": cache}):
        start = time.perf_counter()
        action.text_features(model, names, model_id="bench")
        miss_s = time.perf_counter() - start
        action_text._TEXT_CACHE.clear()  # forget the in-memory copy: the next call reads the disk cache
        start = time.perf_counter()
        action.text_features(model, names, model_id="bench")
        hit_s = time.perf_counter() - start
    results.append({"bench": "action-text-cache", "device": str(device), "labels": label_set,
                    "prompts": 16 * len(names), "miss_s": round(miss_s, 3), "hit_s": round(hit_s, 4),
                    "encode_256_prompts_77_tokens_s": round(full_s, 3),
                    "encode_256_prompts_trimmed_s": round(trimmed_s, 3)})  # fmt: skip

    with tempfile.TemporaryDirectory() as folder:
        first = write_counter_video(
            Path(folder) / "clip0.mp4", sized(args, 250, 25), *sized(args, (640, 360), (64, 48))
        )
        videos = [first] + [shutil.copy(first, Path(folder) / f"clip{i}.mp4") for i in range(1, 4 * args.batch)]
        videos = [Path(v) for v in videos]
        classifier = action.Classifier(model, MeanFusion(), names400, text, frames)

        def load(path: Path):
            return sample_frames(path, frames, "segment-centre")

        start = time.perf_counter()
        for path in videos:
            load(path)
        decode_s = time.perf_counter() - start
        for ahead in (0, min(4, os.cpu_count() or 1)):
            start = time.perf_counter()
            with torch.inference_mode():
                for path, sampled in read_ahead(videos, load, workers=ahead):
                    action.classify_video(classifier, path, 5, sampled)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - start
            results.append({"bench": "action-end-to-end", "device": str(device), "model": "ViT-B/32",
                            "video": "640x360 10 s MPEG-4", "videos": len(videos), "prefetch_threads": ahead,
                            "videos_per_s": round(len(videos) / seconds, 2),
                            "decode_only_videos_per_s": round(len(videos) / decode_s, 2)})  # fmt: skip
    return results
