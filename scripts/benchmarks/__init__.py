"""Throughput benchmarks: `python scripts/bench.py NAME [options]`, NAME one of BENCHMARKS or all.

Models are architecture-identical to the released ones, with random weights,
so their cost is that of the real ones and nothing is downloaded. Each run
prints one JSON document: device, model, batch, throughput, peak memory.
One module per benchmark, sharing the helpers in `common`; a new benchmark
adds its `bench_NAME(args, device) -> rows` to BENCHMARKS, runs at `--tiny`
sizes in seconds, and gets a line in tests/test_bench.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable

import clipcli  # noqa: F401  first: it sets torch's thread spin-wait before torch loads

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")  # raised by `import clip`

import torch  # noqa: E402

from clipcli.models.device import resolve_device  # noqa: E402

from .action import bench_action  # noqa: E402
from .audio import bench_audio  # noqa: E402
from .clip import bench_clip  # noqa: E402
from .cluster import bench_cluster  # noqa: E402
from .common import ARCHITECTURES  # noqa: E402
from .decode import bench_decode  # noqa: E402
from .depth import bench_depth  # noqa: E402
from .features import bench_features  # noqa: E402
from .point import bench_point  # noqa: E402
from .retrieve import bench_retrieve  # noqa: E402
from .sketch import bench_sketch  # noqa: E402
from .startup import bench_startup  # noqa: E402

BENCHMARKS: dict[str, Callable[[argparse.Namespace, torch.device], list[dict]]] = {
    "retrieve": bench_retrieve,
    "clip": bench_clip,
    "cluster": bench_cluster,
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
