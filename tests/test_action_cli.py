"""`clipcli classify-action`: zero-shot and checkpoint runs, windows, plots, batches and errors."""

from __future__ import annotations

import errno
import json

import cv2
import pytest
import torch
from conftest import TINY_VIT, build_tiny_clip
from makers.report import json_rows
from makers.video import decoded_index, index_frames, write_video
from test_action import write_actionclip
from typer.testing import CliRunner

from clipcli.cli import app
from clipcli.media.frame_indices import sample_indices
from clipcli.media.video import read_frames, sample_frames
from clipcli.models import clip_loader, load_clip
from clipcli.pipelines import action, action_text

runner = CliRunner()
LABELS = "juggling balls,riding a bike,playing guitar"


def run(*args):
    return runner.invoke(app, ["classify-action", *map(str, args)])


@pytest.fixture
def videos(tmp_path):
    return [write_video(tmp_path / "a.mp4", 30, fps=10), write_video(tmp_path / "b.avi", 45, fps=15)]


def test_zero_shot_json_matches_the_library(videos, tiny_vit_path):
    result = run(*videos, "--model", tiny_vit_path, "--labels", LABELS, "--frames", 4, "--top-k", 2, "--json")
    assert result.exit_code == 0, result.output
    rows = json_rows(result.stdout)
    assert [row["status"] for row in rows] == ["ok", "ok"]
    first = rows[0]
    assert first["frames"] == 4 and first["classes"] == 3 and first["labels"] == "list"
    assert first["frame_indices"] == sample_indices(30, 4, "segment-centre").tolist() == [3, 10, 18, 25]
    predictions = first["predictions"]
    assert len(predictions) == 2 and predictions[0]["probability"] >= predictions[1]["probability"]

    model, _ = load_clip(tiny_vit_path, "cpu")
    names = LABELS.split(",")
    frames = sample_frames(videos[0], 4, "segment-centre").frames
    video = action.encode_frames(model, frames).mean(0, keepdim=True)  # meanP
    expected = action.class_probabilities(video, names, model)[0]
    best = int(expected.argmax())
    assert predictions[0]["label"] == names[best]
    assert predictions[0]["probability"] == pytest.approx(float(expected[best]), abs=1e-5)


def test_table_output_lists_labels(videos, tiny_vit_path):
    result = run(videos[0], "--model", tiny_vit_path, "--labels", LABELS, "--top-k", 3)
    assert result.exit_code == 0, result.output
    for label in LABELS.split(","):
        assert label in result.stdout
    assert "probability" in result.stdout


def test_text_embeddings_are_cached_on_disk(videos, tiny_vit_path, isolated_home, monkeypatch):
    assert run(videos[0], "--model", tiny_vit_path, "--labels", LABELS, "--json").exit_code == 0
    cached = list((isolated_home / ".cache" / "clipcli").rglob("*.npy"))
    assert len(cached) == 1
    clip_loader.clear_cache()  # a new process: a new model object, so only the disk cache can help

    def fail(*args, **kwargs):
        raise AssertionError("text encoded again")

    monkeypatch.setattr(action_text, "_encode_templates", fail)
    result = run(videos[0], "--model", tiny_vit_path, "--labels", LABELS, "--json")
    assert result.exit_code == 0, result.output


def test_a_bad_video_in_a_batch_exits_4_and_the_rest_complete(videos, tiny_vit_path, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    result = run(videos[0], broken, videos[1], "--model", tiny_vit_path, "--labels", LABELS, "--json")
    assert result.exit_code == 4
    rows = json_rows(result.stdout)
    assert [row["status"] for row in rows] == ["ok", "failed", "ok"]
    assert rows[1]["error"].startswith(str(broken))


def test_a_single_bad_video_exits_2_with_one_line(tiny_vit_path, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    result = run(text, "--model", tiny_vit_path, "--labels", LABELS)
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(text) in errors[0]


def test_checkpoint_run_and_frame_count_mismatch(videos, tmp_path):
    clip_model = build_tiny_clip(TINY_VIT, 2)
    transf = write_actionclip(tmp_path / "transf.pt", clip_model, "Transf")
    result = run(videos[0], "--checkpoint", transf, "--frames", 4, "--labels", LABELS, "--json")
    assert result.exit_code == 0, result.output
    row = json_rows(result.stdout)[0]
    assert row["frames"] == 4 and len(row["predictions"]) == 3

    model, fusion = action.load_actionclip(transf)
    frames = sample_frames(videos[0], 4, "segment-centre").frames
    with torch.no_grad():
        video = fusion(action.encode_frames(model, frames)[None])
    expected = action.class_probabilities(video, LABELS.split(","), model)[0]
    assert row["predictions"][0]["probability"] == pytest.approx(float(expected.max()), abs=1e-5)

    cls = write_actionclip(tmp_path / "cls.pt", clip_model, "Transf_cls", frames=4)
    result = run(videos[0], "--checkpoint", cls, "--frames", 8, "--labels", LABELS)
    assert result.exit_code == 2
    assert "--frames 8: this Transf_cls checkpoint was trained on 4 frames" in result.output
    result = run(videos[0], "--checkpoint", cls, "--labels", LABELS, "--json")
    assert result.exit_code == 0 and json_rows(result.stdout)[0]["frames"] == 4


def test_model_and_checkpoint_together_is_a_usage_error(videos, tiny_vit_path, tmp_path):
    ckpt = write_actionclip(tmp_path / "m.pt", build_tiny_clip(TINY_VIT, 2), "meanP")
    result = run(videos[0], "--model", tiny_vit_path, "--checkpoint", ckpt, "--labels", LABELS)
    assert result.exit_code == 2 and "not both" in result.output


def test_windows_give_a_timeline_and_a_plot(tmp_path, tiny_vit_path):
    video = write_video(tmp_path / "long.mp4", 60, fps=10)  # 6 s
    out = tmp_path / "plots"
    result = run(video, "--model", tiny_vit_path, "--labels", LABELS, "--frames", 4,
                 "--window", 2, "--stride", 1, "--plot", "--out", out, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    row = json_rows(result.stdout)[0]
    spans = [(w["start"], w["end"]) for w in row["windows"]]
    assert spans == [(0, 2), (1, 3), (2, 4), (3, 5), (4, 6)]
    assert all(len(w["predictions"]) == 3 for w in row["windows"])
    assert all(sum(p["probability"] for p in w["predictions"]) == pytest.approx(1, abs=1e-4) for w in row["windows"])
    picture = cv2.imread(row["plot"])
    assert picture is not None and picture.shape[0] > 100
    assert sorted(p.name for p in out.iterdir()) == ["long_actions.png"]  # no temp files left


def test_plot_without_window_is_a_usage_error(videos, tiny_vit_path):
    result = run(videos[0], "--model", tiny_vit_path, "--labels", LABELS, "--plot")
    assert result.exit_code == 2 and "--window" in result.output


def test_help_documents_the_deviations():
    result = run("--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for phrase in ("segment-centre", "16 prompt templates", "Apply Eye Makeup", "--window"):
        assert phrase in text


def test_read_frames_decodes_the_window_indices_in_order(tmp_path):
    video = write_video(tmp_path / "idx.mp4", 40, fps=10)
    sampled = read_frames(video, [17, 2, 17, 39])
    assert [decoded_index(frame) for frame in sampled.frames] == [17, 2, 17, 39]
    assert sampled.indices.tolist() == [17, 2, 17, 39]
    with pytest.raises(ValueError, match="within"):
        read_frames(video, [40])


def test_swf_video_is_classified_by_decoding_in_order(tmp_path, tiny_vit_path):
    # FFmpeg cannot seek in SWF; the seek error (PermissionError) used to end the run with exit 1.
    path = write_video(tmp_path / "clip.swf", 20, codec="mjpeg")
    result = run(path, "--model", tiny_vit_path, "--labels", LABELS, "--frames", 4, "--json")
    assert result.exit_code == 0, result.output
    row = json_rows(result.stdout)[0]
    assert row["status"] == "ok"
    assert row["frame_indices"] == sample_indices(20, 4, "segment-centre").tolist()


def test_several_videos_of_different_sizes_are_classified_in_one_batch_as_each_alone(tmp_path, tiny_vit_path,
                                                                                    monkeypatch):  # fmt: skip
    small = write_video(tmp_path / "small.mp4", index_frames(30, 64, 48), fps=10)
    large = write_video(tmp_path / "large.mp4", index_frames(20, 128, 96), fps=10)
    batches = []
    classify_clips = action.classify_clips

    def recording_classify_clips(classifier, clips):
        batches.append([clip.shape for clip in clips])
        return classify_clips(classifier, clips)

    monkeypatch.setattr(action, "classify_clips", recording_classify_clips)
    result = run(small, large, "--model", tiny_vit_path, "--labels", LABELS, "--frames", 4, "--json")
    assert result.exit_code == 0, result.output
    assert batches == [[(4, 48, 64, 3), (4, 96, 128, 3)]]
    model, _ = load_clip(tiny_vit_path, "cpu")
    for row, video in zip(json_rows(result.stdout), (small, large), strict=True):
        frames = sample_frames(video, 4, "segment-centre").frames
        alone = action.class_probabilities(action.encode_frames(model, frames).mean(0, keepdim=True), LABELS.split(","),
                                           model)[0]  # fmt: skip
        by_label = {p["label"]: p["probability"] for p in row["predictions"]}
        assert by_label == pytest.approx(dict(zip(LABELS.split(","), alone.tolist(), strict=True)), abs=1e-5)


def test_report_summary_names_the_labels_and_model(videos, tiny_vit_path):
    result = run(videos[0], "--model", tiny_vit_path, "--labels", LABELS, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["command"] == "classify-action" and report["counts"] == {"ok": 1, "skipped": 0, "failed": 0}
    assert (report["labels"], report["classes"], report["model"]) == ("list", 3, str(tiny_vit_path))


def test_windows_beyond_the_read_ahead_are_decoded_in_chunks_with_the_same_result(tmp_path, tiny_vit_path,
                                                                                   monkeypatch):  # fmt: skip
    video = write_video(tmp_path / "long.mp4", 60, fps=10)
    arguments = [video, "--model", tiny_vit_path, "--labels", LABELS, "--frames", 4, "--window", 2, "--stride", 1]
    whole = run(*arguments, "--json")
    frame_bytes = sample_frames(video, 1, "segment-centre").frames[0].nbytes
    monkeypatch.setattr(action, "READ_AHEAD_BYTES", frame_bytes * 4)  # the first window only
    monkeypatch.setattr(action, "DECODE_BUDGET_BYTES", frame_bytes * 4 * 2)  # then two windows at a time
    decoded = []
    monkeypatch.setattr(action, "read_frames", lambda info, indices, **options: decoded.append(len(indices)) or
                        read_frames(info, indices, **options))  # fmt: skip
    chunked = run(*arguments, "--json")
    assert whole.exit_code == chunked.exit_code == 0, chunked.output
    assert decoded == [4, 8, 8]  # five windows of four frames: one read ahead, then two and two
    [expected], [got] = json_rows(whole.stdout), json_rows(chunked.stdout)
    assert [w["start"] for w in got["windows"]] == [0, 1, 2, 3, 4]
    for want, window in zip(expected["windows"], got["windows"], strict=True):
        assert [p["label"] for p in window["predictions"]] == [p["label"] for p in want["predictions"]]
        assert [p["probability"] for p in window["predictions"]] == pytest.approx(
            [p["probability"] for p in want["predictions"]], abs=1e-5
        )


def test_a_zero_stride_is_refused_naming_the_flag(videos, tiny_vit_path):
    result = run(videos[0], "--model", tiny_vit_path, "--labels", LABELS, "--window", 2, "--stride", 0)
    assert result.exit_code == 2
    assert result.stderr == "error: --stride must be positive, got 0.0\n"


def test_a_plot_that_cannot_be_written_fails_that_video_only(tmp_path, tiny_vit_path, monkeypatch):
    videos = [write_video(tmp_path / f"{name}.mp4", 20, fps=10) for name in ("full", "fine")]
    out = tmp_path / "plots"
    write_png = action.write_png

    def disk_full_for_the_first(target, picture):
        if target.name.startswith("full"):
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        write_png(target, picture)

    monkeypatch.setattr(action, "write_png", disk_full_for_the_first)
    result = run(*videos, "--model", tiny_vit_path, "--labels", LABELS, "--frames", 2, "--window", 1, "--plot",
                 "--out", out, "--quiet")  # fmt: skip
    assert result.exit_code == 4
    assert sorted(path.name for path in out.iterdir()) == ["fine_actions.png"]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors[0] == f"error: {videos[0]}: No space left on device ({out / 'full_actions.png'})"
    assert len(errors) == 2 and "1 of 2" in errors[1]
