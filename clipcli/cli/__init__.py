"""The `clipcli` command line: parse options, call a pipeline, print, exit.

No tensor code lives here; each subcommand is a thin function over
`clipcli.pipelines`, in one module per command family (`models`, `depth`,
`audio`, `action`, `sketch`, `retrieve`, `features` with `vqa`, `point`). Each
command imports its pipeline when it runs, so help, `--version` and a rejected
option answer without loading torch (scripts call clipcli once per file).
"""

from __future__ import annotations

from typing import Annotated

import typer

from clipcli import __version__
from clipcli.cli import (
    action,
    action_eval,
    audio,
    audio_eval,
    depth,
    features,
    models,
    point,
    retrieve,
    sketch,
    vqa_eval,
)

app = typer.Typer(
    name="clipcli",
    help="CLIP extensions from the terminal, faithful to the papers' code: CLIPasso (sketch), CLIP4Clip (retrieve),"
    " ActionCLIP (classify-action), PointCLIP (point-classify), DepthCLIP (depth), AudioCLIP (audio-tag) and"
    " CLIP-ViL (features, vqa), with evaluation commands and model management (models).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rich's help formatter imports its markdown stack (~0.1 s a call)
    context_settings={"help_option_names": ["-h", "--help"]},
)


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


for family in (models, depth, audio, audio_eval, action, action_eval, sketch, retrieve, features, vqa_eval, point):
    family.register(app)


def main() -> None:
    app()
