"""Every benchmark in scripts/bench.py runs at tiny sizes, so a changed pipeline cannot break one unnoticed."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from clipcli.store.ann import available as faiss_available

SPEC = importlib.util.spec_from_file_location("bench", Path(__file__).parents[1] / "scripts" / "bench.py")
bench = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bench)

TINY_ARGS = ["--tiny", "--device", "cpu", "--batch", "1", "--repeats", "1", "--frames", "4"]
TINY_ARGS += ["--cloud-points", "5000", "--startup-repeats", "1"]

# The kinds of row (their "bench" field) each benchmark prints; a new benchmark adds its line here.
ROW_KINDS = {
    "action": {"action-model", "action-text-cache", "action-end-to-end"},
    "audio": {"audio"},
    "clip": {"clip"},
    "cluster": {"cluster-startup", "cluster-depth", "cluster-driver-write"},
    "decode": {"decode"},
    "depth": {"depth-photo", "depth"},
    "features": {"features"},
    "point": {"point-projection", "point-classify", "point-large-cloud", "point-large-mesh"},
    "retrieve": {"retrieve-sampling", "retrieve-index", "retrieve-query", "retrieve-index-load"}
    | ({"retrieve-ann"} if faiss_available() else set()),
    "sketch": {"sketch-rasterize", "sketch-optimise", "sketch-batch"},
    "startup": {"startup"},
}


def run_bench(name: str, capsys) -> list[dict]:
    bench.main([name, *TINY_ARGS])
    return json.loads(capsys.readouterr().out)["results"]


def numbers(row: dict) -> dict[str, float]:
    return {key: value for key, value in row.items() if isinstance(value, int | float) and not isinstance(value, bool)}


@pytest.mark.parametrize("name", sorted(bench.BENCHMARKS))
def test_every_benchmark_runs_at_tiny_size_and_prints_its_rows_with_positive_rates(name, capsys, request):
    if name == "cluster":
        request.getfixturevalue("ray_session")  # the one Ray instance of the test run
    rows = run_bench(name, capsys)

    assert {row["bench"] for row in rows} == ROW_KINDS[name]
    for row in rows:
        figures = numbers(row)
        assert all(math.isfinite(value) for value in figures.values()), row
        rates = {key: value for key, value in figures.items() if "_per_s" in key}
        durations = {key: value for key, value in figures.items() if key.endswith(("_s", "_ms"))}
        assert all(value > 0 for value in rates.values()), row
        assert all(value >= 0 for value in durations.values()), row
    assert any("_per_s" in key or key.endswith(("_s", "_ms")) for row in rows for key in numbers(row))


def test_tiny_clip_keeps_the_released_input_resolution_embedding_width_and_layer4_ratio():
    for name in ("RN50", "RN101", "ViT-B/16"):
        embed, resolution, _, width, patch, *_ = bench.ARCHITECTURES[name]
        tiny = bench.random_clip(name, torch.device("cpu"), tiny=True)

        assert tiny.visual.input_resolution == resolution
        assert sum(parameter.numel() for parameter in tiny.parameters()) < 20_000_000
        if patch:
            assert tiny.text_projection.shape[1] == embed and tiny.visual.conv1.kernel_size == (patch, patch)
        else:  # layer4's width over the embedding is the released model's (DepthCLIP relies on it)
            tiny_embed = tiny.text_projection.shape[1]
            assert tiny.visual.layer4[-1].conv3.out_channels / tiny_embed == width * 32 / embed
