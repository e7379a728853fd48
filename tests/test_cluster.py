"""`--cluster`: jobs on Ray actors give a local run's results, survive killed workers and resume."""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from makers.images import draw_shapes_image, write_image
from makers.report import json_rows
from typer.testing import CliRunner

from clipcli import cluster
from clipcli.cli import app
from clipcli.errors import BadInputError, WeightsUnavailableError
from clipcli.runner import Job, run_job

runner = CliRunner()


@dataclass
class Squares(Job):
    """Squares the number in each name; may kill its own worker process on chosen inputs."""

    folder: Path
    bad: set[str] = field(default_factory=set)
    kill_once: set[str] = field(default_factory=set)
    kill_always: set[str] = field(default_factory=set)
    name = "squares"

    def read(self, path: Path) -> int:
        if path.name in self.bad:
            raise BadInputError("cannot decode", path)
        return int(path.name)

    def compute(self, path: Path, value: int) -> int:
        marker = self.folder / f"killed-{path.name}"
        if path.name in self.kill_always or (path.name in self.kill_once and not marker.exists()):
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return value * value

    def write(self, path: Path, outcome: int) -> dict:
        with open(self.folder / "written.txt", "a") as log:
            log.write(f"{path.name}\n")
        return {"square": outcome}


@dataclass
class Threads(Job):
    """Reports how many math threads torch uses where it computes."""

    name = "threads"

    def compute(self, path: Path, value: Path) -> dict:
        import torch

        return {"threads": torch.get_num_threads()}


@dataclass
class NoWeights(Squares):
    def setup(self) -> None:
        raise WeightsUnavailableError("RN50: no weights here")


def numbered(count: int) -> list[Path]:
    return [Path(str(number)) for number in range(1, count + 1)]


def written(folder: Path) -> list[str]:
    return sorted((folder / "written.txt").read_text().split(), key=int)


def test_a_ray_run_reports_what_a_local_run_does_in_input_order(ray_session, tmp_path):
    (tmp_path / "local").mkdir()
    (tmp_path / "ray").mkdir()
    local = run_job(Squares(tmp_path / "local", bad={"3"}), numbered(6))
    on_ray = run_job(Squares(tmp_path / "ray", bad={"3"}), numbered(6), executor=cluster.RayExecutor("local", 2))
    assert on_ray.rows() == local.rows()
    assert [row.get("square") for row in on_ray.rows()] == [1, 4, None, 16, 25, 36]
    assert on_ray.results[2].error == "3: cannot decode"


@pytest.mark.parametrize("workers, threads", [(1, 2), (2, 1)])
def test_cpu_actors_share_the_clusters_cpus_as_math_threads(ray_session, workers, threads):
    report = run_job(Threads(), numbered(2), executor=cluster.RayExecutor("local", workers))
    assert [row["threads"] for row in report.rows()] == [threads, threads]  # the test cluster has 2 CPUs


def test_a_killed_actor_is_restarted_and_every_input_is_written_exactly_once(ray_session, tmp_path):
    report = run_job(Squares(tmp_path, kill_once={"4"}), numbered(8), executor=cluster.RayExecutor("local", 2))
    assert (tmp_path / "killed-4").exists()  # the worker did die mid-run
    assert report.counts() == {"ok": 8, "skipped": 0, "failed": 0}
    assert written(tmp_path) == [str(n) for n in range(1, 9)]


def test_an_input_that_kills_its_worker_every_time_fails_alone(ray_session, tmp_path):
    report = run_job(Squares(tmp_path, kill_always={"2"}), numbered(4), executor=cluster.RayExecutor("local", 1))
    assert [result.status for result in report.results] == ["ok", "failed", "ok", "ok"]
    assert report.results[1].error == "2: the Ray worker died each of the 3 times it ran alone"
    assert written(tmp_path) == ["1", "3", "4"]


def test_a_setup_error_on_the_actors_ends_the_run_with_its_own_exit_code(ray_session, tmp_path):
    with pytest.raises(WeightsUnavailableError, match="RN50: no weights here") as raised:
        run_job(NoWeights(tmp_path), numbered(2), executor=cluster.RayExecutor("local", 1))
    assert raised.value.exit_code == 3


def test_inputs_a_node_cannot_see_are_refused_before_any_work(tmp_path):
    class OtherNode:
        def get(self, refs):
            return [("node-2", ["/data/videos"])]

    class Actor:
        class missing:
            @staticmethod
            def remote(paths):
                return paths

    (tmp_path / "a.mp4").touch()
    with pytest.raises(BadInputError, match="^/data/videos: not found on the Ray node node-2; inputs must be"):
        cluster._check_shared_paths(OtherNode(), [Actor()], [tmp_path / "a.mp4"])


def test_cluster_without_ray_is_a_one_line_error_naming_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(
        BadInputError, match=r"^--cluster needs Ray, which is not installed: pip install 'clipcli\[ray\]'"
    ):
        cluster.executor_for("local")
    assert cluster.executor_for(None) is None
    write_image(tmp_path / "a.png", draw_shapes_image(64, seed=1))
    result = runner.invoke(app, ["depth", str(tmp_path / "a.png"), "--cluster", "local", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr == "error: --cluster needs Ray, which is not installed: pip install 'clipcli[ray]'\n"


def without_timing(row: dict) -> dict:
    """A depth row less its time and output folder, the two things that differ between the runs."""
    return {key: value for key, value in row.items() if key not in ("seconds", "npy", "png", "color")}


@pytest.mark.parametrize(
    "address, problem",
    [("127.0.0.1:1", "no Ray head answers there"), ("headnode", "expected local, auto, HOST:PORT or ray://HOST:PORT")],
)
def test_a_cluster_address_that_does_not_answer_is_refused_in_seconds(address, problem, tmp_path):
    with pytest.raises(BadInputError, match=f"^--cluster {address}: {problem}"):
        list(cluster.RayExecutor(address).outcomes(Squares(tmp_path), [(0, Path("1"))]))


def depth_outputs(folder: Path) -> dict[str, np.ndarray]:
    return {path.name: np.load(path) for path in sorted(folder.glob("*_depth.npy"))}


def test_depth_on_the_cluster_writes_the_local_runs_files_and_exit_code(ray_session, tiny_rn_path, tmp_path):
    images = [tmp_path / f"room{n}.png" for n in range(3)]
    for seed, path in enumerate(images):
        write_image(path, draw_shapes_image((64, 96), seed=seed))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    inputs = [str(path) for path in [*images, tmp_path / "broken.png"]]
    common = ["--model", str(tiny_rn_path), "--device", "cpu", "--json", "--quiet"]
    local = runner.invoke(app, ["depth", *inputs, "--out", str(tmp_path / "local"), *common])
    on_ray = runner.invoke(app, ["depth", *inputs, "--out", str(tmp_path / "ray"), "--cluster", "local",
                                 "--workers", "2", *common])  # fmt: skip
    assert local.exit_code == on_ray.exit_code == 4
    assert [without_timing(row) for row in json_rows(on_ray.stdout)] == [
        without_timing(row) for row in json_rows(local.stdout)
    ]
    here, there = depth_outputs(tmp_path / "local"), depth_outputs(tmp_path / "ray")
    assert sorted(here) == sorted(there) == ["room0_depth.npy", "room1_depth.npy", "room2_depth.npy"]
    for name in here:
        np.testing.assert_allclose(there[name], here[name], atol=1e-5)


def test_an_interrupted_cluster_run_resumes_with_nothing_lost_or_written_twice(
    ray_session, tiny_rn_path, tmp_path, monkeypatch
):
    from clipcli.pipelines import depth

    images = []
    for n in range(5):
        write_image(tmp_path / f"img{n}.png", draw_shapes_image((64, 64), seed=n))
        images.append(str(tmp_path / f"img{n}.png"))
    out = tmp_path / "out"
    real_write, calls = depth.write_outputs, []

    def interrupted_after_two(*args):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(args[1].npy.name)
        real_write(*args)

    monkeypatch.setattr(depth, "write_outputs", interrupted_after_two)
    command = ["depth", *images, "--model", str(tiny_rn_path), "--device", "cpu", "--out", str(out),
               "--cluster", "local", "--json", "--quiet"]  # fmt: skip
    first = runner.invoke(app, command)
    assert first.exit_code == 130 and first.stderr == "error: interrupted\n"
    assert sorted(p.name for p in out.glob("*.npy")) == sorted(calls) and len(calls) == 2
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left behind
    monkeypatch.setattr(depth, "write_outputs", real_write)
    second = runner.invoke(app, command)
    assert second.exit_code == 0, second.output
    statuses = {Path(row["input"]).stem: row["status"] for row in json_rows(second.stdout)}
    assert sorted(stem for stem, status in statuses.items() if status == "skipped") == sorted(
        name.removesuffix("_depth.npy") for name in calls
    )
    assert sorted(statuses.values()).count("ok") == 3
    assert len(list(out.glob("*_depth.npy"))) == 5
