"""`clipcli retrieve` end to end on tiny videos: the incremental index, failures, resume, locking, output."""

from __future__ import annotations

import json
import os
import sqlite3

import av
import cv2
import numpy as np
import pytest
import torch
from conftest import TINY_VIT, build_tiny_clip
from makers.clip4clip import clip4clip_state
from makers.video import decoded_index, write_video
from typer.testing import CliRunner

from clipcli.cli import app
from clipcli.errors import BadInputError
from clipcli.media.keyframes import sample_keyframes
from clipcli.models.clip4clip import load_clip4clip
from clipcli.pipelines import retrieve
from clipcli.pipelines.retrieve import indexing as retrieve_indexing
from clipcli.store.index import VideoIndex, VideoRecord

runner = CliRunner()
COLOURS = [(230, 40, 40), (40, 200, 60), (50, 70, 220), (240, 220, 30)]


def clip_frames(colour, count=12, size=(48, 64)) -> np.ndarray:
    """A coloured clip with a white square moving left to right."""
    frames = np.empty((count, *size, 3), np.uint8)
    frames[:] = colour
    for index in range(count):
        left = 4 + index * 3
        frames[index, 16:32, left : left + 16] = 255
    return frames


@pytest.fixture(autouse=True)
def index_home(tmp_path, monkeypatch):
    """Default indexes go under the test's folder, never the user's data folder."""
    home = tmp_path / "indexes"
    monkeypatch.setenv("CLIPCLI_INDEX_HOME", str(home))
    return home


@pytest.fixture
def videos(tmp_path):
    folder = tmp_path / "videos"
    (folder / "sub").mkdir(parents=True)
    paths = [write_video(folder / f"clip{i}.mp4", clip_frames(colour), fps=10) for i, colour in enumerate(COLOURS[:3])]
    paths.append(write_video(folder / "sub" / "CLIP3.AVI", clip_frames(COLOURS[3]), fps=10))
    return folder, paths


def cli(*args):
    result = runner.invoke(app, [str(arg) for arg in args])
    return result


def query_json(folder, model, *extra):
    result = cli("retrieve", folder, "a coloured square", "--model", model, "--device", "cpu", "--json", *extra)
    return result, (json.loads(result.stdout)["hits"] if result.stdout.strip().startswith("{") else None)


@pytest.fixture
def decode_calls(monkeypatch):
    """Every path decode_video is called with, in order."""
    calls = []
    real = retrieve.decode_video

    def spy(path, *args):
        calls.append(path)
        return real(path, *args)

    monkeypatch.setattr(retrieve_indexing, "decode_video", spy)
    return calls


# ---------------------------------------------------------------- the incremental index


def test_second_run_embeds_nothing_touch_reembeds_one_delete_drops_it(videos, tiny_vit_path, decode_calls):
    folder, paths = videos
    result, hits = query_json(folder, tiny_vit_path)
    assert result.exit_code == 0, result.output
    assert sorted(decode_calls) == sorted(paths)  # hidden-case extension .AVI found in a subfolder
    assert sorted(hit["path"] for hit in hits) == sorted(str(p) for p in paths)
    assert [hit["rank"] for hit in hits] == [1, 2, 3, 4]
    assert all(set(hit) == {"rank", "score", "path", "duration"} for hit in hits)
    assert [hit["score"] for hit in hits] == sorted((hit["score"] for hit in hits), reverse=True)
    assert all(hit["duration"] == pytest.approx(1.2) for hit in hits)
    assert "4 embedded, 0 unchanged" in result.stderr

    decode_calls.clear()
    result, again = query_json(folder, tiny_vit_path)
    assert result.exit_code == 0 and decode_calls == []
    assert "0 embedded, 4 unchanged" in result.stderr
    assert again == hits

    stat = paths[1].stat()
    os.utime(paths[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    result, _ = query_json(folder, tiny_vit_path)
    assert decode_calls == [paths[1]] and "1 embedded, 3 unchanged" in result.stderr

    decode_calls.clear()
    paths[2].unlink()
    result, hits = query_json(folder, tiny_vit_path)
    assert result.exit_code == 0 and decode_calls == []
    assert "1 removed" in result.stderr
    assert str(paths[2]) not in {hit["path"] for hit in hits} and len(hits) == 3


def test_corrupt_and_empty_videos_are_reported_and_skipped(videos, tiny_vit_path, decode_calls):
    folder, paths = videos
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"junk" * 50)
    (folder / "empty.mkv").write_bytes(b"")
    result, hits = query_json(folder, tiny_vit_path)
    assert result.exit_code == 4, result.output
    assert len(hits) == 4 and all(np.isfinite(hit["score"]) for hit in hits)
    assert f"error: {folder / 'broken.mp4'}: " in result.stderr
    assert f"error: {folder / 'empty.mkv'}: empty file" in result.stderr
    assert "2 failed" in result.stderr and "error: 2 of 6 inputs failed" in result.stderr
    # Known failures are listed, not retried, and no longer fail the run.
    decode_calls.clear()
    result, _ = query_json(folder, tiny_vit_path)
    assert result.exit_code == 0 and decode_calls == []
    assert "2 failed before (--reindex retries them)" in result.stderr
    with VideoIndex(retrieve.default_index_dir(folder)) as index:
        failed = dict(index.failures([folder]))
    assert set(failed) == {folder / "broken.mp4", folder / "empty.mkv"}
    result, _ = query_json(folder, tiny_vit_path, "--reindex")
    assert result.exit_code == 4 and len(decode_calls) == 6


def test_interrupted_index_resumes_to_the_same_result(videos, tiny_vit_path, tmp_path, monkeypatch):
    folder, paths = videos
    retriever = retrieve.Retriever.load(str(tiny_vit_path), device="cpu")
    files = retrieve.walk_videos(folder)
    real, calls = retrieve.decode_video, []

    def interrupting(path, *args):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(path, *args)

    monkeypatch.setattr(retrieve_indexing, "decode_video", interrupting)
    with VideoIndex(tmp_path / "resumed") as index, pytest.raises(KeyboardInterrupt):
        retrieve.update_index(index, retriever, files, roots=[folder], batch_videos=2, workers=1)
    monkeypatch.setattr(retrieve_indexing, "decode_video", real)
    with VideoIndex(tmp_path / "resumed") as index:
        assert len(index.matrix([folder])) == 2  # the first batch was committed, the second was not
        summary = retrieve.update_index(index, retriever, files, roots=[folder], batch_videos=2, workers=1)
        assert (summary.embedded, summary.unchanged) == (2, 2)
        resumed = index.matrix([folder])
    with VideoIndex(tmp_path / "fresh") as index:
        retrieve.update_index(index, retriever, files, roots=[folder])
        fresh = index.matrix([folder])
    assert resumed.paths == fresh.paths == sorted(paths)
    np.testing.assert_allclose(resumed.embeddings.astype(np.float32), fresh.embeddings.astype(np.float32), atol=2e-3)


def test_a_second_updater_waits_then_fails_clearly(videos, tiny_vit_path, tmp_path):
    folder, _ = videos
    retriever = retrieve.Retriever.load(str(tiny_vit_path), device="cpu")
    holder, other = VideoIndex(tmp_path / "shared"), VideoIndex(tmp_path / "shared")
    with holder, other, holder.lock(), pytest.raises(BadInputError) as caught:
        retrieve.update_index(other, retriever, retrieve.walk_videos(folder), roots=[folder], lock_timeout=0.3)
    assert f"being updated by another process (pid {os.getpid()})" in str(caught.value)
    with VideoIndex(tmp_path / "shared") as index:
        assert index.count() == 0  # the waiting updater wrote nothing


def test_model_change_reembeds_and_no_update_refuses_a_stale_index(videos, tiny_vit_path, tmp_path, decode_calls):
    folder, _ = videos
    other = tmp_path / "other-tiny.pt"
    torch.save(build_tiny_clip(TINY_VIT, 7).state_dict(), other)
    assert query_json(folder, tiny_vit_path)[0].exit_code == 0
    decode_calls.clear()
    result, _ = query_json(folder, other)
    assert result.exit_code == 0 and len(decode_calls) == 4
    assert "model or sampling changed: re-embedded" in result.stderr
    result, _ = query_json(folder, tiny_vit_path, "--no-update")
    assert result.exit_code == 2 and "rerun without --no-update" in result.stderr
    result, _ = query_json(folder, other, "--no-update", "--frames", "12")
    assert result.exit_code == 0
    result, _ = query_json(folder, other, "--no-update", "--frames", "6")
    assert result.exit_code == 2


def test_no_update_without_an_index_and_bad_usage(videos, tiny_vit_path, tmp_path):
    folder, _ = videos
    result, _ = query_json(folder, tiny_vit_path, "--no-update")
    assert result.exit_code == 2 and "no index here yet" in result.stderr
    assert cli("retrieve", "only-a-query", "--model", tiny_vit_path).exit_code == 2
    result = cli("retrieve", tmp_path / "missing", "query", "--model", tiny_vit_path)
    assert result.exit_code == 2 and "missing: no such file or folder" in result.stderr
    assert cli("retrieve", folder, "q", "--model", tiny_vit_path, "--top-k", "0").exit_code == 2
    assert cli("retrieve", folder, "q", "--model", tiny_vit_path, "--fast", "--sampling", "fps").exit_code == 2


# ---------------------------------------------------------------- search and output


def test_query_equal_to_a_video_embedding_ranks_it_first(tmp_path, tiny_vit_path):
    retriever = retrieve.Retriever.load(str(tiny_vit_path), device="cpu")
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    folder = tmp_path / "lib"
    with VideoIndex(tmp_path / "injected") as index:
        index.reset(retriever.identity(12, "uniform"))
        index.write(
            VideoRecord(folder / f"v{i:02d}.mp4", 1, 1, 3.0, vector, vector[None], np.ones(1), np.zeros(1))
            for i, vector in enumerate(vectors)
        )
        for target in (0, 17, 49):
            hits = retrieve.search([(index, [folder])], retriever, torch.from_numpy(vectors[target]), top_k=5)
            assert hits[0].path == folder / f"v{target:02d}.mp4"
            assert hits[0].score == pytest.approx(1.0, abs=2e-3) and hits[1].score < hits[0].score
        assert retrieve.search([(index, [tmp_path / "elsewhere"])], retriever, torch.from_numpy(vectors[0])) == []
        # A sibling folder sharing the name's prefix ("lib2" vs "lib") is not under the root.
        index.write([VideoRecord(tmp_path / "lib2" / "x.mp4", 1, 1, 3.0, vectors[3], vectors[3][None], np.ones(1),
                                 np.zeros(1))])  # fmt: skip
        hits = retrieve.search([(index, [folder])], retriever, torch.from_numpy(vectors[3]), top_k=100)
        assert len(hits) == 50 and hits[0].path == folder / "v03.mp4"
        assert index.matrix([tmp_path / "lib2"]).paths == [tmp_path / "lib2" / "x.mp4"]
        assert len(index.matrix([folder, tmp_path / "lib2", folder / "v07.mp4"])) == 51


def test_image_query_segments_and_paths_only(videos, tiny_vit_path, tmp_path):
    folder, paths = videos
    # A clip whose first half is green and second half blue: a blue query frame peaks in the second half.
    halves = np.concatenate([clip_frames(COLOURS[1], 10), clip_frames(COLOURS[2], 10)])
    two_part = write_video(folder / "two_part.mp4", halves, fps=10)
    query = tmp_path / "query.png"
    cv2.imwrite(str(query), cv2.cvtColor(clip_frames(COLOURS[0])[5], cv2.COLOR_RGB2BGR))
    result = cli("retrieve", folder, "--image", query, "--model", tiny_vit_path, "--device", "cpu", "--json",
                 "--segments")  # fmt: skip
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)["hits"]
    assert hits[0]["path"] == str(paths[0])  # the red clip the query frame came from
    for hit in hits:
        segment = hit["segment"]
        assert 0 <= segment["start"] <= segment["peak"] <= segment["end"] <= hit["duration"]
    blue = tmp_path / "blue.png"
    cv2.imwrite(str(blue), cv2.cvtColor(clip_frames(COLOURS[2])[5], cv2.COLOR_RGB2BGR))
    result = cli("retrieve", two_part, "--image", blue, "--model", tiny_vit_path, "--device", "cpu", "--json",
                 "--segments")  # fmt: skip
    (hit,) = json.loads(result.stdout)["hits"]
    assert hit["segment"]["peak"] >= 1.0 and hit["segment"]["start"] >= 0.9
    result = cli("retrieve", folder, "a square", "--model", tiny_vit_path, "--device", "cpu", "-f", "-k", "2")
    assert result.exit_code == 0
    assert len(result.stdout.splitlines()) == 2 and all(os.path.isfile(line) for line in result.stdout.splitlines())
    result = cli("retrieve", folder, "a square", "--model", tiny_vit_path, "--device", "cpu", "--segments")
    assert result.exit_code == 0 and "best segment" in result.stdout
    assert "clip0.mp4" in result.stdout.replace("│", "").replace(" ", "").replace("\n", "")


def test_checkpoint_head_indexes_and_shared_index(videos, tmp_path):
    folder, paths = videos
    checkpoint = tmp_path / "pytorch_model.bin.4"
    torch.save(clip4clip_state("seqTransf"), checkpoint)
    shared = tmp_path / "shared-index"
    result = cli("retrieve", folder / "sub", paths[0], "a square", "--checkpoint", checkpoint, "--index", shared,
                 "--device", "cpu", "--json", "--segments", "--frames", "6")  # fmt: skip
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)["hits"]
    assert {hit["path"] for hit in hits} == {str(paths[0]), str(paths[3])}
    with VideoIndex(shared) as index:
        assert index.identity["head"] == "seqTransf" and index.identity["frames"] == 6
        assert index.identity["tower"].startswith("sha256:")
        stored = index.frames(paths[0])
    assert stored.embeddings.shape == (6, 64) and np.allclose(np.linalg.norm(stored.embeddings, axis=1), 1, atol=2e-3)
    assert np.all(np.diff(stored.timestamps) > 0)
    # The stored video embedding is the seqTransf pooling of the stored frames.
    model, head = load_clip4clip(checkpoint)
    with torch.no_grad():
        expected = head(torch.from_numpy(stored.features)[None], torch.ones(1, 6))[0].numpy()
    with VideoIndex(shared) as index:
        matrix = index.matrix([paths[0]])
    assert matrix.paths == [paths[0]]
    np.testing.assert_allclose(matrix.embeddings[0].astype(np.float32), expected, atol=2e-3)
    tight = tmp_path / "tight.bin"
    torch.save({**clip4clip_state("meanP"), "similarity_dense.weight": torch.zeros(1, 64)}, tight)
    result = cli("retrieve", folder, "q", "--checkpoint", tight, "--device", "cpu")
    assert result.exit_code == 2 and "tightTransf" in result.stderr


def test_index_is_sqlite_with_fp16_frames(videos, tiny_vit_path, index_home):
    folder, paths = videos
    assert query_json(folder, tiny_vit_path)[0].exit_code == 0
    (database,) = index_home.glob("videos-*/index.sqlite3")
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT length(embeddings), length(norms), length(timestamps) FROM frames").fetchall()
    assert rows == [(12 * 32 * 2, 12 * 4, 12 * 8)] * 4


# ---------------------------------------------------------------- walking, sampling, evaluation


def test_walk_skips_hidden_folders_and_survives_symlink_loops(tmp_path):
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / ".cache").mkdir()
    for name in ("a/one.MP4", "a/b/two.webm", ".cache/hidden.mp4", "a/notes.txt"):
        (root / name).write_bytes(b"x")
    (root / "a" / "b" / "loop").symlink_to(root / "a", target_is_directory=True)
    found = retrieve.walk_videos(root)
    assert found == [root / "a" / "b" / "two.webm", root / "a" / "one.MP4"]


def test_fast_sampling_takes_the_keyframe_before_each_uniform_time(tmp_path):
    path = write_video(tmp_path / "gop.mkv", 40, fps=10, gop=8)
    with av.open(str(path)) as container:
        keyframes = [index for index, frame in enumerate(container.decode(video=0)) if frame.key_frame]
    assert len(keyframes) >= 3
    times = (np.arange(8) + 0.5) * 4.0 / 8  # centres of 8 equal spans of the 4 s clip
    expected = sorted({max(k for k in keyframes if k <= int(t * 10 + 1e-9)) for t in times})
    sampled = sample_keyframes(path, 8)
    assert [decoded_index(frame) for frame in sampled.frames] == expected
    assert sampled.indices.tolist() == expected
    np.testing.assert_allclose(sampled.timestamps, np.array(expected) / 10, atol=1e-6)


def test_fast_and_fps_sampling_index(videos, tiny_vit_path):
    folder, _ = videos
    for options in (["--fast"], ["--sampling", "fps"]):
        result, hits = query_json(folder, tiny_vit_path, *options)
        assert result.exit_code == 0 and len(hits) == 4, result.output


def test_retrieve_eval_on_a_csv(videos, tiny_vit_path, tmp_path):
    folder, paths = videos
    table = tmp_path / "test.csv"
    table.write_text("key,vid_key,video_id,sentence\n"
                     "ret0,msr0,clip0,a red clip\nret1,msr1,clip1,a green clip\nret2,msr2,CLIP3,a yellow clip\n"
                     "ret3,msr3,clip0,a square moves\n")  # fmt: skip
    result = cli("retrieve-eval", table, folder, "--model", tiny_vit_path, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    metrics = report["text_to_video"]
    assert report["videos"] == 3 and report["evaluated"] == 4 and metrics["queries"] == 4
    assert 1 <= metrics["MdR"] <= 3 and 1 <= metrics["MnR"] <= 3 and 0 <= metrics["R@1"] <= metrics["R@5"] == 100
    assert report["paper_msrvtt_1ka"]["meanP (9k)"]["R@1"] == 43.1
    table.write_text("video_id,sentence\nclip9,missing video\n")
    result = cli("retrieve-eval", table, folder, "--model", tiny_vit_path)
    assert result.exit_code == 2 and "1 video(s) of the CSV are not in the folder (e.g. clip9)" in result.stderr
