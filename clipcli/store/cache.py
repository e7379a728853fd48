"""Files that only save recomputation: embedding caches, index snapshots, approximate indexes.

Losing one must never fail a command. A damaged file (truncated, overwritten,
not what it should hold) is reported once and recomputed; a folder that cannot
be written (read-only, full) only costs recomputing next time.
"""

from __future__ import annotations

import os
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from clipcli import ui
from clipcli.errors import first_line
from clipcli.store.atomic import atomic_path

T = TypeVar("T")
STRAY_TEMP_AGE_S = 600  # a temp file this old was left by a writer that died: no write takes this long
_DAMAGE = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error)


def cache_folder(*parts: str) -> Path:
    """clipcli's cache folder `$XDG_CACHE_HOME/clipcli/<parts>` (`~/.cache` when the variable is unset or empty)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path("~/.cache").expanduser())
    return base.joinpath("clipcli", *parts)


def read_cache(path: Path, read: Callable[[Path], T]) -> T | None:
    """`read(path)`, or None when there is no such file or it is damaged (said once on stderr).

    `read` raises ValueError for contents that are not what the cache holds.
    """
    try:
        return read(path)
    except FileNotFoundError:
        return None
    except _DAMAGE as err:
        ui.notice(f"{path}: cannot use this cache ({type(err).__name__}: {first_line(err)}); computing it again")
        return None


def write_cache(path: Path, write: Callable[[Path], object]) -> None:
    """`write(temp path)`, then the temp file replaces `path`; nothing happens if the folder cannot be written."""
    try:
        with atomic_path(path) as tmp:
            write(tmp)
    except OSError:
        pass


def is_current(path: Path, prefix: str, generation: int) -> bool:
    """Whether `path` is a `PREFIXGEN.*` file of `generation` or a newer one (another process's: keep it)."""
    number = path.name.split(".")[0].removeprefix(prefix)
    return path.name.startswith(prefix) and number.isdigit() and int(number) >= generation


def remove_stale(folder: Path, prefix: str, keep: Callable[[Path], bool]) -> None:
    """Delete the `prefix*` files `keep` rejects and the `.prefix*` temp files of writers that died."""
    for path in folder.glob(f"{prefix}*"):
        if not keep(path):
            path.unlink(missing_ok=True)
    oldest = time.time() - STRAY_TEMP_AGE_S
    for path in folder.glob(f".{prefix}*"):
        try:
            if path.stat().st_mtime < oldest:
                path.unlink()
        except FileNotFoundError:
            pass  # its writer finished (or another cleaner came first)
