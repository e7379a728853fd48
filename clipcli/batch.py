"""Running one function over many inputs: progress, skipping, failures, exit codes.

DESIGN.md: one bad input is reported and skipped, the rest complete, and the
command exits 4; a single bad input exits 2 with its one-line error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from clipcli import ui
from clipcli.errors import BadInputError, PartialFailure


def run_batch(
    inputs: Sequence[Path],
    process: Callable[[Path], dict],
    *,
    description: str,
    done: Callable[[Path], bool] | None = None,
) -> list[dict]:
    """`process(path)` for each input, collecting one result dict per input.

    `done(path)` true means the outputs already exist: the input is skipped.
    A `BadInputError` marks that input failed and the batch goes on.
    """
    results = []
    with ui.progress() as bar:
        task = bar.add_task(description, total=len(inputs))
        for path in inputs:
            if done is not None and done(path):
                results.append({"input": str(path), "status": "skipped", "reason": "outputs exist (use --overwrite)"})
            else:
                try:
                    results.append({"input": str(path), "status": "ok", **process(path)})
                except BadInputError as err:
                    ui.stderr.print(f"error: {err}", markup=False, highlight=False, soft_wrap=True)
                    results.append({"input": str(path), "status": "failed", "error": str(err)})
            bar.advance(task)
    return results


def raise_for_failures(results: list[dict]) -> None:
    """Exit 2 for a lone bad input, 4 when some of a batch failed."""
    failed = [r for r in results if r["status"] == "failed"]
    if not failed:
        return
    if len(results) == 1:
        error = BadInputError(failed[0]["error"])
        error.already_reported = True
        raise error
    raise PartialFailure(len(failed), len(results))


def expand_inputs(items: Sequence[str | Path], extensions: Sequence[str]) -> list[Path]:
    """Files, folders (searched recursively for `extensions`) and globs -> sorted unique paths.

    A named file is kept whatever its extension, so its reader can say what is
    wrong with it; a name that matches nothing is a usage error.
    """
    found: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
        elif path.exists() or path.is_symlink():
            found.append(path)
        elif any(ch in str(item) for ch in "*?["):
            matches = sorted(Path().glob(str(item))) if not path.is_absolute() else sorted(_glob_absolute(path))
            if not matches:
                raise BadInputError(f"no files match {item}")
            found += [m for m in matches if m.is_file()]
        else:
            raise BadInputError("no such file or folder", path)
    unique = list(dict.fromkeys(found))
    if not unique:
        raise BadInputError(f"no input files (looked for {', '.join(extensions)})")
    return unique


def _glob_absolute(pattern: Path) -> list[Path]:
    anchor = Path(pattern.anchor)
    return list(anchor.glob(str(pattern.relative_to(anchor))))
