"""What every batch command shares around its run: inputs, output names, SIGTERM.

The run itself is `clipcli.runner`'s. Every command names its output files one way (`OutputNames`): after the
input's file name without its last extension, under `--out`. Inputs that
would write one file are refused before any work, and no command reads back
its own outputs or the temp files of an interrupted write.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import signal
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from clipcli import ui
from clipcli.errors import BadInputError


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises KeyboardInterrupt, so `finally` clauses save work as on Ctrl-C.

    Only the main thread may set signal handlers; elsewhere the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------- output files

TEMP_NAME = ".*.tmp*"  # clipcli.store.atomic's temp files: hidden, ".tmp" before the suffix


@dataclass(frozen=True)
class OutputNames:
    """The files a command writes for each input: `out / template.format(stem)` per template.

    The stem is the input's name without its last extension (`photo.v2.jpg`
    gives `photo.v2`); it is joined by formatting, never by `with_suffix`,
    which would cut at the stem's own dots.
    """

    out: Path
    templates: tuple[str, ...]

    def for_stem(self, stem: str) -> list[Path]:
        return [self.out / template.format(stem) for template in self.templates]

    def for_input(self, source: Path) -> list[Path]:
        return self.for_stem(source.stem)

    def is_output(self, path: Path) -> bool:
        """Whether `path` lies in `out` under a name this command gives its outputs."""
        for template in map(Path, self.templates):
            if fnmatch.fnmatchcase(path.name, template.name.format("*")):
                folder = os.path.realpath(self.out / template.parent)
                if os.path.realpath(path.parent) == folder:
                    return True
        return False

    def check(self, inputs: Sequence[Path]) -> None:
        """Before any work: `out` must be usable as a folder and no two inputs may write one file.

        Names are compared ignoring letter case, as case-insensitive file systems do.
        """
        check_output_folder(self.out)
        claimed: dict[str, Path] = {}
        for source in inputs:
            for output in self.for_input(source):
                first = claimed.setdefault(str(output).casefold(), source)
                if first != source and os.path.realpath(first) != os.path.realpath(source):
                    raise BadInputError(
                        f"{first} and {source} would both write {output.name}; rename one or run them separately"
                    )


def check_output_folder(out: Path) -> None:
    """`--out` must be a folder we can write, or not exist yet: bad usage before any work, not a late crash."""
    existing = next((folder for folder in (out, *out.parents) if folder.exists() or folder.is_symlink()), Path("."))
    if not existing.is_dir():
        raise BadInputError("is not a folder (--out)", existing)
    try:  # where --out does not exist yet, the folder it would be made in must take files
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise BadInputError(f"cannot write here (--out): {err.strerror or err}", existing) from None


def expand_inputs(
    items: Sequence[str | Path], extensions: Sequence[str], outputs: OutputNames | None = None
) -> list[Path]:
    """Files, folders (searched recursively for `extensions`) and globs -> sorted unique paths.

    A named file is kept whatever its extension, so its reader can say what is
    wrong with it; a name that matches nothing is a usage error. A file named
    twice is kept once. Temp files of interrupted writes and the command's own
    `outputs` are left out, so a rerun with `--out` inside an input folder
    does not read its results back in.
    """
    found: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
        elif path.exists() and not path.is_file():  # reading a FIFO would wait for a writer forever
            raise BadInputError("not a regular file (pipes, sockets and devices are not read)", path)
        elif path.exists() or path.is_symlink():
            found.append(path)
        elif any(ch in str(item) for ch in "*?["):
            matches = sorted(Path().glob(str(item))) if not path.is_absolute() else sorted(_glob_absolute(path))
            if not matches:
                raise BadInputError(f"no files match {item}")
            found += [m for m in matches if m.is_file()]
        else:
            raise BadInputError("no such file or folder", path)
    by_file: dict[str, Path] = {}
    for path in found:
        by_file.setdefault(os.path.realpath(path), path)
    if not by_file:
        raise BadInputError(f"no input files (looked for {', '.join(extensions)})")
    return _without_generated(list(by_file.values()), outputs)


def _without_generated(paths: list[Path], outputs: OutputNames | None) -> list[Path]:
    """`paths` less temp files and the command's own outputs (said on stderr; an error if none is left)."""
    kept, own, temp = [], [], []
    for path in paths:
        if fnmatch.fnmatchcase(path.name, TEMP_NAME):
            temp.append(path)
        elif outputs is not None and outputs.is_output(path):
            own.append(path)
        else:
            kept.append(path)
    if not kept:
        if own:
            raise BadInputError("is this command's own output in --out; use another --out to read it", own[0])
        raise BadInputError("is the temp file of an interrupted write", temp[0])
    if own:
        assert outputs is not None  # only `outputs` marks a file as the command's own
        ui.notice(f"left out {len(own)} file(s) that this command wrote in {outputs.out}")
    return kept


def _glob_absolute(pattern: Path) -> list[Path]:
    anchor = Path(pattern.anchor)
    return list(anchor.glob(str(pattern.relative_to(anchor))))
