"""`clipcli audio-eval`: AudioCLIP zero-shot accuracy on ESC-50 and UrbanSound8K, beside the paper's."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from clipcli.cli_support import Common, command, show
from clipcli.defaults import AUDIOCLIP_CHECKPOINT
from clipcli.options import Choice, Cluster, ClusterWorkers, TrustCheckpoint, batch_size_option

AUDIO_EVAL_HELP = """Zero-shot AudioCLIP accuracy on ESC-50 or UrbanSound8K, the official way (Guzhov et al. 2021).

ROOT is the dataset as distributed: ESC-50's meta/esc50.csv and audio/*.wav,
or UrbanSound8K's metadata/UrbanSound8K.csv and audio/foldN/*.wav. Clips are
prepared as the official loaders do: ESC-50 mono at 44.1 kHz x 32768,
centre-padded or cropped to 5 s; UrbanSound8K stereo (mono duplicated), its
first 4 s, min-max rescaled to the int16 range. The class names (underscores
as spaces, no prompt) are scored by softmax over the clamped logit scale x
cosine. Top-1 and top-5 are given per fold; "overall" is the mean of the
folds' accuracies (each fold is one official run), printed beside the
published zero-shot figure (ESC-50 69.40%, UrbanSound8K 68.78%). Unreadable
clips are reported and left out of the accuracies (exit 4).
"""


class EvalDataset(Choice):
    AUTO = "auto"
    ESC50 = "esc50"
    US8K = "us8k"


def audio_eval(
    root: Annotated[Path, typer.Argument(help="The dataset's root folder (ESC-50 or UrbanSound8K layout).")],
    dataset: Annotated[
        EvalDataset, typer.Option("--dataset", help="Which layout ROOT has; auto tells it from the metadata file.")
    ] = EvalDataset.AUTO,
    folds: Annotated[
        str | None, typer.Option("--folds", help="Comma-separated folds to evaluate, e.g. 1,2 (default: all).")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Only the first N clips (folds in order, CSV order within).")
    ] = None,
    checkpoint: Annotated[
        str, typer.Option("--checkpoint", help="audioclip-full, audioclip-partial, an imported name or a file.")
    ] = AUDIOCLIP_CHECKPOINT,
    batch_size: Annotated[int, batch_size_option("Clips")] = 16,
    trust_checkpoint: TrustCheckpoint = False,
    cluster: Cluster = None,
    workers: ClusterWorkers = None,
    *,
    common: Common,
) -> None:
    from clipcli.cluster import executor_for
    from clipcli.pipelines import audio_eval as audio_eval_pipeline

    report = audio_eval_pipeline.evaluate(
        root,
        dataset=dataset.value,
        folds=audio_eval_pipeline.parse_folds(folds),
        limit=limit,
        checkpoint=checkpoint,
        batch_size=batch_size,
        device=common.device,
        trust_checkpoint=trust_checkpoint,
        executor=executor_for(cluster, workers),
    )
    show(common, report, lambda: [accuracy_table(report.summary)])
    report.raise_for_failures()


def accuracy_table(summary: dict) -> Table:
    """Per-fold rows, the overall mean, and the published figure."""
    scored, skipped = summary["overall"]["clips"], summary["skipped"]
    title = f"AudioCLIP zero-shot on {summary['dataset']}: {scored} clip(s), {skipped} skipped"
    table = Table(title=title, title_justify="left")
    for column in ("", "clips", "top-1 %", "top-5 %"):
        table.add_column(column, justify="right" if column else "left")
    for fold in summary["folds"]:
        table.add_row(f"fold {fold['fold']}", str(fold["clips"]), f"{fold['top1']:.2f}", f"{fold['top5']:.2f}")
    overall = summary["overall"]
    if overall["folds"]:
        cells = (str(overall["clips"]), f"{overall['top1']:.2f}", f"{overall['top5']:.2f}")
        table.add_row(f"this run (mean of {overall['folds']} fold(s))", *cells)
    table.add_row("paper (zero-shot)", "-", f"{summary['published']['top1']:.2f}", "-")
    return table


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    command(app, "audio-eval", help=AUDIO_EVAL_HELP)(audio_eval)
