"""`clipcli sketch --batch-images K`: K images in one optimisation batch get the sketches of K lone runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_VIT, build_tiny_clip
from makers.images import draw_shapes_image, write_image
from makers.report import json_rows
from test_sketch import shapes_target, sketch_cli, sketch_resnet

from clipcli.errors import BadInputError
from clipcli.pipelines import sketch, sketch_optimize
from clipcli.pipelines.sketch_objective import ClipassoLoss, Target
from clipcli.pipelines.sketch_optimize import (
    Schedule,
    Sketching,
    initial_points,
    optimize_many,
    sketch_target,
    sketch_targets,
)
from clipcli.render.svg import read_svg

SEEDS = [0, 1000]
SCHEDULE = Schedule(iterations=12, augmentations=1, early_stop=False)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """As in test_sketch: one OpenMP thread runs hundreds of small ops faster on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def resnet():
    return sketch_resnet()


@pytest.fixture(scope="module")
def vit():
    return build_tiny_clip(TINY_VIT, 0)


@pytest.fixture(scope="module")
def sketch_rn_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("sketch_models") / "sketch-rn.pt"
    torch.save(sketch_resnet().state_dict(), path)
    return path


def alone(target, resnet, vit, schedule: Schedule = SCHEDULE):
    return sketch_target(target, resnet, vit, strokes=4, seeds=SEEDS, **asdict(schedule))


def assert_same_sketch(together, single) -> None:
    """Same strokes (to 1e-5 px), steps, evaluations, best losses and snapshots."""
    assert (together.points - single.points).abs().max().item() <= 1e-5
    assert together.iterations == single.iterations and together.init == single.init
    assert [asdict(run) for run in together.runs] == [asdict(run) for run in single.runs]
    assert [i for i, _ in together.snapshots] == [i for i, _ in single.snapshots]
    for (_, ours), (_, theirs) in zip(together.snapshots, single.snapshots, strict=True):
        assert (ours - theirs).abs().max().item() <= 1e-5


def test_three_images_batched_give_the_sketches_of_three_single_runs(resnet, vit):
    targets = [shapes_target(seed) for seed in (3, 5, 9)]
    batched = sketch_targets(targets, resnet, vit, strokes=4, seeds=SEEDS, schedule=SCHEDULE, slots=3)
    for target, together in zip(targets, batched, strict=True):
        assert_same_sketch(together, alone(target, resnet, vit))
    assert batched[0].runs[0].best_loss != batched[1].runs[0].best_loss  # three different images
    assert all(result.iterations == 12 for result in batched)


def test_an_image_that_stops_early_frees_its_slot_for_the_next(resnet, vit):
    targets = [shapes_target(seed) for seed in (3, 5, 9)]
    loss = ClipassoLoss(resnet, cuda_graphs=False)
    schedule = Schedule(iterations=30, augmentations=1)

    def starter(target, lr):
        def start():
            init, rule = initial_points(target, vit, 4, [0])
            return Sketching.start(loss.prepare(target), init, [0], lr, torch.Generator().manual_seed(0), rule)

        return start

    # A learning rate this small leaves image 0's loss flat: CLIPasso's rule stops it at step 20.
    starts = [starter(targets[0], 1e-9), starter(targets[1], 1.0), starter(targets[2], 1.0)]
    batches: list[list[tuple[int, int]]] = []
    results = optimize_many(
        starts, loss, schedule, slots=2, on_step=lambda b: batches.append([(i, s.iteration) for i, s in b])
    )

    assert results[0].runs[0].stopped_at == 20 and results[0].iterations == 20
    assert batches[:21] == [[(0, step), (1, step)] for step in range(21)]
    assert batches[21] == [(1, 21), (2, 0)]  # image 2 took image 0's slot at once
    assert [index for index, _ in batches[-1]] == [2] and len(batches) == 21 + results[2].iterations + 1
    lone = sketch_target(targets[2], resnet, vit, strokes=4, seeds=[0], **asdict(schedule))
    assert_same_sketch(results[2], lone)


def test_a_bad_image_in_a_batch_fails_alone(resnet, vit, monkeypatch):
    targets = [shapes_target(seed) for seed in (3, 5, 9)]
    real_initial_points = sketch_optimize.initial_points

    def refuse_the_second(target, *args):
        if target is targets[1]:
            raise BadInputError("no start pixels", "second.png")
        return real_initial_points(target, *args)

    monkeypatch.setattr(sketch_optimize, "initial_points", refuse_the_second)
    outcomes = sketch_targets(targets, resnet, vit, strokes=4, seeds=SEEDS, schedule=SCHEDULE, slots=3)
    assert isinstance(outcomes[1], BadInputError) and str(outcomes[1]) == "second.png: no start pixels"
    monkeypatch.setattr(sketch_optimize, "initial_points", real_initial_points)
    for index in (0, 2):
        assert_same_sketch(outcomes[index], alone(targets[index], resnet, vit))


def test_cuda_graphs_keep_only_the_latest_batch_shape(resnet, monkeypatch):
    """A batch that shrinks recaptures its passes; the larger shape's graphs (and memory pools) go."""
    captured = []
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", lambda fn, samples: captured.append(fn) or fn)
    loss = ClipassoLoss(resnet)
    loss.cuda_graphs = True  # as on CUDA; the capture is stubbed
    targets = [loss.prepare(shapes_target(seed)) for seed in (3, 5)]
    for count in (2, 1):
        sketches = [torch.ones(1, 3, 224, 224)] * count
        loss.losses(sketches, targets[:count], 1, [torch.Generator().manual_seed(0)] * count)
    assert len(captured) == 4
    assert sorted((key[0], key[2]) for key in loss._graphed) == [("target", (1,)), ("views", (2,))]


def test_default_batch_images_is_one_on_a_cpu_and_from_free_memory_on_cuda(monkeypatch):
    settings = sketch.SketchSettings()
    assert sketch.default_batch_images(torch.device("cpu"), settings, torch.float32) == 1
    gib = 2**30
    for free, dtype, expected in ((80 * gib, torch.float16, 16), (20 * gib, torch.float16, 4),
                                  (20 * gib, torch.float32, 2), (gib, torch.float16, 1)):  # fmt: skip
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device, free=free: (free, 80 * gib))
        # An image: 2 x 15 views x 307 MiB (fp32), half in fp16; 90% of the free memory.
        assert sketch.default_batch_images(torch.device("cuda"), settings, dtype) == expected


def sketch_folder(folder, out, batch_images, models, *extra):
    return sketch_cli(folder, *models, "--strokes", 3, "--iterations", 10, "--seeds", 2, "--augmentations", 1,
                      "--no-early-stop", "--out", out, "--device", "cpu", "--json", "--batch-images", batch_images,
                      *extra)  # fmt: skip


def comparable(details: dict, out) -> dict:
    """NAME_sketch.json without the time it took and with the output folder named alike."""
    text = json.dumps({key: value for key, value in details.items() if key != "seconds"})
    return json.loads(text.replace(str(out), "OUT"))


@pytest.fixture
def three_images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for seed, name in ((3, "a"), (5, "b"), (9, "c")):
        write_image(folder / f"{name}.png", draw_shapes_image((120, 160), seed=seed))
    return folder


def test_a_folder_batched_three_at_a_time_writes_the_files_of_single_runs(
    tmp_path, three_images, sketch_rn_path, tiny_vit_path
):
    (three_images / "broken.png").write_text("not a picture")
    models = ["--model", sketch_rn_path, "--saliency-model", tiny_vit_path]
    runs = {k: sketch_folder(three_images, tmp_path / f"k{k}", k, models) for k in (1, 3)}
    for k, result in runs.items():
        assert result.exit_code == 4, result.output
        report = json.loads(result.stdout)
        assert report["batch_images"] == k and report["counts"] == {"ok": 3, "skipped": 0, "failed": 1}
        assert [row["status"] for row in report["results"]] == ["ok", "ok", "failed", "ok"]  # a, b, broken, c
    for name in "abc":
        points = {k: read_svg(tmp_path / f"k{k}" / f"{name}_sketch.svg")[0] for k in (1, 3)}
        assert np.abs(points[1] - points[3]).max() <= 1e-5
        details = {k: json.loads((tmp_path / f"k{k}" / f"{name}_sketch.json").read_text()) for k in (1, 3)}
        assert comparable(details[1], tmp_path / "k1") == comparable(details[3], tmp_path / "k3")
        assert details[3]["iterations"] == 10


def test_resume_with_batched_images_skips_the_done_and_sketches_the_rest_as_alone(
    tmp_path, three_images, sketch_rn_path, tiny_vit_path
):
    models = ["--model", sketch_rn_path, "--saliency-model", tiny_vit_path]
    single = tmp_path / "single"
    assert sketch_folder(three_images, single, 1, models).exit_code == 0
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    for suffix in ("svg", "png", "json"):
        shutil.copy(single / f"b_sketch.{suffix}", resumed)
    result = sketch_folder(three_images, resumed, 2, models)
    assert result.exit_code == 0, result.output
    assert [row["status"] for row in json_rows(result.stdout)] == ["ok", "skipped", "ok"]
    for name in "ac":
        ours, theirs = (read_svg(folder / f"{name}_sketch.svg")[0] for folder in (resumed, single))
        assert np.abs(ours - theirs).max() <= 1e-5


def test_batch_images_below_one_is_refused_naming_its_flag(three_images):
    result = sketch_cli(three_images, "--batch-images", 0, "--device", "cpu")
    assert result.exit_code == 2 and result.stderr == "error: --batch-images must be at least 1\n"


GPU_CHECK = Path(__file__).parents[1] / "scripts" / "gpu_check_sketch.sh"


def test_the_gpu_check_script_is_valid_bash_and_shellcheck_clean():
    assert subprocess.run(["bash", "-n", GPU_CHECK]).returncode == 0
    shellcheck = Path(sys.executable).parent / "shellcheck"
    if not shellcheck.exists():
        shellcheck = Path(shutil.which("shellcheck") or "shellcheck")
    result = subprocess.run([shellcheck, GPU_CHECK], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_the_gpu_check_runs_every_section_at_tiny_size_on_the_cpu(tmp_path):
    env = os.environ | {"PYTHON": sys.executable}
    command = ["bash", GPU_CHECK, "cpu", tmp_path, "--tiny"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "gpu_check_sketch.json").read_text())
    assert report["tiny"] is True and report["models"]["dtype"] == "float32"
    assert report["profile"]["steps"] == 2 and report["profile"]["wall_ms_per_step"] > 0
    assert "aten::mkldnn_convolution" in result.stdout  # the profiler's table of the busiest operators
    assert report["default_sketch"]["iterations"] == 2 and report["default_sketch"]["seconds"] > 0
    assert [row["batch_images"] for row in report["batches"]] == [1, 2]
    assert all(row["sketches_per_hour"] > 0 for row in report["batches"])
    parity = report["fp16_vs_fp32"]
    assert parity["passed"] is True and parity["max_relative_loss_difference"] <= 1e-2
    assert parity["gradient_cosine"] >= 0.99


def test_the_progress_line_shows_every_image_of_the_batch(tmp_path):
    job = sketch.SketchJob(out=tmp_path, settings=sketch.SketchSettings(iterations=50), batch_images=2)
    shown = []
    job._show_progress = shown.append
    images = []
    for iteration, loss in ((7, 0.5), (3, 0.25)):
        target = Target(torch.ones(1, 3, 224, 224), ())
        image = Sketching.start(target, torch.zeros(1, 1, 4, 2), [0], 1.0, None)
        image.iteration, image.runs[0].best_loss = iteration, loss
        images.append(image)
    job.step_reporter([Path("cat.png"), Path("dog.png")])(list(enumerate(images)))
    assert job.batch_size == 2
    assert shown == ["cat.png step 7/50 loss 0.5000; dog.png step 3/50 loss 0.2500"]
