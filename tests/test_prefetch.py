"""read_ahead: input order, errors in their place, bounded reads in flight, early close."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from clipcli.batch import run_batch
from clipcli.errors import BadInputError
from clipcli.prefetch import read_ahead


def slow_square(number: int) -> int:
    time.sleep(0.002 * (7 - number % 7))  # later items often finish first
    if number == 5:
        raise BadInputError("five is bad")
    return number * number


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_results_come_back_in_input_order_with_errors_in_their_place(workers):
    results = list(read_ahead(range(12), slow_square, workers=workers, ahead=4))
    assert [item for item, _ in results] == list(range(12))
    assert [value for _, value in results if not isinstance(value, BaseException)] == [
        n * n for n in range(12) if n != 5
    ]
    assert str(results[5][1]) == "five is bad"


def test_other_exceptions_propagate_to_the_consumer():
    def broken(number: int) -> int:
        if number == 2:
            raise ZeroDivisionError("a bug, not a bad input")
        return number

    stream = read_ahead(range(5), broken, workers=2)
    assert [next(stream)[1], next(stream)[1]] == [0, 1]
    with pytest.raises(ZeroDivisionError, match="a bug"):
        next(stream)


def test_no_more_than_ahead_reads_run_before_their_results_are_taken():
    started: list[int] = []
    lock = threading.Lock()

    def record(number: int) -> int:
        with lock:
            started.append(number)
        return number

    stream = read_ahead(range(100), record, workers=4, ahead=3)
    next(stream)
    time.sleep(0.05)
    assert len(started) <= 4  # the item taken and the 3 read ahead of it
    stream.close()


def test_closing_early_leaves_the_rest_unread():
    started: list[int] = []

    def record(number: int) -> int:
        started.append(number)
        time.sleep(0.01)
        return number

    stream = read_ahead(range(50), record, workers=1, ahead=2)
    next(stream)
    stream.close()
    time.sleep(0.05)
    assert len(started) <= 3


def test_run_batch_reads_ahead_skips_finished_inputs_and_records_bad_reads(tmp_path):
    paths = [Path(f"in{n}") for n in range(6)]
    read: list[str] = []

    def load(path: Path) -> int:
        read.append(path.name)
        if path.name == "in3":
            raise BadInputError("unreadable", path)
        return int(path.name[2:])

    rows = run_batch(
        paths,
        lambda path, number: {"square": number * number},
        description="test",
        done=lambda path: path.name == "in1",
        read=load,
        workers=2,
    )
    assert [row["status"] for row in rows] == ["ok", "skipped", "ok", "failed", "ok", "ok"]
    assert [row.get("square") for row in rows] == [0, None, 4, None, 16, 25]
    assert rows[3]["error"] == "in3: unreadable"
    assert sorted(read) == ["in0", "in2", "in3", "in4", "in5"]  # a finished input is not even read


def test_a_file_system_failure_fails_its_input_with_one_line_and_the_batch_goes_on(capsys):
    def process(path: Path) -> dict:
        if path.name == "b":
            raise OSError(28, "No space left on device", "/out/b_depth.png")
        return {"done": True}

    rows = run_batch([Path("a"), Path("b"), Path("c")], process, description="test")
    assert [row["status"] for row in rows] == ["ok", "failed", "ok"]
    assert rows[1]["error"] == "b: No space left on device (/out/b_depth.png)"


def test_a_multi_line_failure_is_said_in_one_line_on_stderr(capsys):
    def process(path: Path) -> dict:
        raise BadInputError("cannot decode (libav said:\n  frame 3 corrupt\n  frame 4 corrupt)", path)

    rows = run_batch([Path("a.mp4")], process, description="test")
    assert capsys.readouterr().err.strip().splitlines() == ["error: a.mp4: cannot decode (libav said:"]
    assert rows[0]["error"].count("\n") == 2  # the row keeps the whole message
