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

import clipcli  # noqa: F401  first: it sets torch's thread spin-wait before torch loads

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")  # raised by `import clip`

import resource
import subprocess
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
    from clipcli.pipelines import action

    frames, model = 8, random_clip("ViT-B/32", device, args.tiny)
    names400 = action.load_label_set("kinetics400")
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
    names = action.load_label_set(label_set)
    prompts = action.template_prompts(names)[:256]
    with torch.inference_mode():
        full_s = timed(lambda: model.encode_text(clip.tokenize(prompts).to(device)), device, 1)
        trimmed_s = timed(partial(encode_prompts, model, prompts), device, 1)
    with tempfile.TemporaryDirectory() as cache, mock.patch.dict(os.environ, {"XDG_CACHE_HOME": cache}):
        start = time.perf_counter()
        action.text_features(model, names, model_id="bench")
        miss_s = time.perf_counter() - start
        action._TEXT_CACHE.clear()  # forget the in-memory copy: the next call reads the disk cache
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
            with torch.inference_mode(), action.Prefetcher(videos, load, ahead) as prefetch:
                for path in videos:
                    action.classify_video(classifier, path, 5, prefetch.get(path))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - start
            results.append({"bench": "action-end-to-end", "device": str(device), "model": "ViT-B/32",
                            "video": "640x360 10 s MPEG-4", "videos": len(videos), "prefetch_threads": ahead,
                            "videos_per_s": round(len(videos) / seconds, 2),
                            "decode_only_videos_per_s": round(len(videos) / decode_s, 2)})  # fmt: skip
    return results


def bench_features(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """CLIP-ViL vqa layout, RN50, batch 8: images/s for the model alone, for decoding, and for the whole run."""
    import cv2

    from clipcli.media.images import load_image
    from clipcli.pipelines.features import extract, read_ahead, vqa_grid, vqa_pixels

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


def _write_h264(path: Path, seconds: int, fps: int, width: int, height: int, gop: int) -> Path:
    """A synthetic H.264 clip (x264 ultrafast, a keyframe every `gop` frames): a panning gradient with noise."""
    import av

    rng = np.random.default_rng(0)
    columns = np.linspace(0, 255, 2 * width).astype(np.uint8)
    base = np.stack(
        [
            np.tile(columns, (height, 1)),
            np.tile(columns[::-1], (height, 1)),
            np.full((height, 2 * width), 96, np.uint8),
        ],
        -1,
    )
    base = np.clip(base.astype(np.int16) + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        for index in range(seconds * fps):
            shift = (index * 4) % width
            frame = np.ascontiguousarray(base[:, shift : shift + width])
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def _clip4clip_opencv_frames(path: Path, max_frames: int) -> np.ndarray:
    """CLIP4Clip's own extractor (rawvideo_util.py, docs/methods/retrieve.md): one OpenCV seek + read per second
    (feature_framerate 1, int(fps)), then `max_frames` of those by linspace (slice_framepos 2)."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    count, fps = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), int(capture.get(cv2.CAP_PROP_FPS))
    frames = []
    for second in range((count + fps - 1) // fps + 1):
        capture.set(cv2.CAP_PROP_POS_FRAMES, second * fps)
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return np.stack(frames)[np.linspace(0, len(frames) - 1, max_frames, dtype=int)]


def _opencv_every_frame(path: Path, max_frames: int) -> np.ndarray:
    """Decode every frame with OpenCV, keeping the uniform ones (the brute-force reference)."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    wanted, kept, index = set(np.rint(np.linspace(0, count - 1, max_frames)).astype(int).tolist()), [], 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if index in wanted:
            kept.append(frame)
        index += 1
    capture.release()
    return np.stack(kept)


def _seconds_once(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _sampling_cost(fn: Callable[[], object]) -> tuple[float, float]:
    """(median seconds, resident-memory growth in MB) of `fn` run in a forked child.

    The child starts from this process's memory, so its peak RSS minus its RSS
    at the start is what sampling itself needed. Calls under 3 s are repeated
    three times (median); the page cache is warm.
    """
    import json as json_module
    import os

    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the child: measure, report through the pipe, exit without cleanup
        os.close(reader)
        with open("/proc/self/statm") as statm:
            start_kb = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
        times = [_seconds_once(fn)]
        if times[0] < 3:
            times += [_seconds_once(fn), _seconds_once(fn)]
        growth_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start_kb
        os.write(writer, json_module.dumps([float(np.median(times)), growth_kb / 1024]).encode())
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        report = pipe.read()
    os.waitpid(child, 0)
    seconds, growth_mb = json_module.loads(report)
    return seconds, growth_mb


def bench_retrieve(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """CLIP4Clip retrieval: 12-frame sampling of a 60 s 720p H.264 clip (keyframe every 250 frames) against
    CLIP4Clip's OpenCV extractor; indexing videos/s (ViT-B/32, random weights); query latency over
    10k / 100k / 1M stored videos (random embeddings), and loading a 100k-video index; with faiss, the
    approximate search (`--ann`) at 100k / 1M: recall@10 against exact search, latency, build time."""
    from clipcli.media.keyframes import sample_keyframes
    from clipcli.media.video import sample_frames
    from clipcli.models.clip4clip import MeanPHead
    from clipcli.pipelines import retrieve
    from clipcli.store.index import VideoIndex

    results, frames = [], args.frames
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        width, height = sized(args, (1280, 720), (128, 72))
        long_clip = _write_h264(folder / "long.mp4", sized(args, 60, 4), 25, width, height, 250)
        short_clip = _write_h264(folder / "short.mp4", sized(args, 15, 1), 25, width, height, 250)
        samplers = {
            "clip4clip-opencv (1 seek per second)": partial(_clip4clip_opencv_frames, long_clip, frames),
            "opencv every frame": partial(_opencv_every_frame, long_clip, frames),
            "uniform decord": partial(sample_frames, long_clip, frames, "uniform", backend="decord"),
            "uniform pyav": partial(sample_frames, long_clip, frames, "uniform", backend="pyav"),
            "fps (clip4clip rule) decord": partial(sample_frames, long_clip, frames, "fps", backend="decord"),
            "keyframes (--fast)": partial(sample_keyframes, long_clip, frames),
            "uniform decord, 15 s clip": partial(sample_frames, short_clip, frames, "uniform", backend="decord"),
        }
        baseline = None
        for name, sample in samplers.items():
            seconds, growth_mb = _sampling_cost(sample)
            baseline = baseline or seconds
            results.append(
                {
                    "bench": "retrieve-sampling",
                    "video": f"{15 if '15 s' in name else 60} s 1280x720 H.264, 25 fps, keyframe every 250",
                    "method": name,
                    "frames": frames,
                    "seconds": round(seconds, 3),
                    "frames_per_s": round(frames / seconds, 1),
                    "speedup_vs_clip4clip": round(baseline / seconds, 1),
                    "memory_growth_mb": round(growth_mb, 1),
                }
            )

        clip_seconds, (width, height) = sized(args, 10, 1), sized(args, (640, 360), (64, 48))
        videos = [_write_h264(folder / f"clip{i}.mp4", clip_seconds, 25, width, height, 250) for i in range(8)]
        model = random_clip("ViT-B/32", device, args.tiny)
        retriever = retrieve.Retriever(model, MeanPHead().to(device), "sha256:bench", device)
        pixels = torch.randn(len(videos) * frames, 3, 224, 224)
        with torch.inference_mode():
            model_s = timed(partial(retriever.encode_frames, pixels), device, 1)
        with VideoIndex(folder / "index") as index:
            start = time.perf_counter()
            summary = retrieve.update_index(index, retriever, videos, roots=[folder], frames=frames)
            index_s = time.perf_counter() - start
        results.append(
            {
                "bench": "retrieve-index",
                "device": str(device),
                "model": "ViT-B/32",
                "frames": frames,
                "videos": summary.embedded,
                "video": "10 s 640x360 H.264, 25 fps",
                "videos_per_s": round(summary.embedded / index_s, 2),
                "model_only_frames_per_s": round(len(pixels) / model_s, 1),
                "peak_memory_mb": round(peak_memory_mb(device), 1),
            }
        )

        rng = np.random.default_rng(0)
        stored_counts = sized(args, (10_000, 100_000, 1_000_000), (200, 4000))
        for count in stored_counts:
            matrix = np.empty((count, 512), np.float16)
            for start in range(0, count, 100_000):
                block = rng.standard_normal((min(100_000, count - start), 512), dtype=np.float32)
                matrix[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
            query = torch.from_numpy(matrix[count // 2].astype(np.float32))
            seconds = timed(partial(retrieve.rank_videos, query, matrix, 10), torch.device("cpu"), args.repeats)
            results.append(
                {
                    "bench": "retrieve-query",
                    "device": "cpu",
                    "videos": count,
                    "top_k": 10,
                    "latency_ms": round(seconds * 1000, 2),
                    "search": "exact",
                }
            )
            if count == stored_counts[1]:
                results.append(_index_load_latency(folder, matrix, query, args.repeats))
            if count >= stored_counts[1] and _has_faiss():
                results.append(_ann_search_cost(matrix, "random unit vectors", rng))
                clusters = sized(args, 2000, 20)
                results.append(_ann_search_cost(_clustered_unit_rows(count, rng, clusters), "clustered", rng))
    return results


def _has_faiss() -> bool:
    from clipcli.store.ann import available

    return available()


def _clustered_unit_rows(count: int, rng: np.random.Generator, clusters: int = 2000) -> np.ndarray:
    """Unit fp16 rows around `clusters` random centres, each at cosine 0.71 from its centre (0.5 within a cluster)."""
    centres = rng.standard_normal((clusters, 512), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    matrix = np.empty((count, 512), np.float16)
    for start in range(0, count, 100_000):
        size = min(100_000, count - start)
        block = centres[rng.integers(0, clusters, size)] + rng.standard_normal((size, 512), dtype=np.float32) / 512**0.5
        matrix[start : start + size] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return matrix


def _ann_search_cost(matrix: np.ndarray, data: str, rng: np.random.Generator, queries: int = 100) -> dict:
    """`--ann`'s faiss IVF index on the CPU: build time, calibrated nprobe, recall@10 against exact search and
    latency (approximate search plus exact re-scoring, vs the exact `rank_videos`) over `queries` queries:
    random unit vectors, or for clustered data a random stored row plus a random vector of the same length."""
    from clipcli.pipelines.retrieve import rank_videos, rank_videos_ann
    from clipcli.store.ann import AnnIndex, exact_top_k
    from clipcli.store.index import Matrix

    start = time.perf_counter()
    approximate = AnnIndex.build(matrix)
    build_s = time.perf_counter() - start
    if data == "clustered":
        picked = matrix[rng.integers(0, len(matrix), queries)].astype(np.float32)
        noise = rng.standard_normal(picked.shape, dtype=np.float32)
        probes = picked + noise / np.linalg.norm(noise, axis=1, keepdims=True)
    else:
        probes = rng.standard_normal((queries, matrix.shape[1]), dtype=np.float32)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    truth = exact_top_k(probes, matrix, 10)
    part = Matrix([b""] * len(matrix), matrix)
    found, ann_s, exact_s = 0, [], []
    for probe, rows in zip(torch.from_numpy(probes), truth, strict=True):
        ann_s.append(_seconds_once(partial(rank_videos_ann, probe, part, approximate, 10)))
        exact_s.append(_seconds_once(partial(rank_videos, probe, matrix, 10)))
        found += len(set(rank_videos_ann(probe, part, approximate, 10)[0]) & set(rows.tolist()))
    return {
        "bench": "retrieve-ann",
        "device": "cpu",
        "data": f"{data}, 512-d",
        "videos": len(matrix),
        "queries": queries,
        "top_k": 10,
        "index": f"IVF{approximate.nlist},SQfp16",
        "nprobe": approximate.nprobe,
        "calibrated_recall_at_10": round(approximate.recall, 3),
        "recall_at_10": round(found / truth.size, 3),
        "ann_latency_ms": round(float(np.median(ann_s)) * 1000, 2),
        "exact_latency_ms": round(float(np.median(exact_s)) * 1000, 2),
        "build_s": round(build_s, 1),
    }


def _index_load_latency(folder: Path, matrix: np.ndarray, query: torch.Tensor, repeats: int) -> dict:
    """Write the embeddings into a real index, then time building its snapshot and a cold open + search."""
    from clipcli.pipelines.retrieve import rank_videos
    from clipcli.store.index import VideoIndex, VideoRecord

    root, cpu = folder / "library", torch.device("cpu")
    with VideoIndex(folder / "big") as index:
        index.reset({"bench": True})
        for start in range(0, len(matrix), 10_000):
            rows = range(start, min(start + 10_000, len(matrix)))
            index.write(
                VideoRecord(
                    root / f"{row:07d}.mp4", 1, 1, 10.0, matrix[row], matrix[row][None], np.ones(1), np.zeros(1)
                )
                for row in rows
            )
        build_s = _seconds_once(partial(index.matrix, [root]))

    def open_and_search() -> None:
        with VideoIndex(folder / "big") as index:
            rank_videos(query, index.matrix([root]).embeddings, 10)

    search_s = timed(open_and_search, cpu, repeats)
    row = {
        "bench": "retrieve-index-load",
        "device": "cpu",
        "videos": len(matrix),
        "snapshot_build_s": round(build_s, 3),
        "open_load_and_search_ms": round(search_s * 1000, 1),
    }
    if _has_faiss():  # the same with `--ann on`, its saved faiss index memory-mapped
        from clipcli.pipelines.retrieve import rank_videos_ann

        def open_and_search_ann() -> None:
            with VideoIndex(folder / "big") as index:
                rank_videos_ann(query, index.matrix([root]), index.ann(), 10)

        row["open_load_and_search_ann_ms"] = round(timed(open_and_search_ann, cpu, repeats) * 1000, 1)
    return row


def write_binary_ply(path: Path, size: int, seed: int = 0) -> Path:
    """A scan-like cloud of `size` points (a unit sphere's shell, 1% radial noise) as x, y, z float32 binary PLY."""
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((size, 3), dtype=np.float32)
    radii = 1.0 + 0.01 * rng.standard_normal((size, 1), dtype=np.float32)
    shell = directions / np.linalg.norm(directions, axis=1, keepdims=True) * radii
    header = f"ply\nformat binary_little_endian 1.0\nelement vertex {size}\n"
    header += "property float x\nproperty float y\nproperty float z\nend_header\n"
    with open(path, "wb") as handle:
        handle.write(header.encode("ascii"))
        handle.write(shell.astype("<f4").tobytes())
    return path


def large_cloud_cost(size: int, points: int = 1024) -> dict:
    """Seconds to read a `size`-point binary PLY as point-classify does, then to prepare it (fps) on the CPU."""
    from clipcli.pipelines.point import read_clouds
    from clipcli.pipelines.point_prep import CloudOptions, prepare_clouds

    with tempfile.TemporaryDirectory() as folder:
        path = write_binary_ply(Path(folder) / "scan.ply", size)
        started = time.perf_counter()
        (cloud,) = read_clouds(path)
        loaded = time.perf_counter()
        prepared = prepare_clouds([cloud.points], CloudOptions(points=points), "cpu")
        finished = time.perf_counter()
    return {
        "bench": "point-large-cloud",
        "device": "cpu",
        "cpu_threads": torch.get_num_threads(),
        "points_in_file": size,
        "points": int(prepared.shape[1]),
        "sampling": "fps",
        "load_s": round(loaded - started, 3),
        "prepare_s": round(finished - loaded, 3),
        "total_s": round(finished - started, 3),
    }


def write_binary_stl(path: Path, faces: int, seed: int = 0) -> Path:
    """`faces` random triangles on a unit sphere's shell as binary STL (normal, three corners, attribute count each)."""
    corners = np.random.default_rng(seed).standard_normal((faces, 3, 3)).astype(np.float32)
    corners /= np.linalg.norm(corners, axis=2, keepdims=True)
    records = np.zeros(faces, dtype=[("normal", "<f4", 3), ("corners", "<f4", (3, 3)), ("attribute", "<u2")])
    records["corners"] = corners
    with open(path, "wb") as handle:
        handle.write(b"clipcli bench mesh".ljust(80, b" ") + np.uint32(faces).tobytes() + records.tobytes())
    return path


def large_mesh_cost(faces: int) -> dict:
    """Seconds to read a `faces`-triangle binary STL and sample its surface as point-classify does (best of 3)."""
    from clipcli.pipelines.point import MESH_SAMPLES, read_clouds

    with tempfile.TemporaryDirectory() as folder:
        path = write_binary_stl(Path(folder) / "part.stl", faces)
        seconds = min(_seconds_once(lambda: read_clouds(path)) for _ in range(3))
    return {
        "bench": "point-large-mesh",
        "device": "cpu",
        "faces_in_file": faces,
        "points": MESH_SAMPLES,
        "load_s": round(seconds, 3),
    }


def bench_point(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """PointCLIP: projection clouds/s, end to end on ViT-B/16, and one large PLY read and prepared.

    Projection runs V1/V2 at 1024 and 16k points (CPU, and the device); the
    large cloud has --cloud-points points (10 million by default), the large
    mesh is a 1-million-triangle binary STL, both read on the CPU.
    """
    from clipcli.pipelines.point import ZeroShotClassifier, load_label_set
    from clipcli.pipelines.point_prep import CloudOptions, prepare_clouds
    from clipcli.render.projection import project_v1, project_v2

    rng = np.random.default_rng(0)

    def ellipsoids(count: int, size: int) -> np.ndarray:
        """Surface-like clouds (ellipsoid shells of random proportions), y-up, in the unit sphere."""
        directions = rng.standard_normal((count, size, 3))
        shells = directions / np.linalg.norm(directions, axis=2, keepdims=True) * rng.uniform(0.3, 1.0, (count, 1, 3))
        return shells.astype(np.float32)

    results = []
    threads = torch.get_num_threads()
    settings = [(torch.device("cpu"), count) for count in sorted({threads, 1}, reverse=True)]
    for where, count in settings + ([(device, threads)] if device.type == "cuda" else []):
        torch.set_num_threads(count)
        for size, batch in sized(args, ((1024, 64), (16384, 16)), ((1024, 4),)):
            clouds = torch.from_numpy(ellipsoids(batch, size)).to(where)
            for name, project in (("v1", project_v1), ("v2", project_v2)):
                seconds = timed(partial(project, clouds), where, args.repeats)
                results.append(
                    {
                        "bench": "point-projection",
                        "device": str(where),
                        "cpu_threads": count if where.type == "cpu" else None,
                        "projection": name,
                        "points": size,
                        "batch": batch,
                        "clouds_per_s": round(batch / seconds, 1),
                    }
                )
    torch.set_num_threads(threads)
    model = random_clip("ViT-B/16", device, args.tiny)
    clouds = list(ellipsoids(args.batch, 2048))
    for projection in ("v2", "v1"):
        classifier = ZeroShotClassifier.build(model, load_label_set("modelnet40"), projection)
        for sampling in ("first", "fps"):
            options = CloudOptions(sampling=sampling, normalize=sampling == "fps")

            def run(options=options, classifier=classifier):
                return classifier(prepare_clouds(clouds, options, device))

            with torch.inference_mode():
                seconds = timed(run, device, args.repeats)
            results.append(
                {
                    "bench": "point-classify",
                    "device": str(device),
                    "model": "ViT-B/16",
                    "projection": projection,
                    "sampling": f"{sampling} 1024 of 2048",
                    "batch": args.batch,
                    "clouds_per_s": round(args.batch / seconds, 2),
                    "images_per_s": round(args.batch * classifier.weights.numel() / seconds, 1),
                    "peak_memory_mb": round(peak_memory_mb(device), 1),
                }
            )
    results.append(large_cloud_cost(args.cloud_points))
    results.append(large_mesh_cost(sized(args, 1_000_000, 1000)))
    return results


def bench_sketch(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """CLIPasso: the rasterizer alone (forward+backward), then optimisation steps with 3 seeds batched.

    Steps use RN101 (loss) and ViT-B/32 (saliency) with random weights, 16 strokes, 4 augmentations.
    On CUDA the whole 2000-step sketch is timed; on the CPU `--repeats` + 1 steps, extrapolated.
    The CLIP passes a step contains (sketch forward+backward of 15 views, target forward of 12) are
    timed alone, so the overhead of everything else shows.
    """
    import cv2

    from clipcli.pipelines.sketch import (
        ClipassoLoss,
        initial_points,
        optimize_strokes,
        render_sketch,
        sketch_target,
        target_tensor,
    )
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
    return results


STARTUP_CALLS = {  # what a shell script calling clipcli once per file pays before any work, and the targets
    "--version": (["--version"], 0.3),
    "--help": (["--help"], 0.3),
    "point-classify --help": (["point-classify", "--help"], None),
    "bad option": (["point-classify", "cloud.ply", "--no-such-option"], 0.5),
}


def _process_seconds(argv: list[str]) -> float:
    """Wall seconds of one whole process, start to exit."""
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def bench_startup(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """Whole-process time of clipcli calls that do no work (help, version, a rejected option): best of N."""
    results = []
    for name, (arguments, target) in STARTUP_CALLS.items():
        command = [sys.executable, "-m", "clipcli", *arguments]
        seconds = min(_process_seconds(command) for _ in range(args.startup_repeats))
        results.append(
            {"bench": "startup", "call": name, "repeats": args.startup_repeats, "best_s": round(seconds, 3),
             "target_s": target}
        )  # fmt: skip
    return results


BENCHMARKS: dict[str, Callable[[argparse.Namespace, torch.device], list[dict]]] = {
    "retrieve": bench_retrieve,
    "clip": bench_clip,
    "decode": bench_decode,
    "depth": bench_depth,
    "point": bench_point,
    "action": bench_action,
    "audio": bench_audio,
    "features": bench_features,
    "sketch": bench_sketch,
    "startup": bench_startup,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", choices=[*BENCHMARKS, "all"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--models", nargs="+", default=["RN50", "ViT-B/32"], choices=list(ARCHITECTURES))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--startup-repeats", type=int, default=5, help="runs of each call in the startup bench")
    parser.add_argument("--cloud-points", type=int, default=10_000_000, help="points in the point bench's large PLY")
    parser.add_argument(
        "--tiny", action="store_true", help="tiny models and inputs: checks a benchmark runs, no figures"
    )
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    names = list(BENCHMARKS) if args.bench == "all" else [args.bench]
    results = [row for name in names for row in BENCHMARKS[name](args, device)]
    json.dump({"torch": torch.__version__, "results": results}, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
