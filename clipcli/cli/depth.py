"""`clipcli depth` and `clipcli depth-eval`: DepthCLIP depth maps and their NYU-style evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from clipcli.batch import expand_inputs
from clipcli.cli_support import Common, command, show
from clipcli.errors import BadInputError
from clipcli.options import (
    Cluster,
    ClusterWorkers,
    Colormap,
    Decode,
    DecodeMode,
    Html,
    OutputFolder,
    Overwrite,
    TrustCheckpoint,
    model_option,
)

if TYPE_CHECKING:
    from clipcli.pipelines.depth import DepthSettings
    from clipcli.runner import Report


def _floats(text: str | None, option: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise BadInputError(f"{option} {text!r}: expected comma-separated numbers") from None


def _depth_bins(text: str | None) -> list[float] | None:
    from clipcli.pipelines import depth as depth_pipeline

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


DepthModel = Annotated[str, model_option("; a ResNet whose layer4 is 2x its embedding width (RN50)")]
DepthBins = Annotated[
    str | None, typer.Option("--bins", help="Comma-separated metres, or preset:default / preset:bathroom.")
]
DepthWords = Annotated[str | None, typer.Option("--words", help="Comma-separated depth words, one per bin.")]
DepthTemplate = Annotated[str, typer.Option("--template", help="Prompt with two {} slots: object, depth word.")]
DepthTemperature = Annotated[float, typer.Option("--temperature", help="Softmax temperature (x100 CLIP scale on top).")]
NoFlip = Annotated[bool, typer.Option("--no-flip", help="Skip the horizontal-flip averaging.")]


def _depth_settings(
    bins: str | None, words: str | None, template: str, temperature: float, no_flip: bool
) -> DepthSettings:
    from clipcli.pipelines import depth as depth_pipeline

    return depth_pipeline.DepthSettings.checked(
        bins=_depth_bins(bins), words=_depth_words(words), template=template, temperature=temperature, flip=not no_flip
    )


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
    colormap: Annotated[Colormap, typer.Option("--colormap", help="Colours of NAME_depth_color.png.")] = Colormap.MAGMA,
    out: OutputFolder = Path("."),
    overwrite: Overwrite = False,
    trust_checkpoint: TrustCheckpoint = False,
    cluster: Cluster = None,
    workers: ClusterWorkers = None,
    html: Html = None,
    decode: Decode = DecodeMode.AUTO,
    *,
    common: Common,
) -> None:
    from clipcli.cli.html_pages import write_html
    from clipcli.cluster import executor_for
    from clipcli.media.images import IMAGE_EXTENSIONS
    from clipcli.pipelines import depth as depth_pipeline

    settings = _depth_settings(bins, words, template, temperature, no_flip)
    report = depth_pipeline.run(
        expand_inputs(images, IMAGE_EXTENSIONS, depth_pipeline.output_names(out)),
        out=out,
        model_name=model,
        settings=settings,
        size=depth_pipeline.parse_size(size),
        colormap=colormap,
        overwrite=overwrite,
        device=common.device,
        trust_checkpoint=trust_checkpoint,
        executor=executor_for(cluster, workers),
        decode=decode,
    )
    show(common, report, lambda: [_depth_table(report)])
    write_html(html, report)
    report.raise_for_failures()


def _depth_table(report: Report) -> Table:
    table = Table(title="DepthCLIP")
    for column in ("input", "status", "min m", "mean m", "max m", "outputs"):
        table.add_column(column)
    for row in report.rows():
        stats = [f"{row[key]:.2f}" for key in ("min", "mean", "max")] if row["status"] == "ok" else ["-"] * 3
        detail = row.get("color") or row.get("reason") or row.get("error", "")
        table.add_row(escape(row["input"]), row["status"], *stats, escape(detail))
    return table


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
    trust_checkpoint: TrustCheckpoint = False,
    cluster: Cluster = None,
    workers: ClusterWorkers = None,
    *,
    common: Common,
) -> None:
    """Evaluate DepthCLIP against ground truth: delta1-3, AbsRel, log10, RMSE (NYU protocol for 480x640)."""
    from clipcli.cluster import executor_for
    from clipcli.pipelines import depth_eval as depth_eval_pipeline
    from clipcli.pipelines.depth import parse_size

    report = depth_eval_pipeline.evaluate(
        depth_eval_pipeline.parse_pairs(pairs or [], pair_list),
        model_name=model,
        settings=_depth_settings(bins, words, template, temperature, no_flip),
        size=parse_size(size),
        max_depth=max_depth,
        device=common.device,
        trust_checkpoint=trust_checkpoint,
        executor=executor_for(cluster, workers),
    )
    show(common, report, lambda: [_depth_eval_table(report.summary, depth_eval_pipeline.METRICS)])
    report.raise_for_failures()


def _depth_eval_table(report: dict, metrics: Sequence[str]) -> Table:
    table = Table(title=f"DepthCLIP on {report['images']} image(s)")
    table.add_column("")
    for name in ("δ1", "δ2", "δ3", "AbsRel", "log10", "RMSE"):
        table.add_column(name, justify="right")
    if report["mean"]:
        table.add_row("this run", *(f"{report['mean'][m]:.3f}" for m in metrics))
    table.add_row("paper (NYU v2)", *(f"{report['paper_nyu'][m]:.3f}" for m in metrics))
    return table


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    command(app, "depth", help=DEPTH_HELP)(depth)
    command(app, "depth-eval")(depth_eval)
