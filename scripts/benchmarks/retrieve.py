"""CLIP4Clip retrieval: frame sampling, indexing, exact and approximate search, index loading."""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

from .common import peak_memory_mb, random_clip, seconds_once, sized, timed


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
        times = [seconds_once(fn)]
        if times[0] < 3:
            times += [seconds_once(fn), seconds_once(fn)]
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
        ann_s.append(seconds_once(partial(rank_videos_ann, probe, part, approximate, 10)))
        exact_s.append(seconds_once(partial(rank_videos, probe, matrix, 10)))
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
        build_s = seconds_once(partial(index.matrix, [root]))

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
