"""`clipcli action-eval`: accuracy over labelled video lists, in both list formats, and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from makers.video import write_video
from PIL import Image
from typer.testing import CliRunner

from clipcli.cli import app
from clipcli.pipelines import action, action_eval, action_text

runner = CliRunner()
LABELS = ["juggling balls", "riding a bike", "playing guitar", "dancing ballet", "eating cake", "swimming", "running"]
COLOURS = [(230, 20, 20), (20, 230, 20), (20, 20, 230), (230, 230, 20), (20, 230, 230), (120, 40, 200)]


def run(*args):
    return runner.invoke(app, ["action-eval", *map(str, args)])


def coloured_frames(colour, count: int = 20) -> np.ndarray:
    """Frames of one colour with a moving patch of its complement, so each video scores differently."""
    frames = np.zeros((count, 48, 64, 3), np.uint8)
    frames[:] = colour
    for index in range(count):
        frames[index, 8:24, index * 2 : index * 2 + 16] = 255 - np.array(colour)
    return frames


@pytest.fixture
def videos(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    return [write_video(folder / f"clip{i}.avi", coloured_frames(colour)) for i, colour in enumerate(COLOURS)]


def ranked_labels(videos, model_path) -> list[list[str]]:
    """Each video's labels, best first, as `classify-action` predicts them (its library function)."""
    classifier = action.load_classifier(LABELS, model_name=str(model_path), frames=4, device="cpu")
    rows = [action.classify_video(classifier, video, top_k=len(LABELS)) for video in videos]
    return [[p["label"] for p in row["predictions"]] for row in rows]


def expected_scores(truth: list[str], ranked: list[list[str]]) -> dict:
    hit1 = [ranking[0] == label for label, ranking in zip(truth, ranked, strict=True)]
    hit5 = [label in ranking[:5] for label, ranking in zip(truth, ranked, strict=True)]
    per_class = {label: [h for h, t in zip(hit1, truth, strict=True) if t == label] for label in set(truth)}
    return {
        "top1": 100 * sum(hit1) / len(truth),
        "top5": 100 * sum(hit5) / len(truth),
        "mean_class": 100 * sum(sum(h) / len(h) for h in per_class.values()) / len(per_class),
    }


def pick_truth(ranked: list[list[str]]) -> list[str]:
    """True labels making top-1 hits, top-5-only hits and misses, with one class shared by two videos."""
    return [ranked[0][0], ranked[1][2], ranked[2][-1], ranked[3][0], ranked[4][4], ranked[5][-1]]


def test_accuracy_equals_what_classify_action_predictions_give(videos, tiny_vit_path, tmp_path):
    ranked = ranked_labels(videos, tiny_vit_path)
    truth = pick_truth(ranked)
    lines = [f"videos/{video.name} {label.replace(' ', '_')}" for video, label in zip(videos, truth, strict=True)]
    lines[1] = f"videos/{videos[1].name} {LABELS.index(truth[1])}"  # a class index works as well as a name
    listing = tmp_path / "test.txt"
    listing.write_text("\n".join(lines) + "\n")
    labels = tmp_path / "classes.txt"
    labels.write_text("\n".join(LABELS) + "\n")

    result = run(listing, "--model", tiny_vit_path, "--labels", labels, "--frames", 4, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    expected = expected_scores(truth, ranked)
    assert 0 < expected["top1"] < expected["top5"] < 100  # hits, top-5-only hits and misses all occur
    for key in ("top1", "top5", "mean_class"):
        assert report[key] == pytest.approx(expected[key])
    assert report["videos"] == 6 and report["counts"] == {"ok": 6, "skipped": 0, "failed": 0} and report["frames"] == 4
    assert [row["label"] for row in report["results"]] == truth
    assert [row["predictions"][0]["label"] for row in report["results"]] == [r[0] for r in ranked]


def write_frame_folder(folder, frames) -> None:
    """A TSN-style folder: img_00001.jpg, img_00002.jpg, ..."""
    folder.mkdir(parents=True)
    for number, frame in enumerate(frames, 1):
        Image.fromarray(frame).save(folder / f"img_{number:05d}.jpg", quality=95)


def official_val_indices(frame_count: int, segments: int) -> list[int]:
    """datasets.py `_get_val_indices` for seg_length 1 and index_bias 1, written out."""
    if frame_count <= segments:
        return [i * frame_count // segments + 1 for i in range(segments)]
    offset = (frame_count / segments - 1) / 2.0
    return [int(i * frame_count / segments + offset) + 1 for i in range(segments)]


def test_official_list_of_frame_folders_scores_the_official_test_frames(tmp_path, tiny_vit_path):
    counts = [20, 13, 3]
    for number, (colour, count) in enumerate(zip(COLOURS, counts, strict=False)):
        write_frame_folder(tmp_path / "frames" / f"v{number}", coloured_frames(colour, count))
    truth = [0, 4, 6]
    listing = tmp_path / "val_frames.txt"
    listing.write_text("".join(f"v{n} {c} {t}\n" for n, (c, t) in enumerate(zip(counts, truth, strict=True))))

    result = run(listing, "--root", tmp_path / "frames", "--model", tiny_vit_path, "--labels", ",".join(LABELS),
                 "--frames", 4, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)

    classifier = action.load_classifier(LABELS, model_name=str(tiny_vit_path), frames=4, device="cpu")
    ranked = []
    for number, count in enumerate(counts):
        folder = tmp_path / "frames" / f"v{number}"
        frames = np.stack([np.asarray(Image.open(folder / f"img_{i:05d}.jpg").convert("RGB"))
                           for i in official_val_indices(count, 4)])  # fmt: skip
        probabilities = action.classify_frames(classifier.model, classifier.fusion, frames, 4, classifier.text, LABELS)
        ranked.append([LABELS[i] for i in np.argsort(-probabilities[0], kind="stable")])
        row = report["results"][number]
        assert [p["probability"] for p in row["predictions"]] == pytest.approx(
            sorted(probabilities[0], reverse=True)[:5], abs=1e-5
        )
    expected = expected_scores([LABELS[t] for t in truth], ranked)
    for key in ("top1", "top5", "mean_class"):
        assert report[key] == pytest.approx(expected[key])
    assert [row["class"] for row in report["results"]] == truth


def test_missing_list_file_exits_2_with_one_line(tmp_path, tiny_vit_path):
    result = run(tmp_path / "absent.txt", "--model", tiny_vit_path, "--labels", ",".join(LABELS))
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'absent.txt'}: no such list file"]


@pytest.mark.parametrize(
    ("line", "problem"),
    [("clip.avi flying a kite", "label 'flying a kite' is not in --labels"), ("clip.avi 7", "class 7 is outside")],
)
def test_a_label_not_in_the_label_set_exits_2_naming_its_line(tmp_path, tiny_vit_path, line, problem):
    listing = tmp_path / "test.txt"
    listing.write_text(f"# video label\nclip.avi swimming\n\n{line}\n")
    result = run(listing, "--model", tiny_vit_path, "--labels", ",".join(LABELS))
    assert result.exit_code == 2
    [error] = result.stderr.strip().splitlines()
    assert error.startswith(f"error: {listing}: line 4: {problem}")


def test_a_corrupt_video_is_reported_skipped_and_exits_4(videos, tiny_vit_path, tmp_path):
    broken = tmp_path / "videos" / "broken.avi"
    broken.write_bytes(b"RIFF" + b"\x00" * 200)
    listing = tmp_path / "test.txt"
    listing.write_text(f"videos/{videos[0].name} 0\nvideos/broken.avi 1\nvideos/{videos[1].name} 2\n")
    result = run(listing, "--model", tiny_vit_path, "--labels", ",".join(LABELS), "--frames", 4, "--json")
    assert result.exit_code == 4
    report = json.loads(result.stdout)
    assert report["videos"] == 2 and report["counts"]["failed"] == 1
    assert [row["status"] for row in report["results"]] == ["ok", "failed", "ok"]
    assert report["results"][1]["line"] == 2 and report["results"][1]["error"].startswith(str(broken))
    assert str(broken) in result.stderr


def test_limit_scores_only_the_first_entries(videos, tiny_vit_path, tmp_path):
    listing = tmp_path / "test.txt"
    listing.write_text("".join(f"videos/{video.name} {i}\n" for i, video in enumerate(videos)))
    result = run(listing, "--model", tiny_vit_path, "--labels", ",".join(LABELS), "--frames", 4, "--limit", 2,
                 "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["videos"] == 2 and [row["line"] for row in report["results"]] == [1, 2]


def test_json_shape_and_table_show_published_figures_or_n_a(videos, tiny_vit_path, tmp_path):
    listing = tmp_path / "test.txt"
    listing.write_text(f"videos/{videos[0].name} 0\n")
    result = run(listing, "--model", tiny_vit_path, "--labels", ",".join(LABELS), "--frames", 4, "--json")
    report = json.loads(result.stdout)
    assert set(report) == {"command", "list", "labels", "classes", "dataset", "architecture", "head", "frames",
                           "videos", "top1", "top5", "mean_class", "published", "counts", "results"}  # fmt: skip
    assert report["command"] == "action-eval"
    assert report["head"] == "meanP" and report["architecture"] is None and report["classes"] == 7
    assert report["published"]["fine_tuned"] is None and report["published"]["zero_shot"] is None
    assert "sallymmx/ActionCLIP README.md" in report["published"]["source"]
    row = report["results"][0]
    assert row["status"] == "ok" and len(row["predictions"]) == 5 and row["line"] == 1

    table = run(listing, "--model", tiny_vit_path, "--labels", ",".join(LABELS), "--frames", 4)
    assert table.exit_code == 0
    assert "published, fine-tuned" in table.stdout and "n/a" in table.stdout


def test_published_figures_follow_the_architecture_and_frames():
    assert action_eval.published("kinetics400", "ViT-B/16", 16)["fine_tuned"] == {"top1": 81.68, "top5": 95.87}
    assert action_eval.published("kinetics400", "ViT-B/32", 16)["fine_tuned"] is None
    ucf = action_eval.published("ucf101", "ViT-B/16", 32)
    assert ucf["fine_tuned"]["top1"] == 97.1 and ucf["zero_shot"]["top1"] == 58.3
    assert action_eval.dataset_of("some.txt", action_text.load_label_set("hmdb51")) == "hmdb51"


def test_list_class_names_match_in_any_spelling():
    assert action_eval.label_key("ApplyEyeMakeup") == action_eval.label_key("apply_eye_makeup") == "apply eye makeup"
    assert action_eval.label_key("Riding a Bike") == "riding a bike"


def test_a_video_listed_twice_exits_2_naming_both_lines(tmp_path, tiny_vit_path):
    listing = tmp_path / "test.txt"
    listing.write_text("clip.avi 0\nother.avi 1\n./clip.avi 2\n")
    result = run(listing, "--model", tiny_vit_path, "--labels", ",".join(LABELS))
    assert result.exit_code == 2
    [error] = result.stderr.strip().splitlines()
    assert error.startswith(f"error: {listing}: line 3: ") and "listed twice (line 1 too)" in error


def test_videos_share_forward_passes(videos, tiny_vit_path, tmp_path, monkeypatch):
    passes = []
    real = action.classify_clips
    monkeypatch.setattr(action, "classify_clips", lambda c, clips: passes.append(len(clips)) or real(c, clips))
    listing = tmp_path / "test.txt"
    listing.write_text("".join(f"videos/{video.name} {i}\n" for i, video in enumerate(videos)))
    result = run(listing, "--model", tiny_vit_path, "--labels", ",".join(LABELS), "--frames", 4, "--json")
    assert result.exit_code == 0, result.output
    assert passes == [6]


def test_a_frame_folder_short_of_its_listed_frames_is_skipped_naming_the_frame(tmp_path, tiny_vit_path):
    write_frame_folder(tmp_path / "whole", coloured_frames(COLOURS[0], 8))
    write_frame_folder(tmp_path / "short", coloured_frames(COLOURS[1], 8))
    listing = tmp_path / "val.txt"
    listing.write_text("whole 8 0\nshort 30 1\n")
    result = run(listing, "--model", tiny_vit_path, "--labels", ",".join(LABELS), "--frames", 4, "--json")
    assert result.exit_code == 4
    rows = json.loads(result.stdout)["results"]
    assert [row["status"] for row in rows] == ["ok", "failed"]
    assert rows[1]["error"] == f"{tmp_path / 'short'}: missing frame img_00011.jpg (the list says 30 frames)"


def test_a_list_of_only_unreadable_videos_exits_4_and_names_no_model_facts(tiny_vit_path, tmp_path):
    """The facts come with the scored videos (from wherever the model ran); with none scored they are unknown."""
    (tmp_path / "videos").mkdir()
    for name in ("a.avi", "b.avi"):
        (tmp_path / "videos" / name).write_bytes(b"RIFF" + b"\x00" * 200)
    listing = tmp_path / "test.txt"
    listing.write_text("videos/a.avi 0\nvideos/b.avi 1\n")
    common = [listing, "--model", tiny_vit_path, "--labels", ",".join(LABELS), "--frames", 4]
    result = run(*common, "--json")
    assert result.exit_code == 4
    report = json.loads(result.stdout)
    assert (report["architecture"], report["head"], report["frames"], report["videos"]) == (None, None, None, 0)
    table = runner.invoke(app, ["action-eval", *map(str, common)], env={"COLUMNS": "200"})
    assert table.exit_code == 4
    assert table.stdout.splitlines()[0].strip() == "ActionCLIP CLIP: 0 video(s), 2 unreadable"
