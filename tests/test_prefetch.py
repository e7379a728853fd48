"""read_ahead: input order, errors in their place, bounded reads in flight, early close."""

from __future__ import annotations

import threading
import time

import pytest

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
