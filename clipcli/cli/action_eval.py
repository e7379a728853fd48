"""`clipcli action-eval`: ActionCLIP top-1/top-5 and mean class accuracy over a labelled video list."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from clipcli.cli_support import Common, command, show
from clipcli.options import Cluster, ClusterWorkers, TrustCheckpoint, frames_option, labels_option, model_option

ACTION_EVAL_HELP = """Evaluate ActionCLIP on a labelled list of videos: top-1, top-5 and mean class accuracy.

LIST holds one 'VIDEO LABEL' a line (LABEL: a class index into --labels or a
class name), or the official test-list lines 'FRAMES_FOLDER FRAMES LABEL'
(folders of img_00001.jpg... frames, as lists/k4001/val_frames_re.txt).
Relative paths start at --root, else at the list's folder. The protocol is
the official single-view test (test.py validate): segment-centre frames, one
centre crop, the 16 prompt templates, as classify-action computes them. The
published figures for the model's architecture and frame count are printed
beside ours (n/a where none is published). Unreadable videos are reported
and skipped (exit 4).
"""


def action_eval(
    list_file: Annotated[
        Path, typer.Argument(metavar="LIST", help="The list of 'VIDEO LABEL' or 'FOLDER FRAMES LABEL' lines.")
    ],
    labels: Annotated[
        str, labels_option("kinetics400, ucf101, hmdb51", "a file (one label per line, or the official id,name CSV)")
    ] = "kinetics400",
    root: Annotated[
        Path | None, typer.Option("--root", help="Folder the list's relative paths start at (default: its folder).")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Evaluate only the list's first N entries.")
    ] = None,
    frames: Annotated[int | None, frames_option("(default 8, or what the checkpoint fixes)")] = None,
    model: Annotated[str | None, model_option(", for zero-shot (default ViT-B/32)")] = None,
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", help="An ActionCLIP checkpoint (model_best.pt / last_model.pt).")
    ] = None,
    trust_checkpoint: TrustCheckpoint = False,
    cluster: Cluster = None,
    workers: ClusterWorkers = None,
    *,
    common: Common,
) -> None:
    from clipcli.cluster import executor_for
    from clipcli.pipelines import action_eval as pipeline

    report = pipeline.evaluate(
        list_file,
        labels=labels,
        root=root,
        limit=limit,
        model_name=model,
        checkpoint=checkpoint,
        frames=frames,
        device=common.device,
        trust_checkpoint=trust_checkpoint,
        executor=executor_for(cluster, workers),
    )
    show(common, report, lambda: [_accuracy_table(report.summary, report.counts()["failed"])])
    report.raise_for_failures()


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _accuracy_table(report: dict, unreadable: int) -> Table:
    frames = report["frames"] and f"{report['frames']}f"  # the model's facts are unknown when no video was read
    model = " ".join(part for part in (report["architecture"] or "CLIP", report["head"], frames) if part)
    title = f"ActionCLIP {model}: {report['videos']} video(s), {unreadable} unreadable"
    table = Table(title=escape(title), title_justify="left")
    for column in ("", "top-1 %", "top-5 %", "mean class %"):
        table.add_column(column, justify="right" if column else "left")
    table.add_row("this run", *(_percent(report[key]) for key in ("top1", "top5", "mean_class")))
    for setting in ("fine_tuned", "zero_shot"):
        figures = report["published"][setting] or {}
        name = f"published, {setting.replace('_', '-')}"
        table.add_row(name, _percent(figures.get("top1")), _percent(figures.get("top5")), "n/a")
    if report["published"]["fine_tuned"] or report["published"]["zero_shot"]:
        table.caption = escape(f"published: {report['published']['source']}")
    return table


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    command(app, "action-eval", help=ACTION_EVAL_HELP)(action_eval)
