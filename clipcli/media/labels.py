"""Label sets: the one way every command reads `--labels` (and vqa's `--answers`).

A value is, in this order:
- a built-in set's name, in any case (`esc50`, `Kinetics400`);
- an existing file: UTF-8 with or without a BOM, one label per line, blank lines
  and lines starting with '#' skipped; a file whose first line is `id,name` is an
  official ActionCLIP-style CSV and gives the names in its second column;
- a comma-separated list (`"dog, cat"`).
Labels are stripped and keep their case. A label given twice is refused rather
than dropped: two copies of one class would split its probability between them.
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import NamedTuple

from clipcli.errors import BadInputError

CSV_HEADER = "id,name"
LIST_SOURCE = "list"


class Labels(NamedTuple):
    """Where labels came from (a built-in set's name, the file, or "list") and the labels in order."""

    source: str
    names: list[str]


@functools.cache
def packaged_lines(filename: str) -> tuple[str, ...]:
    """The non-empty lines of a file shipped in `clipcli.data`, stripped."""
    text = resources.files("clipcli.data").joinpath(filename).read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def read_lines(path: str | Path, what: str = "labels") -> list[str]:
    """The stripped lines of a UTF-8 text file (BOM dropped), without blank lines and '#' comments."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise BadInputError("no such file", path) from None
    except (OSError, UnicodeDecodeError) as err:
        raise BadInputError(f"cannot read the {what} ({err})", path) from None
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        raise BadInputError(f"no {what} in the file (one per line)", path)
    return lines


def read_label_file(path: str | Path, what: str = "labels") -> list[str]:
    """A label file's labels: one per line, or the names of an `id,name` CSV."""
    lines = read_lines(path, what)
    if lines[0].replace(" ", "").lower() != CSV_HEADER:
        return lines
    rows = [line.split(",", 1) for line in lines[1:]]
    if any(len(row) != 2 or not row[1].strip() for row in rows):
        raise BadInputError(f"an {CSV_HEADER} CSV needs an id and a name on every line", path)
    return [name.strip() for _, name in rows]


def read_labels(
    spec: str,
    builtin: Mapping[str, Callable[[], Sequence[str]]],
    *,
    option: str = "--labels",
    minimum: int = 2,
) -> Labels:
    """`spec` read by the rules above; `builtin` maps each set's lower-case name to its loader.

    With `minimum=1` a single bare word is one label (for independent per-label scores).
    """
    labels = _resolve(spec, builtin, option, minimum)
    what = option.lstrip("-")
    duplicates = sorted(name for name, count in Counter(labels.names).items() if count > 1)
    if duplicates:
        raise BadInputError(f"{option} {spec!r}: duplicate {what}: {', '.join(duplicates)}")
    if len(labels.names) < minimum:
        raise BadInputError(f"{option} {spec!r}: need at least {minimum} {what}, got {len(labels.names)}")
    return labels


def _is_file(path: Path) -> bool:
    """False for what cannot be a file name at all (a long comma list is over the OS's name limit)."""
    try:
        return path.is_file()
    except OSError:
        return False


def _resolve(spec: str, builtin: Mapping[str, Callable[[], Sequence[str]]], option: str, minimum: int) -> Labels:
    name = spec.strip().lower()
    if name in builtin:
        return Labels(name, list(builtin[name]()))
    path = Path(spec).expanduser()
    if _is_file(path):
        return Labels(str(path), read_label_file(path, option.lstrip("-")))
    if "," in spec:
        return Labels(LIST_SOURCE, [part.strip() for part in spec.split(",") if part.strip()])
    if path.suffix or os.sep in spec or "/" in spec:
        raise BadInputError(f"no such {option.lstrip('-')} file", path)
    if minimum <= 1 and spec.strip():
        return Labels(LIST_SOURCE, [spec.strip()])
    raise BadInputError(
        f"{option} {spec!r}: not a built-in set ({', '.join(builtin)}), an existing file, nor a comma-separated list"
    )
