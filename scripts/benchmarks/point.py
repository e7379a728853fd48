"""PointCLIP: projection, end-to-end classification, and reading large clouds and meshes."""

from __future__ import annotations

import argparse
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from .common import peak_memory_mb, random_clip, seconds_once, sized, timed


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
    from clipcli.pipelines.point import read_cloud
    from clipcli.pipelines.point_prep import CloudOptions, prepare_clouds

    with tempfile.TemporaryDirectory() as folder:
        path = write_binary_ply(Path(folder) / "scan.ply", size)
        started = time.perf_counter()
        cloud = read_cloud(path)
        loaded = time.perf_counter()
        prepared = prepare_clouds([cloud], CloudOptions(points=points), "cpu")
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
    from clipcli.pipelines.point import MESH_SAMPLES, read_cloud

    with tempfile.TemporaryDirectory() as folder:
        path = write_binary_stl(Path(folder) / "part.stl", faces)
        seconds = min(seconds_once(lambda: read_cloud(path)) for _ in range(3))
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
    from clipcli.pipelines.point import ZeroShotClassifier
    from clipcli.pipelines.point_prep import CloudOptions, prepare_clouds
    from clipcli.pipelines.point_prompts import load_label_set
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
