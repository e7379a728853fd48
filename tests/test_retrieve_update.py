"""`retrieve --update-only`, the update's per-video report, option errors naming their flag, and `--cluster`."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

import pytest
from makers.report import json_rows
from makers.video import index_frames, write_video
from typer.testing import CliRunner

from clipcli import cluster
from clipcli.cli import app
from clipcli.errors import BadInputError, ParameterError
from clipcli.pipelines import retrieve
from clipcli.runner import LocalExecutor
from clipcli.store.index import VideoIndex

runner = CliRunner()
CORRUPT = b"\x00\x00\x00\x18ftypmp42" + b"junk" * 50


@pytest.fixture(autouse=True)
def index_home(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPCLI_INDEX_HOME", str(tmp_path / "indexes"))


@pytest.fixture
def folder(tmp_path):
    """Three tiny videos of distinct brightness and one corrupt file."""
    videos = tmp_path / "videos"
    videos.mkdir()
    for number in range(3):
        write_video(videos / f"clip{number}.mp4", index_frames(8) // (2 + number))
    (videos / "broken.mp4").write_bytes(CORRUPT)
    return videos


def invoke(*args):
    return runner.invoke(app, [str(arg) for arg in args], env={"COLUMNS": "300"})


def test_update_only_indexes_every_video_reports_each_and_exits_4_for_the_corrupt_one(folder, tiny_vit_path):
    result = invoke("retrieve", folder, "--update-only", "--model", tiny_vit_path, "--device", "cpu", "--json")
    assert result.exit_code == 4, result.output
    report = json.loads(result.stdout)
    assert report["command"] == "retrieve" and "hits" not in report
    assert report["counts"] == {"ok": 3, "skipped": 0, "failed": 1}
    rows = {row["input"]: row for row in report["results"]}
    assert sorted(rows) == sorted(str(path) for path in folder.iterdir())
    assert rows[str(folder / "clip1.mp4")]["frames"] == 8 and rows[str(folder / "clip1.mp4")]["duration"] > 0
    assert rows[str(folder / "broken.mp4")]["error"].startswith(f"{folder / 'broken.mp4'}: ")
    assert report["indexes"][0]["embedded"] == 3 and report["indexes"][0]["failed"] == 1
    assert f"error: {folder / 'broken.mp4'}: " in result.stderr and "error: 1 of 4 inputs failed" in result.stderr
    with VideoIndex(retrieve.default_index_dir(folder)) as index:
        assert index.matrix([folder]).paths == [folder / f"clip{number}.mp4" for number in range(3)]

    again = invoke("retrieve", folder, "--update-only", "--model", tiny_vit_path, "--device", "cpu", "--json")
    assert again.exit_code == 0, again.output
    reasons = {row["input"]: row.get("reason") for row in json_rows(again.stdout)}
    assert reasons.pop(str(folder / "broken.mp4")) == "failed before (--reindex retries them)"
    assert set(reasons.values()) == {"already indexed"}
    assert "0 embedded, 4 unchanged, 1 failed before" in again.stderr


def test_update_only_prints_a_table_of_what_it_embedded_and_then_a_query_finds_it(folder, tiny_vit_path):
    (folder / "broken.mp4").unlink()
    result = invoke("retrieve", folder, "--update-only", "--model", tiny_vit_path, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "index update (0 video(s) unchanged)" in result.stdout and "clip2.mp4" in result.stdout
    search = invoke("retrieve", folder, "a dark clip", "--no-update", "--model", tiny_vit_path, "--json")
    assert search.exit_code == 0, search.output
    assert len(json.loads(search.stdout)["hits"]) == 3 and json_rows(search.stdout) == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["a dark clip"], "error: --update-only takes no QUERY: 'a dark clip' is not a folder or video\n"),
        (["--image", "query.png"], "error: --update-only searches nothing; it cannot be combined with --image\n"),
        (["--no-update"], "error: --update-only searches nothing; it cannot be combined with --no-update\n"),
    ],
)
def test_update_only_with_a_query_or_a_search_option_is_a_usage_error(folder, tiny_vit_path, extra, message):
    result = invoke("retrieve", folder, "--update-only", *extra, "--model", tiny_vit_path)
    assert result.exit_code == 2 and result.stderr == message
    assert not retrieve.default_index_dir(folder).exists()  # refused before anything was indexed


def test_option_errors_name_the_parameter_in_python_and_the_flag_on_the_command_line(tmp_path, monkeypatch):
    with pytest.raises(ParameterError, match=r"^frames: must be at least 1, got 0$"):
        retrieve.run([tmp_path], "a dog", frames=0)
    with pytest.raises(ParameterError, match=r"^sampling: 'often': expected one of uniform, fps, keyframes$"):
        retrieve.evaluate(tmp_path / "a.csv", tmp_path, sampling="often")
    with pytest.raises(ParameterError, match=r"^ann_mode: 'sometimes': expected one of auto, on, off$"):
        retrieve.run([tmp_path], "a dog", ann_mode="sometimes")
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` raises ImportError
    result = invoke("retrieve", tmp_path, "a dog", "--ann", "on")
    assert result.exit_code == 2
    assert result.stderr == "error: --ann on needs faiss, which is not installed: pip install clipcli[faiss]\n"


def test_a_commit_failing_mid_update_ends_the_update_and_keeps_the_batches_committed(
    folder, tiny_vit_path, monkeypatch
):
    real_write, commits = VideoIndex.write, []

    def fills_up(index, records, failures=()):
        commits.append([record.path.name for record in records] + [failure.path.name for failure in failures])
        if len(commits) == 2:
            raise BadInputError("database or disk is full", index.db_path)
        return real_write(index, records, failures)

    monkeypatch.setattr(VideoIndex, "write", fills_up)
    retriever = retrieve.Retriever.load(str(tiny_vit_path), device="cpu")
    files = retrieve.walk_videos(folder)
    with VideoIndex(folder.parent / "index") as index, pytest.raises(BadInputError, match="disk is full$"):
        retrieve.update_index(index, retriever, files, roots=[folder], batch_videos=2, workers=1)
    assert commits == [["clip0.mp4", "broken.mp4"], ["clip1.mp4", "clip2.mp4"]]  # the second was not retried
    with VideoIndex(folder.parent / "index") as index:
        assert index.matrix([folder]).paths == [folder / "clip0.mp4"]
        assert [path for path, _ in index.failures([folder])] == [folder / "broken.mp4"]


@dataclass
class CountingExecutor(LocalExecutor):
    """A local executor that says which jobs it ran over how many inputs."""

    runs: list = field(default_factory=list)

    def outcomes(self, job, todo):
        self.runs.append((job.name, len(todo)))
        yield from super().outcomes(job, todo)


def test_retrieve_eval_indexes_through_the_cluster_executor(folder, tiny_vit_path, tmp_path, monkeypatch):
    executor = CountingExecutor()
    monkeypatch.setattr(
        cluster, "executor_for", lambda name, workers: executor if (name, workers) == ("x", 2) else None
    )
    (tmp_path / "captions.csv").write_text("video_id,sentence\nclip0,a dark clip\nclip2,a darker clip\n")
    result = invoke("retrieve-eval", tmp_path / "captions.csv", folder, "--model", tiny_vit_path, "--json",
                    "--cluster", "x", "--workers", "2")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert executor.runs == [("indexing", 2)]
    assert json.loads(result.stdout)["counts"] == {"ok": 2, "skipped": 0, "failed": 0}


def test_retrieve_on_the_cluster_ranks_as_the_local_run_and_indexes_each_video_once(
    ray_session, folder, tiny_vit_path, tmp_path
):
    common = ["a dark clip", "--model", tiny_vit_path, "--device", "cpu", "--json", "--quiet"]
    local = invoke("retrieve", folder, *common, "--index", tmp_path / "local")
    on_ray = invoke("retrieve", folder, *common, "--index", tmp_path / "ray", "--cluster", "local", "--workers", "2")
    assert local.exit_code == on_ray.exit_code == 4, on_ray.output
    here, there = json.loads(local.stdout), json.loads(on_ray.stdout)
    assert [hit["path"] for hit in there["hits"]] == [hit["path"] for hit in here["hits"]]
    assert [hit["score"] for hit in there["hits"]] == pytest.approx([hit["score"] for hit in here["hits"]], abs=1e-5)
    assert [(row["input"], row["status"]) for row in there["results"]] == [
        (row["input"], row["status"]) for row in here["results"]
    ]
    with VideoIndex(tmp_path / "ray") as index:
        keys = [key for (key,) in index.db.execute("SELECT path FROM videos")]
    assert len(keys) == len(set(keys)) == 4  # three embedded and the corrupt one recorded as failed, once each
