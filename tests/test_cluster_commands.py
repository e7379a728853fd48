"""`--cluster local --workers 2` gives every command the local run's report, files and exit code.

Each command runs twice on the same tiny models and generated media, with
one broken input in the batch: once in this process and once on the shared
Ray session's actors, into separate output folders. Reports and files must
agree: strings and orderings exactly, numbers within 1e-5 (another process
may use another number of threads), timings aside.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import TINY_RESNET, build_tiny_clip
from makers.audio import write_noise, write_tone
from makers.images import draw_shapes_image, write_image
from makers.points import cube_points, sphere_points, write_npy, write_xyz
from makers.video import index_frames, write_video
from PIL import Image
from typer.testing import CliRunner

from clipcli import cluster
from clipcli.cli import app
from clipcli.models.audio_tower import ESResNeXtFBSP
from clipcli.models.audioclip import AudioCLIP
from clipcli.store.index import VideoIndex

runner = CliRunner()
CLUSTER = ("--cluster", "local", "--workers", "2")
COMMON = ("--device", "cpu", "--json", "--quiet")
TIMINGS = {"seconds"}  # report fields that measure the run, not its result
TOLERANCE = 1e-5
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
SKETCH = ("--iterations", 1, "--seeds", 1, "--strokes", 2, "--augmentations", 0)
LABELS = "juggling balls,riding a bike,playing guitar"
FRAME_ARRAYS = {"embeddings": np.float16, "norms": np.float32, "timestamps": np.float64}  # as an index stores them
CORRUPT_MP4 = b"\x00\x00\x00\x18ftypmp42" + b"junk" * 50


@pytest.fixture(scope="module")
def audioclip_path(tmp_path_factory) -> Path:
    """A released-layout AudioCLIP file with random weights (test_audio_tag's recipe, smaller)."""
    torch.manual_seed(4)
    model = AudioCLIP(build_tiny_clip({**TINY_RESNET, "embed_dim": 1024}, seed=3), ESResNeXtFBSP(embed_dim=1024))
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, buffer in model.audio.named_buffers():
            if name.endswith("running_var"):
                buffer.uniform_(0.5, 1.5, generator=generator)
        model.logit_scale_at.fill_(math.log(100.0))
    path = tmp_path_factory.mktemp("audioclip") / "tiny-audioclip.pt"
    torch.save(model.checkpoint_state_dict(), path)
    return path


@pytest.fixture
def models(tiny_rn_path, tiny_vit_path, audioclip_path) -> dict[str, Path]:
    return {"rn": tiny_rn_path, "vit": tiny_vit_path, "audio": audioclip_path}


# ---------------------------------------------------------------- inputs: a few good ones and one broken


def images(folder: Path, count: int = 2, size: tuple[int, int] = (64, 96)) -> list[Path]:
    """`count` drawn images and a broken PNG, in that order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"img{seed}.png" for seed in range(count)]
    for seed, path in enumerate(paths):
        write_image(path, draw_shapes_image(size, seed=seed))
    (folder / "broken.png").write_bytes(b"not a png")
    return [paths[0], folder / "broken.png", *paths[1:]]


def videos(folder: Path, count: int = 2) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [write_video(folder / f"clip{n}.mp4", index_frames(20) // (2 + n), fps=10) for n in range(count)]
    (folder / "broken.mp4").write_bytes(CORRUPT_MP4)
    return [paths[0], folder / "broken.mp4", *paths[1:]]


def sketch(tmp: Path, models: dict) -> list:
    return ["sketch", *images(tmp / "in"), "--model", models["rn"], "--saliency-model", models["vit"], *SKETCH]


def depth(tmp: Path, models: dict) -> list:
    return ["depth", *images(tmp / "in", 3), "--model", models["rn"]]


def depth_eval(tmp: Path, models: dict) -> list:
    rgb = images(tmp / "in", 2, size=(48, 64))
    pairs = []
    for number, image in enumerate(rgb):
        truth = tmp / "in" / f"truth{number}.png"
        Image.fromarray(np.full((48, 64), 1000 + 500 * number, np.uint16)).save(truth)
        pairs.append(f"{image},{truth}")
    return ["depth-eval", *pairs, "--model", models["rn"]]


def features_vqa(tmp: Path, models: dict) -> list:
    return ["features", *images(tmp / "in"), "--model", models["rn"], "--batch-size", 1]


def features_pooled(tmp: Path, models: dict) -> list:
    """The first image is large, so on the cluster its row comes back after the next one's."""
    inputs = images(tmp / "in", 3)
    write_image(inputs[0], draw_shapes_image((1500, 2000), seed=9))
    return ["features", *inputs, "--model", models["vit"], "--layout", "pooled", "--batch-size", 1]


def vqa(tmp: Path, models: dict) -> list:
    return ["vqa", *images(tmp / "in"), "What colour is the car?", "--answers", "red,blue,green", "--model",
            models["vit"]]  # fmt: skip


def classify_action(tmp: Path, models: dict) -> list:
    return ["classify-action", *videos(tmp / "in"), "--model", models["vit"], "--labels", LABELS, "--frames", 2]


def classify_action_windows(tmp: Path, models: dict) -> list:
    return [*classify_action(tmp, models), "--window", 1, "--stride", 1, "--plot"]


def audio_tag(tmp: Path, models: dict) -> list:
    folder = tmp / "in"
    folder.mkdir()
    write_tone(folder / "tone.wav", 440.0, 1.2, 48000, channels=2)
    write_noise(folder / "noise.flac", 0.4, 16000)
    sf.write(folder / "empty.wav", np.zeros(0, np.int16), 44100, subtype="PCM_16")
    clips = [folder / "tone.wav", folder / "empty.wav", folder / "noise.flac"]
    return ["audio-tag", *clips, "--checkpoint", models["audio"], "--labels", "us8k", "--window", 1, "--batch-size", 1]


def point_classify(tmp: Path, models: dict) -> list:
    folder = tmp / "in"
    folder.mkdir()
    clouds = [
        write_xyz(folder / "cube.xyz", cube_points(100, 1)),
        write_npy(folder / "ball.npy", sphere_points(100, 2)),
    ]
    (folder / "broken.xyz").write_text("1 2\nnot numbers\n")
    return ["point-classify", clouds[0], folder / "broken.xyz", clouds[1], "--model", models["vit"], "--labels",
            "cube,sphere", "--points", 64, "--save-views"]  # fmt: skip


def point_eval(tmp: Path, models: dict) -> list:
    folder = tmp / "in"
    folder.mkdir()
    sets = []
    for number, shapes in enumerate(([sphere_points(100, 0), cube_points(100, 1)], [cube_points(100, 3)])):
        sets.append(folder / f"ply_data_test{number}.h5")
        with h5py.File(sets[-1], "w") as handle:
            handle["data"] = np.asarray(shapes, np.float32)
            handle["label"] = np.arange(len(shapes), dtype=np.uint8).reshape(-1, 1)
    (folder / "broken.h5").write_bytes(b"not hdf5")
    return ["point-eval", sets[0], folder / "broken.h5", sets[1], "--model", models["vit"], "--labels", "modelnet40",
            "--points", 64]  # fmt: skip


def action_eval(tmp: Path, models: dict) -> list:
    clips = videos(tmp / "videos", 3)
    listing = tmp / "test.txt"
    listing.write_text("".join(f"videos/{clip.name} {number % 3}\n" for number, clip in enumerate(clips)))
    return ["action-eval", listing, "--model", models["vit"], "--labels", LABELS, "--frames", 2]


def audio_eval(tmp: Path, models: dict) -> list:
    """A tiny ESC-50 tree: three clips of fold 1, one of them not audio, and one clip of each class in fold 2."""
    root = tmp / "ESC-50-master"
    listed = [("1-100-A.wav", 1, 0), ("1-101-A.wav", 1, 1), ("1-102-A.wav", 1, 2), ("2-103-A.wav", 2, 0)]
    for seed, (name, _, _) in enumerate(listed):
        write_noise(root / "audio" / name, 0.5, 44100, seed=seed)
    (root / "audio" / "1-101-A.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk that is no audio")
    (root / "meta").mkdir()
    with open(root / "meta" / "esc50.csv", "w", newline="", encoding="utf-8") as handle:
        rows = [[name, fold, target, ("dog", "rooster", "sea_waves")[target], "False", "100", "A"]
                for name, fold, target in listed]  # fmt: skip
        csv.writer(handle).writerows([["filename", "fold", "target", "category", "esc10", "src_file", "take"], *rows])
    return ["audio-eval", root, "--checkpoint", models["audio"], "--folds", 1, "--batch-size", 1]


def vqa_eval(tmp: Path, models: dict) -> list:
    folder = tmp / "val2014"
    folder.mkdir()
    for image_id in (1, 2, 3):
        write_image(folder / f"COCO_val2014_{image_id:012d}.jpg", draw_shapes_image((64, 96), seed=image_id))
    (folder / "COCO_val2014_000000000002.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    questions = {11: (1, "Is there a car?", "yes/no"), 21: (2, "How many dogs?", "number"),
                 31: (3, "What color is the sky?", "other"), 32: (3, "Is it raining?", "yes/no")}  # fmt: skip
    entries = [{"image_id": image, "question": text, "question_id": qid} for qid, (image, text, _) in questions.items()]
    annotations = [
        {"question_id": qid, "image_id": image, "answer_type": kind, "question_type": text.split()[0].lower(),
         "multiple_choice_answer": "yes",
         "answers": [{"answer": answer, "answer_confidence": "yes", "answer_id": n + 1}
                     for n, answer in enumerate(["yes", "2", "blue"] * 3 + ["no"])]}
        for qid, (image, text, kind) in questions.items()
    ]  # fmt: skip
    (tmp / "questions.json").write_text(json.dumps({"task_type": "Open-Ended", "questions": entries}))
    (tmp / "annotations.json").write_text(json.dumps({"annotations": annotations}))
    return ["vqa-eval", tmp / "questions.json", tmp / "annotations.json", folder, "--model", models["vit"]]


def retrieve(tmp: Path, models: dict) -> list:
    return ["retrieve", videos(tmp / "videos", 3)[0].parent, "a dark clip", "--model", models["vit"], "--frames", 4]


def retrieve_eval(tmp: Path, models: dict) -> list:
    folder = videos(tmp / "videos", 3)[0].parent
    (tmp / "captions.csv").write_text("video_id,sentence\nclip0,a dark clip\nbroken,a lost clip\nclip2,a darker clip\n")
    return ["retrieve-eval", tmp / "captions.csv", folder, "--model", models["vit"], "--frames", 4]


@dataclass(frozen=True)
class Case:
    """A command line over tiny inputs, where its outputs go (`--out`, `--index` or nowhere), its exit code."""

    name: str
    build: Callable[[Path, dict], list]
    outputs: str | None
    exit_code: int = 4


CASES = [
    Case("sketch", sketch, "--out"),
    Case("depth", depth, "--out"),
    Case("depth-eval", depth_eval, None),
    Case("features vqa", features_vqa, "--out"),
    Case("features pooled", features_pooled, "--out"),
    Case("vqa", vqa, None),
    Case("classify-action", classify_action, None),
    Case("classify-action --window --plot", classify_action_windows, "--out"),
    Case("audio-tag", audio_tag, None),
    Case("point-classify --save-views", point_classify, "--out"),
    Case("point-eval", point_eval, None),
    Case("action-eval", action_eval, None),
    Case("audio-eval", audio_eval, None),
    Case("vqa-eval", vqa_eval, None),
    Case("retrieve", retrieve, "--index"),
    Case("retrieve-eval", retrieve_eval, "--index"),
]


# ---------------------------------------------------------------- comparing two runs


def assert_same(there: Any, here: Any, where: str = "report") -> None:
    """`there` equals `here`: the same keys, lengths, strings and orderings; numbers within TOLERANCE."""
    if isinstance(here, dict):
        assert isinstance(there, dict) and sorted(there) == sorted(here), f"{where}: {sorted(there)} != {sorted(here)}"
        for key in here:
            if key not in TIMINGS:
                assert_same(there[key], here[key], f"{where}.{key}")
    elif isinstance(here, list):
        assert isinstance(there, list) and len(there) == len(here), f"{where}: {there!r} != {here!r}"
        for number, (theirs, ours) in enumerate(zip(there, here, strict=True)):
            assert_same(theirs, ours, f"{where}[{number}]")
    elif isinstance(here, float) or isinstance(there, float):
        assert there == pytest.approx(here, abs=TOLERANCE), f"{where}: {there!r} != {here!r}"
    else:
        assert there == here, f"{where}: {there!r} != {here!r}"


def assert_same_text(there: str, here: str, where: str) -> None:
    """Texts (SVG) that may differ in a float's last digit: the words equal, the numbers within TOLERANCE."""
    assert NUMBER.split(there) == NUMBER.split(here), where
    numbers = [float(number) for number in NUMBER.findall(there)]
    assert numbers == pytest.approx([float(number) for number in NUMBER.findall(here)], abs=TOLERANCE), where


def assert_same_array(there: np.ndarray, here: np.ndarray, where: str) -> None:
    """Equal within TOLERANCE; float16 arrays within one step of their precision (a 1e-5 change may cross it)."""
    assert there.dtype == here.dtype and there.shape == here.shape, where
    rtol = 2**-10 if here.dtype == np.float16 else 0
    np.testing.assert_allclose(
        there.astype(np.float64), here.astype(np.float64), atol=TOLERANCE, rtol=rtol, err_msg=where
    )


def assert_same_file(there: Path, here: Path, folders: tuple[Path, Path]) -> None:
    where = str(here)
    if here.suffix == ".npy":
        assert_same_array(np.load(there), np.load(here), where)
    elif here.suffix == ".json":
        assert_same(json.loads(in_local_folder(there.read_text(), folders)), json.loads(here.read_text()), where)
    elif here.suffix == ".png":
        ours, theirs = np.asarray(Image.open(here)), np.asarray(Image.open(there))
        assert theirs.shape == ours.shape, where
        # 8-bit pixels: a float 1e-5 apart may round to the next level
        assert np.abs(theirs.astype(int) - ours.astype(int)).max(initial=0) <= 1, where
    elif here.suffix == ".svg":
        assert_same_text(there.read_text(), here.read_text(), where)
    else:
        assert there.read_bytes() == here.read_bytes(), where


def assert_same_index(there: Path, here: Path, videos: Path) -> None:
    """The two video indexes hold the same videos, failures, pooled embeddings and frame features."""
    with VideoIndex(here) as ours, VideoIndex(there) as theirs:
        assert theirs.failures([videos]) == ours.failures([videos])
        assert theirs.stamps([videos]) == ours.stamps([videos])
        pooled = ours.matrix([videos])
        assert theirs.matrix([videos]).paths == pooled.paths
        assert_same_array(theirs.matrix([videos]).embeddings, pooled.embeddings, "pooled embeddings")
        for path in pooled.paths:
            mine, yours = ours.frames(path), theirs.frames(path)
            assert yours.duration == mine.duration
            for name, dtype in FRAME_ARRAYS.items():
                assert_same_array(getattr(yours, name).astype(dtype), getattr(mine, name).astype(dtype), str(path))


def in_local_folder(text: str, folders: tuple[Path, Path]) -> str:
    """The cluster run's text with its output folder named as the local run's."""
    return text.replace(str(folders[1]), str(folders[0]))


def files_under(folder: Path) -> dict[str, Path]:
    return {str(path.relative_to(folder)): path for path in sorted(folder.rglob("*")) if path.is_file()}


def one_input_per_task(stream):
    """Send the actors one input at a time, as a batch of thousands would spread: both get work, out of order."""
    return lambda ray, actors, todo, size: stream(ray, actors, todo, 1)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_the_cluster_gives_the_local_runs_report_files_and_exit_code(case, ray_session, models, tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPCLI_INDEX_HOME", str(tmp_path / "indexes"))
    monkeypatch.setattr(cluster, "_stream", one_input_per_task(cluster._stream))
    command = [str(arg) for arg in case.build(tmp_path, models)]
    folders = (tmp_path / "local", tmp_path / "ray")
    runs = []
    for folder, where in zip(folders, ((), CLUSTER), strict=True):
        outputs = [case.outputs, folder] if case.outputs else []
        runs.append(runner.invoke(app, [*command, *map(str, outputs), *COMMON, *where]))
    local, on_ray = runs
    assert (local.exit_code, on_ray.exit_code) == (case.exit_code, case.exit_code), on_ray.output
    # each input's error is said as its outcome arrives, in the order the actors finish
    assert sorted(in_local_folder(on_ray.stderr, folders).splitlines()) == sorted(local.stderr.splitlines())
    assert_same(json.loads(in_local_folder(on_ray.stdout, folders)), json.loads(local.stdout))
    if case.outputs == "--index":
        assert_same_index(folders[1], folders[0], tmp_path / "videos")
    elif case.outputs:
        here, there = files_under(folders[0]), files_under(folders[1])
        assert sorted(there) == sorted(here)
        for name, path in here.items():
            assert_same_file(there[name], path, folders)
