"""The one batch runner: results in input order, skips, per-input failures, batches, executors."""

from __future__ import annotations

import errno
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from clipcli.errors import BadInputError, PartialFailure
from clipcli.runner import Job, LocalExecutor, Report, Result, run_job


@dataclass
class Doubling(Job):
    """Reads a number from each path's name, doubles it in batches, 'writes' by recording the call."""

    finished: set[str] = field(default_factory=set)
    bad_read: set[str] = field(default_factory=set)
    bad_compute: set[str] = field(default_factory=set)
    full_disk: set[str] = field(default_factory=set)
    batch_size: int = 1
    written: list[str] = field(default_factory=list)
    name = "doubling"

    def setup(self) -> None:
        self._model = 2
        self.setups = getattr(self, "setups", 0) + 1
        self.batches: list[int] = []

    def done(self, path: Path) -> bool:
        return path.name in self.finished

    def read(self, path: Path) -> int:
        if path.name in self.bad_read:
            raise BadInputError("cannot decode", path)
        return int(path.name)

    def compute_batch(self, items):
        assert items, "a batch of nothing reached the model"
        self.batches.append(len(items))
        return [
            BadInputError("model refused", path) if path.name in self.bad_compute else value * self._model
            for path, value in items
        ]

    def write(self, path: Path, outcome: int) -> dict:
        if path.name in self.full_disk:
            raise OSError(errno.ENOSPC, "No space left on device", str(path) + ".out")
        self.written.append(path.name)
        return {"doubled": outcome}

    def summary(self) -> dict:
        return {"unreadable": sorted(self.bad_read)}


def paths(*names: int) -> list[Path]:
    return [Path(str(name)) for name in names]


def test_results_come_in_input_order_with_each_status_and_the_summary(capsys):
    job = Doubling(finished={"2"}, bad_read={"3"}, bad_compute={"4"}, full_disk={"5"})
    report = run_job(job, paths(1, 2, 3, 4, 5, 6))
    assert [r.status for r in report.results] == ["ok", "skipped", "failed", "failed", "failed", "ok"]
    assert [r.data.get("doubled") for r in report.results] == [2, None, None, None, None, 12]
    assert report.results[2].error == "3: cannot decode"
    assert report.results[3].error == "4: model refused"
    assert report.results[4].error == "5: No space left on device (5.out)"
    assert report.results[1].reason == "outputs exist (use --overwrite)"
    assert report.summary == {"unreadable": ["3"]} and job.written == ["1", "6"]
    assert capsys.readouterr().err.splitlines() == [
        "error: 3: cannot decode",
        "error: 4: model refused",
        "error: 5: No space left on device (5.out)",
    ]


def test_overwrite_runs_finished_inputs_again():
    report = run_job(Doubling(finished={"1"}), paths(1, 2), overwrite=True)
    assert [r.status for r in report.results] == ["ok", "ok"]


def test_inputs_reach_compute_in_batches_of_the_jobs_size_without_the_unreadable_ones():
    job = Doubling(batch_size=3, bad_read={"2"})
    report = run_job(job, paths(*range(1, 9)))
    assert job.batches == [2, 3, 2] and job.setups == 1
    assert [r.data.get("doubled") for r in report.results] == [2, None, 6, 8, 10, 12, 14, 16]


def test_a_batch_with_no_readable_input_never_reaches_the_model():
    job = Doubling(batch_size=2, bad_read={"1", "2"})
    report = run_job(job, paths(1, 2, 3))
    assert job.batches == [1] and [r.status for r in report.results] == ["failed", "failed", "ok"]


def test_a_job_with_nothing_to_do_never_loads_its_models():
    job = Doubling(finished={"1", "2"})
    report = run_job(job, paths(1, 2))
    assert report.counts() == {"ok": 0, "skipped": 2, "failed": 0} and not hasattr(job, "setups")


class Reversed:
    """An executor that hands outcomes back last first, as a pool of workers may."""

    def outcomes(self, job, todo):
        return reversed(list(LocalExecutor().outcomes(job, todo)))


def test_outcomes_in_any_order_are_reported_in_input_order():
    report = run_job(Doubling(), paths(5, 6, 7), executor=Reversed())
    assert [(r.input, r.data["doubled"]) for r in report.results] == [("5", 10), ("6", 12), ("7", 14)]


class Forgetful:
    def outcomes(self, job, todo):
        return iter(list(LocalExecutor().outcomes(job, todo))[1:])


def test_an_executor_that_loses_an_input_is_a_bug_not_a_silent_gap():
    with pytest.raises(RuntimeError, match="no outcome for 1"):
        run_job(Doubling(), paths(1, 2), executor=Forgetful())


def test_a_pickled_job_keeps_its_settings_and_drops_its_models():
    job = Doubling(bad_read={"9"})
    job.setup()
    copy = pickle.loads(pickle.dumps(job))
    assert copy.bad_read == {"9"} and not hasattr(copy, "_model")


def test_json_report_has_one_shape_for_every_command():
    report = Report("depth", [Result.ok("a.png", {"mean": 1.5}), Result.skipped("b.png")], {"model": "RN50"})
    assert report.as_json() == {
        "command": "depth",
        "model": "RN50",
        "counts": {"ok": 1, "skipped": 1, "failed": 0},
        "results": [
            {"input": "a.png", "status": "ok", "mean": 1.5},
            {"input": "b.png", "status": "skipped", "reason": "outputs exist (use --overwrite)"},
        ],
    }


def test_failures_exit_2_for_a_lone_input_and_4_for_part_of_a_batch():
    lone = Report("x", [Result("a", "failed", error="a: broken")])
    with pytest.raises(BadInputError) as raised:
        lone.raise_for_failures()
    assert raised.value.exit_code == 2 and raised.value.already_reported
    batch = Report("x", [Result("a", "failed", error="a: broken"), Result.ok("b", {})])
    with pytest.raises(PartialFailure) as partial:
        batch.raise_for_failures()
    assert partial.value.exit_code == 4
    Report("x", [Result.ok("b", {}), Result.skipped("c")]).raise_for_failures()


@dataclass
class Reading(Job):
    """Records what it reads; a multi-line error for one input, a full disk while computing another."""

    read_names: list[str] = field(default_factory=list)
    read_workers: int = 2
    name = "reading"

    def done(self, path: Path) -> bool:
        return path.name == "finished"

    def read(self, path: Path) -> str:
        self.read_names.append(path.name)
        if path.name == "noisy.mp4":
            raise BadInputError("cannot decode (libav said:\n  frame 3 corrupt\n  frame 4 corrupt)", path)
        return path.name

    def compute(self, path: Path, value: str) -> dict:
        if value == "full":
            raise OSError(errno.ENOSPC, "No space left on device", "/out/full_depth.png")
        return {"name": value}


def test_finished_inputs_are_never_read_and_failures_are_one_line_on_stderr(capsys):
    job = Reading()
    report = run_job(job, [Path(name) for name in ("a", "finished", "noisy.mp4", "full", "b")])
    assert [r.status for r in report.results] == ["ok", "skipped", "failed", "failed", "ok"]
    assert sorted(job.read_names) == ["a", "b", "full", "noisy.mp4"]
    assert report.results[2].error.count("\n") == 2  # the report keeps the whole message
    assert report.results[3].error == "full: No space left on device (/out/full_depth.png)"
    assert capsys.readouterr().err.splitlines() == [
        "error: noisy.mp4: cannot decode (libav said:",
        "error: full: No space left on device (/out/full_depth.png)",
    ]


@dataclass
class SlowWriter(Job):
    """Writes take time and record the thread that wrote them; one input's write fails."""

    failing: str = ""
    write_workers: int = 3
    written: list[tuple[str, str]] = field(default_factory=list)
    name = "slow-writer"

    def compute(self, path: Path, value: Path) -> str:
        return path.name

    def write(self, path: Path, outcome: str) -> dict:
        import threading
        import time

        time.sleep(0.02)
        if outcome == self.failing:
            raise OSError(errno.EIO, "Input/output error", f"/out/{outcome}")
        self.written.append((outcome, threading.current_thread().name))
        return {"name": outcome}


def test_writes_on_driver_threads_keep_input_order_and_fail_alone():
    job = SlowWriter(failing="3")
    report = run_job(job, paths(*range(1, 9)))
    assert [r.data.get("name") for r in report.results] == ["1", "2", None, "4", "5", "6", "7", "8"]
    assert report.results[2].error == "3: Input/output error (/out/3)"
    assert sorted(name for name, _ in job.written) == ["1", "2", "4", "5", "6", "7", "8"]  # each exactly once
    assert len({thread for _, thread in job.written}) > 1


class Interrupted:
    """An executor that is interrupted (Ctrl-C) after handing over three outcomes."""

    def outcomes(self, job, todo):
        for number, (position, path) in enumerate(todo):
            if number == 3:
                raise KeyboardInterrupt
            yield position, path.name


def test_an_interrupted_run_lets_the_writes_under_way_finish():
    job = SlowWriter()
    with pytest.raises(KeyboardInterrupt):
        run_job(job, paths(1, 2, 3, 4, 5), executor=Interrupted())
    assert sorted(name for name, _ in job.written) == ["1", "2", "3"]


def test_a_job_that_defines_no_computation_is_a_type_error_naming_it():
    class Empty(Job):
        pass

    with pytest.raises(TypeError, match="^Empty defines neither compute nor compute_batch$"):
        Empty().compute_batch([(Path("a"), 1)])
