"""`clipcli models list|verify|import`: the model weights on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from clipcli.cli_support import Common, command, show
from clipcli.errors import EXIT_BAD_INPUT
from clipcli.options import TrustCheckpoint


def models_table(rows: list[dict], title: str) -> Table:
    table = Table(title=title)
    for column in ("name", "present", "verified", "size", "path"):
        table.add_column(column)
    for row in rows:
        verdict = {True: "[green]yes[/]", False: "[red]NO[/]", None: "-"}[row["verified"]]
        size = f"{row['size'] / 1e6:,.1f} MB" if row["size"] else "-"
        table.add_row(escape(row["name"]), "yes" if row["present"] else "no", verdict, size, escape(row["path"] or "-"))
    return table


def models_list(*, common: Common) -> None:
    """List known and imported models: present or not, path, size, sha256 verified."""
    from clipcli.pipelines import weights as weights_pipeline

    rows = weights_pipeline.list_models()
    show(common, rows, lambda: [models_table(rows, "clipcli models")])


def models_verify(
    name_or_path: Annotated[
        str | None, typer.Argument(help="Model name or checkpoint file; all present if omitted.")
    ] = None,
    *,
    common: Common,
) -> None:
    """Check sha256 checksums, re-reading every file; exit 3 (with where to put the file) when weights are absent.

    The hash cache only speeds up loading: a file changed behind its size and mtime still fails here.
    """
    from clipcli.pipelines import weights as weights_pipeline

    rows = weights_pipeline.verify_models(name_or_path)
    show(common, rows if name_or_path is None else rows[0], lambda: [models_table(rows, "verification")])
    if any(row["verified"] is False for row in rows):
        raise typer.Exit(EXIT_BAD_INPUT)


def models_import(
    file: Annotated[Path, typer.Argument(help="Checkpoint file to copy into the models folder.")],
    name: Annotated[str | None, typer.Option("--name", help="Name for a file that is not a known release.")] = None,
    trust_checkpoint: TrustCheckpoint = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the model already stored under this name.")
    ] = False,
    *,
    common: Common,
) -> None:
    """Store a checkpoint under its release name (by sha256) or under --name; use it as --model NAME."""
    from clipcli.pipelines import weights as weights_pipeline

    row = weights_pipeline.import_model(file, name, trust_checkpoint, overwrite)
    show(common, row, lambda: [f"imported {row['name']} -> {row['path']}"])


def register(app: typer.Typer) -> None:
    """Add the `models` group and its commands to `app`."""
    models_app = typer.Typer(
        help="List, verify and import model weights (offline use: `clipcli models import FILE`).",
        no_args_is_help=True,
        rich_markup_mode=None,
    )
    app.add_typer(models_app, name="models")
    command(models_app, "list")(models_list)
    command(models_app, "verify")(models_verify)
    command(models_app, "import")(models_import)
