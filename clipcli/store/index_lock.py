"""The update lock of an index folder: one updating process at a time, readers never wait.

It is an advisory lock (flock, or msvcrt on Windows) on `index.lock` in the
folder, which also records the holder's pid, so a second updater can say whom
it waits for. The operating system releases it when its holder dies.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from clipcli.errors import BadInputError

LOCK_NAME = "index.lock"


@contextlib.contextmanager
def update_lock(
    folder: Path, timeout: float | None = None, on_wait: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Exclusive right to update the index in `folder`, across processes.

    Waits for another holder (forever when `timeout` is None, after
    calling `on_wait` once with a message), then raises a clear error.
    """
    path = folder / LOCK_NAME
    try:
        handle = open(path, "a+")  # noqa: SIM115  held for the duration of the lock
    except OSError as err:
        raise BadInputError(f"cannot lock the index for updating ({err}); search it with --no-update", path) from None
    try:
        start, announced = time.monotonic(), False
        while not _try_lock(handle):
            if timeout is not None and time.monotonic() - start >= timeout:
                raise BadInputError(
                    f"index is being updated by another process{_holder(path)}; wait for it, or use another --index",
                    folder,
                )
            if not announced and on_wait is not None:
                on_wait(f"waiting for another clipcli{_holder(path)} to finish updating {folder}")
                announced = True
            time.sleep(0.1)
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            _unlock(handle)
    finally:
        handle.close()


def _holder(lock_path: Path) -> str:
    try:
        pid = lock_path.read_text().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


if sys.platform != "win32":
    import fcntl

    def _try_lock(handle) -> bool:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(handle) -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

else:
    import msvcrt

    def _try_lock(handle) -> bool:
        handle.seek(0)
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(handle) -> None:
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
