"""The plumbing every subcommand shares, written once.

`command(app)` adds the common options (`--device`, `--quiet`, `--json`,
`--debug`) after a subcommand's own, sets up output, and turns errors into one
line and an exit code (docs/architecture.md): a traceback only with `--debug`.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
import traceback
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.console import RenderableType

from clipcli import ui
from clipcli.batch import sigterm_as_interrupt
from clipcli.errors import EXIT_BUG, ClipcliError, ParameterError


@dataclass(frozen=True)
class Common:
    """The common options, handed to each command as `common`."""

    device: str = "auto"
    quiet: bool = False
    json: bool = False
    debug: bool = False


_COMMON_PARAMETERS = [
    inspect.Parameter(
        "device",
        inspect.Parameter.KEYWORD_ONLY,
        default="auto",
        annotation=Annotated[
            str, typer.Option("--device", help="auto (CUDA when available), cpu, cuda or cuda:N.", show_default=True)
        ],
    ),
    inspect.Parameter(
        "quiet",
        inspect.Parameter.KEYWORD_ONLY,
        default=False,
        annotation=Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or notices on stderr.")],
    ),
    inspect.Parameter(
        "json_output",
        inspect.Parameter.KEYWORD_ONLY,
        default=False,
        annotation=Annotated[bool, typer.Option("--json", help="Print one machine-readable JSON result on stdout.")],
    ),
    inspect.Parameter(
        "debug",
        inspect.Parameter.KEYWORD_ONLY,
        default=False,
        annotation=Annotated[bool, typer.Option("--debug", help="Show a full traceback on errors.")],
    ),
]


def command(app: typer.Typer, name: str | None = None, *, flags: dict[str, str] | None = None, **kwargs) -> Callable:
    """Register `func(..., common: Common)` as a subcommand with the common options added.

    A `ParameterError` names the flag of its parameter: `--` and the name with
    dashes, or `flags[parameter]` where the command calls it otherwise.
    """

    def decorate(func: Callable) -> Callable:
        signature = inspect.signature(func, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "common"]

        @functools.wraps(func)
        def wrapper(*args, device: str, quiet: bool, json_output: bool, debug: bool, **own_kwargs):
            ui.set_quiet(quiet)
            ui.write_file_names_as_stored()
            try:
                from clipcli.models.device import check_device_spec

                common = Common(device=check_device_spec(device), quiet=quiet, json=json_output, debug=debug)
                with sigterm_as_interrupt(), warnings.catch_warnings():  # `kill` cleans up as Ctrl-C does
                    warnings.showwarning = ui.show_warning
                    return func(*args, common=common, **own_kwargs)
            except ParameterError as err:
                fail(err.for_flag(flags), err.exit_code, debug)
            except ClipcliError as err:
                if err.already_reported:
                    raise typer.Exit(err.exit_code) from None
                fail(str(err), err.exit_code, debug)
            except KeyboardInterrupt:
                fail("interrupted", 130, debug)
            except typer.Exit:
                raise
            except Exception as err:  # a bug: say so in one line, the traceback on request
                fail(
                    f"internal error: {type(err).__name__}: {err} (rerun with --debug for a traceback)", EXIT_BUG, debug
                )

        exposed = signature.replace(parameters=own + _COMMON_PARAMETERS)
        wrapper.__signature__ = exposed  # type: ignore[attr-defined]  # read by inspect.signature; typeshed omits it
        wrapper.__annotations__ = {p.name: p.annotation for p in exposed.parameters.values()}
        app.command(name, **kwargs)(wrapper)
        return func

    return decorate


def fail(message: str, code: int, debug: bool = False) -> None:
    """Print `error: message` on stderr and exit with `code`."""
    if debug:
        traceback.print_exc()
    ui.error(message)
    raise typer.Exit(code)


def show(common: Common, result: Any, render: Callable[[], Iterable[RenderableType]]) -> None:
    """Print a command's result: `result` as JSON with `--json`, else what `render` builds for people.

    `render` runs only without `--json`. Its strings print as written (they hold
    file names, brackets and all); its tables carry their own markup.
    """
    if common.json:
        print_json(result.as_json() if hasattr(result, "as_json") else result)
        return
    for item in render():
        if isinstance(item, str):
            ui.stdout.print(item, markup=False)
        else:
            ui.stdout.print(item)


def print_json(result: Any) -> None:
    """One JSON document on stdout, for scripts."""
    sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
    sys.stdout.flush()
