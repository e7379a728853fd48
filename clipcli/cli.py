"""The `clipcli` command line: parse options, call a pipeline, print, exit.

No tensor code lives here; each subcommand is a thin function over
`clipcli.pipelines`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from clipcli import __version__, ui
from clipcli.cli_support import Common, command, print_json
from clipcli.errors import EXIT_BAD_INPUT
from clipcli.pipelines import weights as weights_pipeline

app = typer.Typer(
    name="clipcli",
    help="CLIP extensions from the terminal: sketch, retrieve, classify-action, point-classify, depth, audio-tag.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
models_app = typer.Typer(
    help="List, verify and import model weights (offline use: `clipcli models import FILE`).",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")


def _version(value: bool) -> None:
    if value:
        print(f"clipcli {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """clipcli: CLIP extensions from the terminal, faithful to the papers' code."""


# ------------------------------------------------------------------ models


def _models_table(rows: list[dict], title: str) -> Table:
    table = Table(title=title)
    for column in ("name", "present", "verified", "size", "path"):
        table.add_column(column)
    for row in rows:
        verdict = {True: "[green]yes[/]", False: "[red]NO[/]", None: "-"}[row["verified"]]
        size = f"{row['size'] / 1e6:,.1f} MB" if row["size"] else "-"
        table.add_row(row["name"], "yes" if row["present"] else "no", verdict, size, row["path"] or "-")
    return table


@command(models_app, "list")
def models_list(*, common: Common) -> None:
    """List known and imported models: present or not, path, size, sha256 verified."""
    rows = weights_pipeline.list_models()
    if common.json:
        print_json(rows)
    else:
        ui.stdout.print(_models_table(rows, "clipcli models"))


@command(models_app, "verify")
def models_verify(
    name_or_path: Annotated[
        str | None, typer.Argument(help="Model name or checkpoint file; all present if omitted.")
    ] = None,
    *,
    common: Common,
) -> None:
    """Check sha256 checksums; exit 3 (with where to put the file) when weights are absent."""
    rows = weights_pipeline.verify_models(name_or_path)
    if common.json:
        print_json(rows if name_or_path is None else rows[0])
    else:
        ui.stdout.print(_models_table(rows, "verification"))
    if any(row["verified"] is False for row in rows):
        raise typer.Exit(EXIT_BAD_INPUT)


@command(models_app, "import")
def models_import(
    file: Annotated[Path, typer.Argument(help="Checkpoint file to copy into the models folder.")],
    name: Annotated[str | None, typer.Option("--name", help="Name for a file that is not a known release.")] = None,
    trust_checkpoint: Annotated[
        bool, typer.Option("--trust-checkpoint", help="Allow pickles that run code when loaded.")
    ] = False,
    *,
    common: Common,
) -> None:
    """Store a checkpoint under its release name (by sha256) or under --name; use it as --model NAME."""
    row = weights_pipeline.import_model(file, name, trust_checkpoint)
    if common.json:
        print_json(row)
    else:
        ui.stdout.print(f"imported {row['name']} -> {row['path']}", markup=False)


def main() -> None:
    app()
