"""`clipcli classify-action`: ActionCLIP labels for whole videos or sliding windows."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from clipcli.batch import expand_inputs
from clipcli.cli_support import Common, command, show
from clipcli.options import (
    Cluster,
    ClusterWorkers,
    Decode,
    DecodeMode,
    Html,
    TopK,
    TrustCheckpoint,
    frames_option,
    labels_option,
    model_option,
    out_option,
)

ACTION_HELP = """ActionCLIP action recognition (Wang et al. 2021) on video files.

Zero-shot (default): 8 segment-centre frames (ActionCLIP's test sampling), each
resized to a 256-pixel short side and centre-cropped to 224, CLIP image
features averaged over frames (meanP), and the official 16 prompt templates:
softmax(100 x cosine) over the labels within each template, averaged over
templates. --checkpoint loads an ActionCLIP checkpoint (its fine-tuned CLIP and
its Transf/LSTM/Conv_1D/Transf_cls fusion head); --frames must be the number it
was trained on. --window classifies sliding windows and reports a timeline
(an addition: ActionCLIP classifies whole clips); --plot draws it.

Label sets: kinetics400, ucf101, hmdb51 (the official lists and order), a file
(one label per line, or the official id,name CSV), or "a,b,c". Differences
from the official code: videos are decoded directly instead of pre-extracted
JPEG frames; UCF101's CamelCase names are split into words for the prompts
("ApplyEyeMakeup" -> "Apply Eye Makeup"); scores are computed in fp32. Text
embeddings of a label set are cached per model under ~/.cache/clipcli/.
"""


def classify_action(
    videos: Annotated[list[str], typer.Argument(help="Videos, folders or globs.")],
    labels: Annotated[
        str, labels_option("kinetics400, ucf101, hmdb51", "a file (one label per line, or the official id,name CSV)")
    ] = "kinetics400",
    frames: Annotated[int | None, frames_option("(default 8, or what the checkpoint fixes)")] = None,
    top_k: TopK = 5,
    model: Annotated[str | None, model_option(", for zero-shot (default ViT-B/32)")] = None,
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", help="An ActionCLIP checkpoint (model_best.pt / last_model.pt).")
    ] = None,
    window: Annotated[
        float | None, typer.Option("--window", help="Classify sliding windows of this many seconds.")
    ] = None,
    stride: Annotated[
        float | None, typer.Option("--stride", help="Seconds between window starts (default: --window).")
    ] = None,
    plot: Annotated[bool, typer.Option("--plot", help="With --window: write OUT/NAME_actions.png timelines.")] = False,
    out: Annotated[Path, out_option("Folder for --plot pictures")] = Path("."),
    trust_checkpoint: TrustCheckpoint = False,
    html: Html = None,
    cluster: Cluster = None,
    workers: ClusterWorkers = None,
    decode: Decode = DecodeMode.AUTO,
    *,
    common: Common,
) -> None:
    from clipcli.cli.html_pages import write_html
    from clipcli.cluster import executor_for
    from clipcli.media.video import VIDEO_EXTENSIONS
    from clipcli.pipelines import action as action_pipeline

    paths = expand_inputs(videos, VIDEO_EXTENSIONS)
    report = action_pipeline.run(
        paths,
        labels=labels,
        frames=frames,
        top_k=top_k,
        model_name=model,
        checkpoint=checkpoint,
        window=window,
        stride=stride,
        plot=plot,
        out=out,
        device=common.device,
        trust_checkpoint=trust_checkpoint,
        executor=executor_for(cluster, workers),
        decode=decode,
    )
    show(common, report, lambda: [_action_table(row) for row in report.rows()])
    write_html(html, report)
    report.raise_for_failures()


def _action_table(row: dict) -> Table:
    table = Table(title=escape(f"{row['input']}: {row['status']}"), title_justify="left")
    if row["status"] != "ok":
        table.add_column("detail")
        table.add_row(escape(row.get("error") or row.get("reason", "")))
        return table
    if "windows" in row:
        for column in ("start s", "end s", "top labels"):
            table.add_column(column, justify="left" if column == "top labels" else "right")
        for item in row["windows"]:
            tops = escape(", ".join(f"{p['label']} {p['probability']:.2f}" for p in item["predictions"][:3]))
            table.add_row(f"{item['start']:.2f}", f"{item['end']:.2f}", tops)
        return table
    table.add_column("label")
    table.add_column("probability", justify="right")
    for prediction in row["predictions"]:
        table.add_row(escape(prediction["label"]), f"{prediction['probability']:.4f}")
    return table


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    command(app, "classify-action", help=ACTION_HELP, short_help="ActionCLIP action recognition on videos.")(
        classify_action
    )
