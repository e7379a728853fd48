"""Reading inputs ahead on threads while the model works on the ones already read.

Decoders (OpenCV, FFmpeg, libsndfile) release the GIL, so a few threads
decoding the next inputs keep a GPU fed by one Python thread. Every command
that decodes before it computes reads through `read_ahead`: results come back
in input order, at most `ahead` reads are in flight (memory stays bounded),
and a bad input is handed back as its error, in its place, for the batch to
report and go on.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from typing import TypeVar

from clipcli.errors import BadInputError

Item = TypeVar("Item")
Value = TypeVar("Value")


def read_ahead(
    items: Iterable[Item],
    read: Callable[[Item], Value],
    *,
    workers: int,
    ahead: int | None = None,
    errors: tuple[type[BaseException], ...] = (BadInputError,),
) -> Generator[tuple[Item, Value | BaseException], None, None]:
    """`(item, read(item))` in input order, `read` running on `workers` threads up to `ahead` items ahead.

    An exception of a type in `errors` is yielded in place of its value; any
    other propagates. With `workers < 1` each item is read when it is reached.
    Closing the generator early cancels the reads not yet started.
    """
    if workers < 1:
        for item in items:
            yield item, _attempt(read, item, errors)
        return
    ahead = max(1, ahead if ahead is not None else 2 * workers)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clipcli-read")
    upcoming = iter(items)
    pending: deque[tuple[Item, Future]] = deque()
    try:
        while True:
            for item in islice(upcoming, ahead - len(pending)):
                pending.append((item, pool.submit(_attempt, read, item, errors)))
            if not pending:
                return
            item, future = pending.popleft()
            yield item, future.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _attempt(
    read: Callable[[Item], Value], item: Item, errors: tuple[type[BaseException], ...]
) -> Value | BaseException:
    try:
        return read(item)
    except errors as err:
        return err
