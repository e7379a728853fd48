"""The one way a pipeline runs over many inputs: a `Job`, an executor, a `Report`.

A pipeline describes its work as a `Job`: how to set up its models (once per
worker), how to read one input (on a thread, ahead of the model), how to
compute a batch of read inputs into outcomes (no file writes), and how the
driver writes one outcome's outputs and says what it made. `run_job` does the
rest for every command alike: skips inputs whose outputs exist, shows one
progress bar, keeps going past bad inputs and returns a `Report` with one
`Result` per input, in input order. The executor is the seam for scale-out:
`LocalExecutor` runs the job in this process; `clipcli.cluster` runs the same
job on Ray actors (docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Literal, Protocol

from clipcli import ui
from clipcli.errors import BadInputError, PartialFailure
from clipcli.prefetch import read_ahead

Status = Literal["ok", "skipped", "failed"]
SKIPPED_EXISTING = "outputs exist (use --overwrite)"


@dataclass
class Result:
    """What became of one input: ok (with what it made), skipped (why) or failed (its one-line error)."""

    input: str
    status: Status
    data: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    reason: str | None = None

    @classmethod
    def ok(cls, path: Path | str, data: dict[str, Any]) -> Result:
        return cls(str(path), "ok", data)

    @classmethod
    def skipped(cls, path: Path | str, reason: str = SKIPPED_EXISTING) -> Result:
        return cls(str(path), "skipped", reason=reason)

    @classmethod
    def failed(cls, path: Path | str, error: BaseException | str) -> Result:
        """A failed input; its error is said on stderr as it happens, in one line."""
        ui.error(str(error))
        return cls(str(path), "failed", error=str(error))

    def row(self) -> dict[str, Any]:
        """The result as one JSON object: input, status, then the error, the reason or the data."""
        row: dict[str, Any] = {"input": self.input, "status": self.status}
        if self.error is not None:
            row["error"] = self.error
        if self.reason is not None:
            row["reason"] = self.reason
        return row | self.data


@dataclass
class Report:
    """A command's whole answer: one result per input, in input order, and facts about the run."""

    command: str
    results: list[Result]
    summary: dict[str, Any] = field(default_factory=dict)

    def with_status(self, status: Status) -> list[Result]:
        return [result for result in self.results if result.status == status]

    @property
    def ok(self) -> list[Result]:
        return self.with_status("ok")

    @property
    def failed(self) -> list[Result]:
        return self.with_status("failed")

    def counts(self) -> dict[str, int]:
        return {status: len(self.with_status(status)) for status in ("ok", "skipped", "failed")}

    def as_json(self) -> dict[str, Any]:
        """`{"command", **summary, "counts", "results": [row, ...]}`: the one `--json` shape of every command."""
        return {"command": self.command, **self.summary, "counts": self.counts(), "results": self.rows()}

    def rows(self) -> list[dict[str, Any]]:
        return [result.row() for result in self.results]

    def raise_for_failures(self) -> None:
        """Exit 2 for a lone bad input (already reported), 4 when some of a batch failed."""
        failed = self.failed
        if not failed:
            return
        if len(self.results) == 1:
            error = BadInputError(failed[0].error or "failed")
            error.already_reported = True
            raise error
        raise PartialFailure(len(failed), len(self.results))


class Job:
    """One pipeline's work over many inputs, in the four steps an executor runs.

    Subclasses are plain dataclasses of settings, so a job pickles to a Ray
    actor; `setup` keeps its models in attributes named with a leading
    underscore, which are never pickled.
    `read` and `compute` run where the executor puts them (a thread, an
    actor); `done` and `write` always run in the driver, which alone writes,
    and so must not need the models.
    """

    name: str = "batch"
    batch_size: int = 1
    read_workers: int = 0
    write_workers: int = 1  # above 1: `write` runs on that many driver threads (it must be safe to)
    _show_progress: Callable[[str], None] | None = None  # set by `run_job` while its bar is up

    def __getstate__(self) -> dict[str, Any]:
        return {name: value for name, value in self.__dict__.items() if not name.startswith("_")}

    def setup(self) -> None:
        """Load models; once per worker, before the first `compute`."""

    def done(self, path: Path) -> bool:
        """True when the input's outputs already exist, so a rerun skips it (resume)."""
        return False

    def read(self, path: Path) -> Any:
        """Decode one input (raise `BadInputError` for a bad one); by default the path itself."""
        return path

    def compute(self, path: Path, value: Any) -> Any:
        """The model's work on one read input: an outcome for `write` (arrays, bytes, numbers).

        A job defines this or `compute_batch`, whose default calls it.
        """
        raise TypeError(f"{type(self).__name__} defines neither compute nor compute_batch")

    def compute_batch(self, items: Sequence[tuple[Path, Any]]) -> list[Any]:
        """Outcomes of `items` in order, a `BadInputError` in the place of a bad one.

        Jobs whose model takes a batch override this; the default computes one at a time.
        """
        outcomes: list[Any] = []
        for path, value in items:
            try:
                outcomes.append(self.compute(path, value))
            except BadInputError as err:
                outcomes.append(err)
            except OSError as err:
                outcomes.append(BadInputError(os_error_message(path, err)))
        return outcomes

    def write(self, path: Path, outcome: Any) -> dict[str, Any]:
        """Write the outcome's files (atomically) and return the result's data; by default the outcome."""
        return dict(outcome)

    def summary(self) -> dict[str, Any]:
        """Facts about the run for the report (settings, model); computed after the last input."""
        return {}

    def progress(self, text: str) -> None:
        """Say how the input being computed is going (a long optimisation's step) on the progress bar's line.

        `run_job` shows it beside its one bar; where no bar reaches (a Ray actor) it is dropped.
        """
        if self._show_progress is not None:
            self._show_progress(text)


class Executor(Protocol):
    def outcomes(self, job: Job, todo: Sequence[tuple[int, Path]]) -> Iterator[tuple[int, Any]]:
        """`(position, outcome or BadInputError)` for each of `todo`, in any order, as they finish."""
        ...


@dataclass
class LocalExecutor:
    """Runs a job in this process: reads ahead on threads, computes in batches on the calling thread."""

    def outcomes(self, job: Job, todo: Sequence[tuple[int, Path]]) -> Iterator[tuple[int, Any]]:
        if todo:
            job.setup()
            yield from computed(job, todo)


def computed(job: Job, todo: Sequence[tuple[int, Path]]) -> Iterator[tuple[int, Any]]:
    """`(position, outcome or BadInputError)` in order: `todo` read ahead on threads, computed in batches.

    The job must be set up; every executor computes through here, in whatever process holds the models.
    """
    values = read_ahead(todo, lambda entry: job.read(entry[1]), workers=job.read_workers)
    with contextlib.closing(values):
        for batch in _batches(values, max(1, job.batch_size)):
            readable = [(entry[1], value) for entry, value in batch if not isinstance(value, BaseException)]
            outcomes = iter(job.compute_batch(readable) if readable else [])
            for entry, value in batch:
                yield entry[0], value if isinstance(value, BaseException) else next(outcomes)


def _batches(items: Iterator, size: int) -> Iterator[list]:
    while batch := list(islice(items, size)):
        yield batch


def run_job(job: Job, inputs: Sequence[Path], *, overwrite: bool = False, executor: Executor | None = None) -> Report:
    """Run `job` over `inputs` and report one result per input, in input order.

    Inputs whose outputs exist are skipped unless `overwrite`. A `BadInputError`
    from reading, computing or writing an input, or an `OSError` while writing
    its outputs, fails that input alone; the batch goes on.
    """
    results: list[Result | None] = [
        None if overwrite or not job.done(path) else Result.skipped(path) for path in inputs
    ]
    todo = [(position, path) for position, path in enumerate(inputs) if results[position] is None]
    stream = (executor or LocalExecutor()).outcomes(job, todo)
    writers = ThreadPoolExecutor(job.write_workers, "clipcli-write") if job.write_workers > 1 else None
    writing: deque[tuple[int, Future[Result]]] = deque()
    try:
        with ui.progress() as bar:
            task = bar.add_task(job.name, total=len(inputs), completed=len(inputs) - len(todo))
            job._show_progress = lambda text: bar.update(task, description=f"{job.name} {text}")

            def settled(position: int, result: Result) -> None:
                results[position] = result
                bar.update(task, advance=1, description=job.name)

            for position, outcome in stream:
                if writers is None:
                    settled(position, _settle(job, inputs[position], outcome))
                    continue
                writing.append((position, writers.submit(_settle, job, inputs[position], outcome)))
                while writing and (writing[0][1].done() or len(writing) > 2 * job.write_workers):
                    settled(writing[0][0], writing.popleft()[1].result())
            while writing:
                settled(writing[0][0], writing.popleft()[1].result())
    finally:  # an interrupted run lets the writes under way finish (they are atomic) and stops the executor
        job._show_progress = None
        if writers is not None:
            writers.shutdown(wait=True, cancel_futures=True)
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    missing = [inputs[position] for position, result in enumerate(results) if result is None]
    if missing:
        raise RuntimeError(f"the executor returned no outcome for {missing[0]}")
    return Report(job.name, [result for result in results if result is not None], job.summary())


def _settle(job: Job, path: Path, outcome: Any) -> Result:
    """The result of one outcome: written by the driver, or the input's failure."""
    if isinstance(outcome, BaseException):
        return Result.failed(path, outcome)
    try:
        return Result.ok(path, job.write(path, outcome))
    except BadInputError as err:
        return Result.failed(path, err)
    except OSError as err:
        return Result.failed(path, os_error_message(path, err))


def os_error_message(path: Path, err: OSError) -> str:
    """A file-system failure while processing `path` (a full disk, a folder gone): its input and what failed."""
    where = f" ({os.fsdecode(err.filename)})" if isinstance(err.filename, (str, bytes)) else ""
    return f"{path}: {err.strerror or type(err).__name__}{where}"
