"""Throughput benchmarks: `python scripts/bench.py NAME [options]`; `--help` lists the names.

The entry point of scripts/benchmarks/, one module per benchmark (see its
docstring); the names tests use are re-exported here.
"""

import sys
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks import BENCHMARKS, main
from benchmarks.common import ARCHITECTURES, random_clip
from benchmarks.point import large_cloud_cost, write_binary_ply

__all__ = ["ARCHITECTURES", "BENCHMARKS", "large_cloud_cost", "main", "random_clip", "write_binary_ply"]

if __name__ == "__main__":
    main()
