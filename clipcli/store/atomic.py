"""Atomic file writes: a temp file in the destination folder, then `os.replace`.

A reader never sees a half-written output, and a failure (or Ctrl-C) leaves
nothing behind but what was there before. The data reaches the disk before
the rename and the rename reaches it after, so a power cut leaves the old file
or the new one, never an empty one. Outputs get the permissions the umask
allows, like those of any other program.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO

_NAME_MAX = 255  # bytes in one file name, on every common file system


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success sync it and rename it onto `path`.

    For writers that want a file name rather than a handle (np.save,
    torch.save). The temp name keeps the suffix, so libraries that pick a
    format from the extension still do, and the name fits wherever `path` does.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_beside(path)
    try:
        yield tmp
        _sync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a temp file for writing; it replaces `path` only if the block succeeds."""
    if "w" not in mode:
        raise ValueError(f"atomic_write needs a write mode, got {mode!r}")
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding) as handle:
        yield handle


def _create_beside(path: Path) -> Path:
    """A new empty file `.STEM.RANDOM.tmpSUFFIX` beside `path`, its permissions set by the umask.

    It is created with mode 0o666 (tempfile.mkstemp makes 0o600 files whatever
    the umask), and STEM is cut short where the name would not fit in a folder.
    """
    tail = f".{secrets.token_hex(6)}.tmp{path.suffix}"
    room = _NAME_MAX - len(os.fsencode(tail)) - 1
    stem = path.stem
    while len(os.fsencode(stem)) > room:  # whole characters, so the name stays valid UTF-8
        stem = stem[:-1]
    tmp = path.with_name(f".{stem}{tail}")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    return tmp


def _sync(path: Path, flags: int = os.O_RDONLY) -> None:
    """Flush a file's data (or a folder's entries) to the disk; writers by name only close their handles."""
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _sync_folder(folder: Path) -> None:
    """Flush the rename to the disk where folders can be opened; best effort, as the rename is done."""
    if hasattr(os, "O_DIRECTORY"):
        with contextlib.suppress(OSError):
            _sync(folder, os.O_RDONLY | os.O_DIRECTORY)
