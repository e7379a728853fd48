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
from clipcli.batch import expand_inputs, raise_for_failures
from clipcli.cli_support import Common, command, print_json
from clipcli.errors import EXIT_BAD_INPUT, BadInputError
from clipcli.media.images import IMAGE_EXTENSIONS
from clipcli.pipelines import depth as depth_pipeline
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


# ---- depth


def _floats(text: str | None, option: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise BadInputError(f"{option} {text!r}: expected comma-separated numbers") from None


def _depth_bins(text: str | None) -> list[float] | None:
    if text and text.startswith("preset:"):
        name = text.removeprefix("preset:")
        if name not in depth_pipeline.BIN_PRESETS:
            raise BadInputError(f"--bins {text}: presets are {', '.join(depth_pipeline.BIN_PRESETS)}")
        return list(depth_pipeline.BIN_PRESETS[name])
    return _floats(text, "--bins")


def _depth_words(text: str | None) -> list[str] | None:
    return None if text is None else [word.strip() for word in text.split(",")]


DEPTH_HELP = """DepthCLIP zero-shot monocular depth (Zhang et al., "Can Language Understand Depth?").

CLIP RN50's layer4 grid (no attention pool) is compared with seven prompts,
"This object is giant" ... "This object is unseen", and each 32x32 cell gets
the softmax-weighted mean of seven depth bins (1.00-3.00 m); the flipped image
is averaged in. What it is not: a metric depth estimator. The map is coarse
(one value per 32 px cell, bilinearly upsampled), always inside the bin range,
and has no scale recovery. Writes NAME_depth.npy (metres, float32),
NAME_depth.png (16-bit millimetres) and NAME_depth_color.png (with a legend).
"""


DepthModel = Annotated[
    str, typer.Option("--model", help="A ResNet CLIP whose layer4 is 2x its embedding width (RN50).")
]
DepthBins = Annotated[
    str | None, typer.Option("--bins", help="Comma-separated metres, or preset:default / preset:bathroom.")
]
DepthWords = Annotated[str | None, typer.Option("--words", help="Comma-separated depth words, one per bin.")]
DepthTemplate = Annotated[str, typer.Option("--template", help="Prompt with two {} slots: object, depth word.")]
DepthTemperature = Annotated[float, typer.Option("--temperature", help="Softmax temperature (x100 CLIP scale on top).")]
NoFlip = Annotated[bool, typer.Option("--no-flip", help="Skip the horizontal-flip averaging.")]


def _depth_settings(bins, words, template, temperature, no_flip) -> depth_pipeline.DepthSettings:
    return depth_pipeline.DepthSettings.checked(
        _depth_bins(bins), _depth_words(words), template, temperature, flip=not no_flip
    )


@command(app, "depth", help=DEPTH_HELP)
def depth(
    images: Annotated[list[str], typer.Argument(help="Images, folders or globs.")],
    model: DepthModel = "RN50",
    bins: DepthBins = None,
    words: DepthWords = None,
    template: DepthTemplate = "This {} is {}",
    temperature: DepthTemperature = 0.1,
    no_flip: NoFlip = False,
    size: Annotated[
        str, typer.Option("--size", help="auto (about 416x544 pixels, aspect kept), native (padded), or HxW.")
    ] = "auto",
    colormap: Annotated[
        str, typer.Option("--colormap", help="magma, inferno, plasma, viridis, turbo, jet, bone.")
    ] = "magma",
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("."),
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo inputs whose outputs exist.")] = False,
    *,
    common: Common,
) -> None:
    settings = _depth_settings(bins, words, template, temperature, no_flip)
    results = depth_pipeline.run(
        expand_inputs(images, IMAGE_EXTENSIONS),
        out=out,
        model_name=model,
        settings=settings,
        size=depth_pipeline.parse_size(size),
        colormap=colormap,
        overwrite=overwrite,
        device=common.device,
    )
    if common.json:
        print_json(results)
    else:
        table = Table(title="DepthCLIP")
        for column in ("input", "status", "min m", "mean m", "max m", "outputs"):
            table.add_column(column)
        for row in results:
            stats = [f"{row[key]:.2f}" for key in ("min", "mean", "max")] if row["status"] == "ok" else ["-"] * 3
            detail = row.get("color") or row.get("reason") or row.get("error", "")
            table.add_row(row["input"], row["status"], *stats, detail)
        ui.stdout.print(table)
    raise_for_failures(results)


@command(app, "depth-eval")
def depth_eval(
    pairs: Annotated[list[str] | None, typer.Argument(help="RGB,GT pairs (GT: 16-bit PNG in mm or .npy in m).")] = None,
    pair_list: Annotated[Path | None, typer.Option("--list", help="A file of 'RGB GT' lines.")] = None,
    model: DepthModel = "RN50",
    bins: DepthBins = None,
    words: DepthWords = None,
    template: DepthTemplate = "This {} is {}",
    temperature: DepthTemperature = 0.1,
    no_flip: NoFlip = False,
    size: Annotated[
        str, typer.Option("--size", help="For non-NYU-sized images; NYU 480x640 uses the official crop.")
    ] = "auto",
    max_depth: Annotated[float, typer.Option("--max-depth", help="Valid ground truth below this (m); clamp.")] = 10.0,
    *,
    common: Common,
) -> None:
    """Evaluate DepthCLIP against ground truth: delta1-3, AbsRel, log10, RMSE (NYU protocol for 480x640)."""
    report = depth_pipeline.evaluate(
        depth_pipeline.parse_pairs(pairs or [], pair_list),
        model_name=model,
        settings=_depth_settings(bins, words, template, temperature, no_flip),
        size=depth_pipeline.parse_size(size),
        max_depth=max_depth,
        device=common.device,
    )
    if common.json:
        print_json(report)
    else:
        table = Table(title=f"DepthCLIP on {report['images']} image(s)")
        table.add_column("")
        for name in ("δ1", "δ2", "δ3", "AbsRel", "log10", "RMSE"):
            table.add_column(name, justify="right")
        if report["mean"]:
            table.add_row("this run", *(f"{report['mean'][m]:.3f}" for m in depth_pipeline.METRICS))
        table.add_row("paper (NYU v2)", *(f"{report['paper_nyu'][m]:.3f}" for m in depth_pipeline.METRICS))
        ui.stdout.print(table)
    raise_for_failures(report["per_image"])


def main() -> None:
    app()
