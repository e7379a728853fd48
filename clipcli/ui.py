"""Terminal output shared by every layer: a stderr console and progress bars.

Results go to stdout (tables or `--json`); everything for the human watching,
progress and notices, goes to stderr and stays silent with `--quiet` or when
stderr is not a terminal.
"""

from __future__ import annotations

import io
import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from clipcli.errors import first_line

stderr = Console(stderr=True, highlight=False, emoji=False)  # file names hold ":smile:" as written
stdout = Console(highlight=False, emoji=False)
_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def write_file_names_as_stored() -> None:
    """Let stdout and stderr print any file name, valid in their encoding or not.

    A name that is not valid UTF-8 reaches Python with surrogate escapes; the
    default "strict" handler would fail the command when it prints the name,
    after the work is done. "surrogateescape" writes the bytes the file system
    holds, as `ls` does. (JSON escapes such characters itself.)
    """
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="surrogateescape")


def notice(message: str) -> None:
    """One line for the human on stderr (suppressed by --quiet)."""
    if not _quiet:
        stderr.print(message, markup=False, soft_wrap=True)


def error(message: str) -> None:
    """`error: message` on stderr, shown even with --quiet (it says why the exit code is not 0).

    Always one line: a library's multi-line message is quoted by its first line.
    """
    stderr.print(f"error: {first_line(message, limit=None)}", markup=False, highlight=False, soft_wrap=True)


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """`warnings.showwarning` as one notice line: no source path or code line from the library that warned."""
    notice(f"warning: {first_line(message, limit=None)}")


def progress(*, transfer: bool = False) -> Progress:
    """A rich progress bar on stderr, disabled when quiet or not on a terminal."""
    columns = [TextColumn("{task.description}", markup=False), BarColumn()]  # descriptions hold file names
    if transfer:
        columns += [DownloadColumn(), TransferSpeedColumn()]
    else:
        columns.append(MofNCompleteColumn())
    columns.append(TimeRemainingColumn())
    return Progress(*columns, console=stderr, disable=_quiet or not stderr.is_terminal, transient=False)
