"""`clipcli audio-eval`: zero-shot AudioCLIP accuracy on tiny ESC-50 and UrbanSound8K trees in the official layouts.

Each tree's clips are scored by the tiny model in this file, prepared by hand
as the official loaders do; the metadata then gives each clip the class at a
chosen rank of those scores, so the expected accuracies are known per clip.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import TINY_RESNET, build_tiny_clip
from typer.testing import CliRunner

from clipcli.cli import app
from clipcli.errors import BadInputError
from clipcli.media.audio import load_channels
from clipcli.models.audio_tower import ESResNeXtFBSP
from clipcli.models.audioclip import AudioCLIP
from clipcli.pipelines import audio_eval
from clipcli.pipelines.audio import load_audioclip

runner = CliRunner()
SR = 44100

# id -> official name; the names the model is given have spaces for underscores.
ESC50_CLASSES = {0: "dog", 1: "rooster", 2: "chirping_birds", 3: "sea_waves", 4: "crying_baby", 5: "clock_tick"}
US8K_CLASSES = {0: "air_conditioner", 1: "car_horn", 3: "dog_bark", 4: "drilling", 6: "gun_shot", 9: "street_music"}
# (file, fold, seconds, channels, rank of the clip's true class in the model's scores), in CSV order
ESC50_CLIPS = [
    ("2-100-A.wav", 2, 5.0, 1, 0),
    ("1-101-A.wav", 1, 3.0, 1, 0),
    ("2-102-A.wav", 2, 5.5, 1, 1),
    ("1-103-A.wav", 1, 5.0, 1, 5),
    ("2-104-A.wav", 2, 2.0, 1, 5),
    ("2-105-A.wav", 2, 5.0, 1, 3),
]
SPARE_FOLD = 3  # left out of the accuracy runs (--folds 1,2)
US8K_CLIPS = [
    ("100-1-0-0.wav", 1, 5.0, 2, 0),
    ("101-3-0-1.wav", 1, 3.0, 1, 5),
    ("102-4-0-0.wav", 2, 2.0, 2, 2),
    ("103-9-0-0.wav", 2, 4.5, 1, 0),
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A released-layout AudioCLIP file with random weights and BatchNorm statistics."""
    torch.manual_seed(11)
    model = AudioCLIP(build_tiny_clip({**TINY_RESNET, "embed_dim": 1024}, seed=12), ESResNeXtFBSP(embed_dim=1024))
    generator = torch.Generator().manual_seed(13)
    with torch.no_grad():
        for name, buffer in model.audio.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_(0.0, 0.1, generator=generator)
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 1.5, generator=generator)
        model.audio.fbsp.m.uniform_(0.0, 2.0, generator=generator)
        model.audio.fbsp.fb.uniform_(0.7, 1.5, generator=generator)
        model.logit_scale_at.fill_(math.log(100.0))
    path = tmp_path_factory.mktemp("audioclip") / "tiny-audioclip.pt"
    torch.save(model.checkpoint_state_dict(), path)
    return path


@pytest.fixture(scope="module")
def model(checkpoint):
    return load_audioclip(checkpoint, device="cpu")


def write_noise(path: Path, seconds: float, channels: int, seed: int) -> None:
    samples = np.random.default_rng(seed).normal(0.0, 0.2, (round(seconds * SR), channels)).clip(-1, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, SR, subtype="PCM_16")


def esc50_by_hand(path: Path) -> np.ndarray:
    """utils/datasets/esc50.py and the test-time RandomPadding/RandomCrop, for stationary clips."""
    wave = sf.read(path, dtype="float32")[0] * 32768.0
    if len(wave) < 220500:
        left = round(0.5 * (220500 - len(wave)))
        wave = np.concatenate([np.full(left, wave[0]), wave, np.full(220500 - left - len(wave), wave[-1])])
    left = round(0.5 * (len(wave) - 220500))
    return wave[left : left + 220500].astype(np.float32)[None]


def us8k_by_hand(path: Path) -> np.ndarray:
    """utils/datasets/us8k.py (`mono: false`) and the test-time RandomPadding."""
    wave = sf.read(path, dtype="float32", always_2d=True)[0].T
    wave = np.concatenate([wave, wave]) if len(wave) == 1 else wave
    wave = wave[:, :176400]
    wave = (wave - wave.min()) * 65535.0 / (wave.max() - wave.min()) - 32768.0
    left = round(0.5 * (176400 - wave.shape[1]))
    right = 176400 - left - wave.shape[1]
    first, last = wave[:, 0].mean(), wave[:, -1].mean()
    return np.concatenate([np.full((2, left), first), wave, np.full((2, right), last)], axis=1).astype(np.float32)


def rankings(model, waves: list[np.ndarray], names: list[str]) -> list[list[int]]:
    """Each clip's classes (positions in `names`), best first, by cosine with the bare class names."""
    with torch.no_grad():
        audio = torch.nn.functional.normalize(model.encode_audio(torch.from_numpy(np.stack(waves))).float(), dim=-1)
        text = torch.nn.functional.normalize(model.encode_text(names).float(), dim=-1)
    return (audio @ text.T).argsort(dim=1, descending=True).tolist()


def build_tree(root: Path, model, clips, classes: dict[int, str], layout: str) -> list[dict]:
    """Write the clips and the metadata; return what each clip should score, as the test expects it."""
    folder = (lambda fold: root / "audio") if layout == "esc50" else (lambda fold: root / "audio" / f"fold{fold}")
    paths = [folder(fold) / name for name, fold, *_ in clips]
    for seed, (path, (_, _, seconds, channels, _)) in enumerate(zip(paths, clips, strict=True)):
        write_noise(path, seconds, channels, seed)
    by_hand = esc50_by_hand if layout == "esc50" else us8k_by_hand
    ids = sorted(classes)
    names = [classes[i].replace("_", " ") for i in ids]
    ranked = rankings(model, [by_hand(path) for path in paths], names)
    expected = []
    for path, (name, fold, _, _, rank), order in zip(paths, clips, ranked, strict=True):
        class_id = ids[order[rank]]
        expected.append(
            {"input": str(path), "name": name, "fold": fold, "class_id": class_id, "rank": rank, "top": names[order[0]]}
        )
    # A third fold holds one clip of every class, so that every class is in the metadata as in the real sets.
    spares = [(f"3-{class_id}-A.wav", SPARE_FOLD, class_id) for class_id in ids]
    for seed, (name, fold, _) in enumerate(spares, len(paths)):
        write_noise(folder(fold) / name, 0.1, 1, seed)
    listed = [(e["name"], e["fold"], e["class_id"]) for e in expected] + spares
    if layout == "esc50":
        header = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
        rows = [[name, fold, class_id, classes[class_id], "False", "100", "A"] for name, fold, class_id in listed]
        metadata = root / "meta" / "esc50.csv"
    else:
        header = ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"]
        rows = [[name, 100, 0.0, 4.0, 1, fold, class_id, classes[class_id]] for name, fold, class_id in listed]
        metadata = root / "metadata" / "UrbanSound8K.csv"
    metadata.parent.mkdir(parents=True, exist_ok=True)
    with open(metadata, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([header, *rows])
    return expected


@pytest.fixture(scope="module")
def esc50(tmp_path_factory, model) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("ESC-50-master")
    return root, build_tree(root, model, ESC50_CLIPS, ESC50_CLASSES, "esc50")


@pytest.fixture(scope="module")
def us8k(tmp_path_factory, model) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("UrbanSound8K")
    return root, build_tree(root, model, US8K_CLIPS, US8K_CLASSES, "us8k")


def run_eval(*args: str):
    return runner.invoke(app, ["audio-eval", *args, "--device", "cpu"])


def accuracies_by_hand(expected: list[dict]) -> tuple[dict[int, tuple[float, float]], tuple[float, float]]:
    """Per fold (top-1 %, top-5 %) over its clips, and the unweighted mean over folds."""
    per_fold = {}
    for fold in sorted({e["fold"] for e in expected}):
        ranks = [e["rank"] for e in expected if e["fold"] == fold]
        per_fold[fold] = (
            100.0 * sum(r == 0 for r in ranks) / len(ranks),
            100.0 * sum(r < 5 for r in ranks) / len(ranks),
        )
    top1, top5 = zip(*per_fold.values(), strict=True)
    return per_fold, (sum(top1) / len(top1), sum(top5) / len(top5))


def check_accuracies(report: dict, expected: list[dict]) -> None:
    per_fold, (top1, top5) = accuracies_by_hand(expected)
    assert [fold["fold"] for fold in report["folds"]] == list(per_fold)
    for fold in report["folds"]:
        assert (fold["top1"], fold["top5"]) == pytest.approx(per_fold[fold["fold"]])
        assert fold["clips"] == sum(e["fold"] == fold["fold"] for e in expected)
    assert (report["overall"]["top1"], report["overall"]["top5"]) == pytest.approx((top1, top5))
    rows = {row["input"]: row for row in report["results"]}
    for e in expected:
        assert rows[e["input"]]["predicted"][0] == e["top"] and rows[e["input"]]["top1"] == (e["rank"] == 0)


# ---------------------------------------------------------------- accuracies


def test_esc50_accuracies_per_fold_and_mean_over_folds_equal_the_model_scored_by_hand(esc50, checkpoint):
    root, expected = esc50
    result = run_eval(str(root), "--checkpoint", str(checkpoint), "--json", "--folds", "1,2", "--batch-size", "4")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["dataset"] == "esc50" and report["labels"] == 6 and report["clips"] == 6 and report["skipped"] == 0
    check_accuracies(report, expected)
    # fold 1: ranks 0, 5; fold 2: ranks 0, 1, 5, 3 -> the mean over folds, not over the six clips
    assert report["overall"]["top1"] == pytest.approx((50.0 + 25.0) / 2)
    assert report["overall"]["top5"] == pytest.approx((50.0 + 75.0) / 2)
    assert report["published"]["top1"] == 69.40 and "AudioCLIP" in report["published"]["source"]
    assert [row["fold"] for row in report["results"]] == [1, 1, 2, 2, 2, 2]  # fold by fold, CSV order within
    assert set(report["results"][0]) == {"input", "status", "fold", "label", "predicted", "top1", "top5"}
    assert report["results"][1]["label"] == ESC50_CLASSES[expected[3]["class_id"]].replace("_", " ")
    assert set(report) == {
        "command", "dataset", "root", "checkpoint", "labels", "clips", "skipped", "folds", "overall", "averaging",
        "published", "counts", "results",
    }  # fmt: skip
    assert report["command"] == "audio-eval" and report["counts"] == {"ok": 6, "skipped": 0, "failed": 0}


def test_us8k_stereo_4s_rescaled_accuracies_equal_the_model_scored_by_hand(us8k, checkpoint):
    root, expected = us8k
    result = run_eval(str(root), "--checkpoint", str(checkpoint), "--json", "--folds", "1,2")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["dataset"] == "us8k" and report["labels"] == 6 and report["published"]["top1"] == 68.78
    check_accuracies(report, expected)
    assert (report["overall"]["top1"], report["overall"]["top5"]) == pytest.approx((50.0, 75.0))


def test_table_shows_the_chosen_folds_beside_the_published_figure(esc50, checkpoint):
    root, _ = esc50
    result = run_eval(str(root), "--checkpoint", str(checkpoint), "--folds", "2", "--limit", "1")
    assert result.exit_code == 0, result.output
    assert "fold 2" in result.stdout and "fold 1" not in result.stdout
    assert "paper (zero-shot)" in result.stdout and "69.40" in result.stdout and "1 clip(s), 0 skipped" in result.stdout


# ---------------------------------------------------------------- the datasets


def test_dataset_is_detected_from_its_metadata_file(esc50, us8k, tmp_path):
    assert audio_eval.detect_dataset(esc50[0]) == "esc50" and audio_eval.detect_dataset(us8k[0]) == "us8k"
    with pytest.raises(BadInputError, match=r"meta/esc50\.csv .*metadata/UrbanSound8K\.csv.* neither"):
        audio_eval.detect_dataset(tmp_path)


def test_classes_are_the_metadata_names_in_class_id_order_with_spaces(us8k):
    dataset = audio_eval.read_dataset(us8k[0])
    assert dataset.labels == ["air conditioner", "car horn", "dog bark", "drilling", "gun shot", "street music"]
    assert [dataset.labels[clip.target] for clip in dataset.clips if clip.fold != SPARE_FOLD] == [
        US8K_CLASSES[e["class_id"]].replace("_", " ") for e in us8k[1]
    ]


def test_folds_and_limit_choose_clips_fold_by_fold_in_csv_order(esc50):
    dataset = audio_eval.read_dataset(esc50[0], "esc50")
    names = lambda clips: [clip.path.name for clip in clips]  # noqa: E731
    assert names(audio_eval.select_clips(dataset, None, None)) == [
        "1-101-A.wav", "1-103-A.wav", "2-100-A.wav", "2-102-A.wav", "2-104-A.wav", "2-105-A.wav",
        *(f"3-{class_id}-A.wav" for class_id in sorted(ESC50_CLASSES)),
    ]  # fmt: skip
    assert names(audio_eval.select_clips(dataset, [2], 2)) == ["2-100-A.wav", "2-102-A.wav"]
    assert names(audio_eval.select_clips(dataset, audio_eval.parse_folds("2,1"), 3)) == [
        "1-101-A.wav", "1-103-A.wav", "2-100-A.wav",
    ]  # fmt: skip
    with pytest.raises(BadInputError, match=r"--folds: no fold 4 in meta/esc50\.csv \(it has 1, 2, 3\)"):
        audio_eval.select_clips(dataset, [1, 4], None)
    with pytest.raises(BadInputError, match="--folds 'one'"):
        audio_eval.parse_folds("one")


@pytest.mark.parametrize(("dataset", "missing"), [("us8k", "metadata/UrbanSound8K.csv"), ("esc50", "meta/esc50.csv")])
def test_missing_metadata_csv_exits_2_naming_the_file(dataset, missing, tmp_path, checkpoint):
    (tmp_path / "audio").mkdir()
    result = run_eval(str(tmp_path), "--dataset", dataset, "--checkpoint", str(checkpoint))
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / missing}: no such file"]
    result = run_eval(str(tmp_path), "--checkpoint", str(checkpoint))
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert f"error: {tmp_path}: needs meta/esc50.csv" in result.stderr and "--dataset" in result.stderr


def test_metadata_without_the_official_columns_exits_2(tmp_path):
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "esc50.csv").write_text("file,label\na.wav,dog\n", encoding="utf-8")
    result = run_eval(str(tmp_path))
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: {tmp_path / 'meta' / 'esc50.csv'}: no filename, fold, target, category column(s): "
        "not the ESC-50 metadata"
    )


def test_corrupt_wav_is_reported_and_skipped_and_the_rest_still_scored(esc50, checkpoint, tmp_path):
    root = tmp_path / "ESC-50"
    shutil.copytree(esc50[0], root)
    bad = root / "audio" / "1-103-A.wav"
    bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk that is no audio")
    result = run_eval(str(root), "--checkpoint", str(checkpoint), "--folds", "1", "--json")
    assert result.exit_code == 4
    report = json.loads(result.stdout)
    assert [row["status"] for row in report["results"]] == ["ok", "failed"] and report["skipped"] == 1
    assert report["results"][1] == {
        "input": str(bad),
        "status": "failed",
        "error": report["results"][1]["error"],
        "fold": 1,
    }
    assert report["folds"] == [{"fold": 1, "clips": 1, "top1": 100.0, "top5": 100.0}]  # 1-101-A: rank 0
    assert (
        f"error: {bad}: " in result.stderr and result.stderr.strip().splitlines()[-1] == "error: 1 of 2 inputs failed"
    )


# ---------------------------------------------------------------- the official clip preparation


def test_padding_fills_with_the_channel_mean_of_the_edge_samples():
    wave = np.array([[1.0, 5.0, 3.0], [3.0, 7.0, 9.0]], np.float32)
    padded = audio_eval.pad_centre(wave, 8)
    assert padded.tolist() == [[2, 2, 1, 5, 3, 6, 6, 6], [2, 2, 3, 7, 9, 6, 6, 6]]  # left round(2.5) = 2


def test_cropping_keeps_the_centre_unless_it_is_much_quieter_than_the_clip():
    loud, quiet = np.tile([1.0, -1.0], 50), np.zeros(100)
    steady = np.array([[1.0, -1.0, 2.0, -2.0, 3.0, -3.0, 2.0, -2.0, 1.0, -1.0]])
    assert audio_eval.crop_centre(steady, 4).tolist() == [[-2.0, 3.0, -3.0, 2.0]]  # left round(3.0) = 3
    head_loud = np.concatenate([loud, quiet, quiet])[None]
    assert np.array_equal(audio_eval.crop_centre(head_loud, 100), head_loud[:, :100])
    tail_loud = np.concatenate([0.05 * loud, quiet, loud])[None]  # the head is quiet too, but less than the centre
    assert np.array_equal(audio_eval.crop_centre(tail_loud, 100), tail_loud[:, -100:])
    both_quiet = np.concatenate([quiet, quiet, loud[:60]])[None]  # the head is no better than the centre
    assert np.array_equal(audio_eval.crop_centre(both_quiet, 100), both_quiet[:, :100])


def test_us8k_clips_are_stereo_4s_and_span_the_int16_range(tmp_path):
    path = tmp_path / "long.wav"
    write_noise(path, 6.0, 1, seed=1)
    wave = audio_eval.us8k_wave(path)
    assert wave.shape == (2, 176400) and np.array_equal(wave[0], wave[1])
    assert wave.min() == pytest.approx(-32768.0) and wave.max() == pytest.approx(32767.0)
    flat = tmp_path / "flat.wav"
    sf.write(flat, np.zeros(4410), SR, subtype="PCM_16")
    with pytest.raises(BadInputError, match="every sample is equal"):
        audio_eval.us8k_wave(flat)


def test_channels_are_kept_apart_and_resampled_for_us8k(tmp_path):
    path = tmp_path / "stereo.wav"
    left = np.sin(2 * np.pi * 440.0 * np.arange(22050) / 22050) * 0.5
    sf.write(path, np.stack([left, np.zeros(22050)], axis=1), 22050, subtype="PCM_16")
    wave = load_channels(path, SR)
    assert wave.shape == (2, 44100) and not wave[1].any() and np.abs(wave[0]).max() == pytest.approx(0.5, abs=0.01)


def test_a_clip_listed_twice_in_the_metadata_exits_2(tmp_path):
    (tmp_path / "meta").mkdir()
    rows = ["filename,fold,target,category,esc10,src_file,take", "a.wav,1,0,dog,False,1,A", "a.wav,1,0,dog,False,1,A"]
    (tmp_path / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(BadInputError, match=r"esc50\.csv: line 3: a\.wav is listed twice"):
        audio_eval.read_dataset(tmp_path)


def test_metadata_with_only_its_header_exits_2(tmp_path):
    (tmp_path / "metadata").mkdir()
    csv_path = tmp_path / "metadata" / "UrbanSound8K.csv"
    csv_path.write_text("slice_file_name,fsID,start,end,salience,fold,classID,class\n", encoding="utf-8")
    result = run_eval(str(tmp_path))
    assert result.exit_code == 2 and result.stderr.strip() == f"error: {csv_path}: lists no clips"
