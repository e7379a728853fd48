"""Errors that end a command with a one-line message and a documented exit code.

Exit codes (docs/architecture.md): 0 ok, 1 bug, 2 bad usage or bad input,
3 weights unavailable, 4 some inputs of a batch failed.
"""

from __future__ import annotations

from pathlib import Path

EXIT_BUG = 1
EXIT_BAD_INPUT = 2
EXIT_WEIGHTS = 3
EXIT_PARTIAL = 4


def first_line(error: BaseException | str, limit: int | None = 200) -> str:
    """The first non-empty line of an error's message (cut at `limit` characters), else its type's name.

    Libraries' messages run to tracebacks and hex dumps; a one-line error quotes their first line.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if lines:
        return lines[0][:limit]
    return type(error).__name__ if isinstance(error, BaseException) else "unknown error"


class ClipcliError(Exception):
    """Base class: anything the CLI turns into `error: <message>` and an exit code."""

    exit_code = EXIT_BUG
    already_reported = False  # True when the message was printed where it arose; the CLI then only exits

    def __reduce__(self):
        """Pickle by message and attributes, whatever the constructor takes (errors cross to Ray workers)."""
        return _rebuilt, (type(self), str(self), self.__dict__)


def _rebuilt(cls: type[ClipcliError], message: str, state: dict) -> ClipcliError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class BadInputError(ClipcliError):
    """A user-supplied file or option is unusable (exit 2).

    With `path`, the message is prefixed by the file name so every reader
    reports errors the same way: `photo.jpg: not an image`.
    """

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else Path(path)
        super().__init__(f"{path}: {message}" if path is not None else message)


class ParameterError(BadInputError):
    """A bad argument, named by its Python parameter (`top_k: must be at least 1`).

    Pipelines are a Python API too, so they name their own parameters; the CLI
    says the flag instead (`--top-k must be at least 1`) through `for_flag`.
    """

    def __init__(self, parameter: str, problem: str):
        self.parameter, self.problem = parameter, problem
        super().__init__(f"{parameter}: {problem}")

    def for_flag(self, flags: dict[str, str] | None = None) -> str:
        """The message with the command-line flag in place of the parameter (`--top-k` for `top_k`)."""
        flag = (flags or {}).get(self.parameter) or "--" + self.parameter.replace("_", "-")
        return f"{flag} {self.problem}"


class WeightsUnavailableError(ClipcliError):
    """Model weights cannot be found locally nor downloaded (exit 3)."""

    exit_code = EXIT_WEIGHTS


class PartialFailure(ClipcliError):
    """Some inputs of a batch failed; the rest completed (exit 4)."""

    exit_code = EXIT_PARTIAL

    def __init__(self, failed: int, total: int):
        self.failed, self.total = failed, total
        super().__init__(f"{failed} of {total} inputs failed")
