"""Start-up: whole-process time of clipcli calls that do no work."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import torch

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
