"""Scale-out: what `--cluster local` costs against a local run of the same depth batch, and Ray's start-up."""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .common import random_clip, sized


def bench_cluster(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """depth over a folder of images: images/s locally and on one Ray actor, best of `--repeats` each."""
    import cv2
    import ray

    from clipcli.cluster import RayExecutor
    from clipcli.pipelines import depth

    count, (height, width) = sized(args, (200, (480, 640)), (4, (64, 96)))
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        checkpoint = root / "rn50.pt"
        torch.save(random_clip("RN50", torch.device("cpu"), args.tiny).state_dict(), checkpoint)
        rng = np.random.default_rng(0)
        images = []
        for number in range(count):
            path = root / "images" / f"{number:04d}.jpg"
            path.parent.mkdir(exist_ok=True)
            pixels = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (7, 7), 2)
            cv2.imwrite(str(path), pixels)
            images.append(path)

        started_here = not ray.is_initialized()
        start = time.perf_counter()
        if started_here:
            ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        init_seconds = time.perf_counter() - start
        try:
            best: dict[str, float] = {}
            for repeat in range(max(1, args.repeats)):
                for where, executor in (("local", None), ("ray", RayExecutor("local", workers=1))):
                    out = root / f"{where}-{repeat}"
                    start = time.perf_counter()
                    report = depth.run(
                        images, out=out, model_name=str(checkpoint), device=str(device), executor=executor
                    )
                    seconds = time.perf_counter() - start
                    assert report.counts()["ok"] == count, report.counts()
                    best[where] = min(best.get(where, seconds), seconds)
        finally:
            if started_here:
                ray.shutdown()
        writes = {workers: driver_write_rate(height, width, root / "writes", count, workers) for workers in (1, 4)}
    local, on_ray = count / best["local"], count / best["ray"]
    return [
        {
            "bench": "cluster-startup",
            "ray": ray.__version__,
            "init_s": round(init_seconds, 2),
            "started_here": started_here,
        },
        {
            "bench": "cluster-depth",
            "device": str(device),
            "images": count,
            "size": f"{width}x{height}",
            "repeats": max(1, args.repeats),
            "local_images_per_s": round(local, 2),
            "ray_one_actor_images_per_s": round(on_ray, 2),
            "ray_vs_local": round(on_ray / local, 3),
        },
        {
            "bench": "cluster-driver-write",
            "what": f"depth outputs of one {width}x{height} image (npy, 16-bit png, colour png), encoded by workers",
            "writes_per_s_one_thread": round(writes[1], 1),
            "writes_per_s_four_threads": round(writes[4], 1),
        },
    ]


def driver_write_rate(height: int, width: int, out: Path, count: int, workers: int) -> float:
    """Depth outcomes the driver writes per second with `workers` write threads: how many GPUs it can feed."""
    from clipcli.pipelines import depth
    from clipcli.runner import run_job

    maps = np.random.default_rng(1).uniform(1, 3, (min(count, 8), height, width)).astype(np.float32)
    outcomes = [depth.encode_outcome(values, depth.DEPTH_BINS, "magma", 0.0) for values in maps]

    class Precomputed:
        def outcomes(self, job, todo):
            for position, _ in todo:
                yield position, outcomes[position % len(outcomes)]

    job = depth.DepthJob(out=out / str(workers))
    job.write_workers = workers
    start = time.perf_counter()
    run_job(job, [Path(f"{number}.jpg") for number in range(count)], executor=Precomputed())
    return count / (time.perf_counter() - start)
