"""`clipcli audio-tag`: AudioCLIP tags, and images or captions ranked for each audio."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from clipcli.batch import expand_inputs
from clipcli.cli_support import Common, command, show
from clipcli.defaults import AUDIOCLIP_CHECKPOINT
from clipcli.options import Cluster, ClusterWorkers, Html, TopK, TrustCheckpoint, batch_size_option, labels_option

if TYPE_CHECKING:
    from clipcli.runner import Report

AUDIO_TAG_HELP = """AudioCLIP zero-shot audio tagging and audio-to-image/text search (Guzhov et al. 2021).

Audio is mixed to mono, resampled to 44.1 kHz and multiplied by 32768, the
int16 scale the model was trained on (--raw-scale feeds [-1, 1] instead, as
the demo notebook's copies do; tags then degrade). Labels are scored as the
official zero-shot protocol: bare label text ("{}" template, no prompt),
softmax over clamp(exp(logit_scale_at), 1, 100) x cosine; --multilabel uses
the official sigmoid(cosine - 0.5) per label.

Deliberate differences from the official evaluation: a clip longer than
--window is covered by evenly spread full windows (the official code
centre-crops one), and the clip's tags score the renormalised mean of the
windows' normalised embeddings (each window is also scored: "windows" in
--json). Clips shorter than a window are centre-padded with their edge
values, as officially. On CUDA the image and text towers run in fp16, as
`clip` does (the official model is fp32); the audio tower is always fp32.
--texts captions are used as written, without the template.

--checkpoint audioclip-full (default) was trained on all three towers;
audioclip-partial kept CLIP's image and text towers frozen, so its audio
embeddings live in vanilla CLIP RN50's space.
"""


def tag_tables(report: dict) -> list[Table]:
    """The tables of a `--json` report: the tags of each audio, then the images and captions ranked for it."""
    tables = []
    tags = Table(title=f"AudioCLIP tags ({report['labels']}, {'multi-label' if report['multilabel'] else 'softmax'})")
    for column in ("input", "rank", "label", "score"):
        tags.add_column(column)
    for row in report["results"]:
        name = escape(row["input"])
        if row["status"] != "ok":
            tags.add_row(name, "-", row["status"], escape(row.get("error", "")))
            continue
        for rank, entry in enumerate(row["tags"], 1):
            tags.add_row(name if rank == 1 else "", str(rank), escape(entry["label"]), f"{entry['score']:.4f}")
    tables.append(tags)
    for name, key in (("images", "image"), ("texts", "text")):
        rows = [row for row in report["results"] if row["status"] == "ok" and name in row]
        if rows:
            table = Table(title=f"{name} ranked for each audio (logit = scale x cosine)")
            for column in ("input", "rank", key, "logit", "cosine"):
                table.add_column(column)
            for row in rows:
                for rank, entry in enumerate(row[name], 1):
                    cells = (escape(entry[key]), f"{entry['score']:.3f}", f"{entry['cosine']:.4f}")
                    table.add_row(escape(row["input"]) if rank == 1 else "", str(rank), *cells)
            tables.append(table)
    return tables


def audio_tag(
    audio: Annotated[list[str], typer.Argument(help="Audio files, folders or globs (wav, flac, mp3, m4a, ...).")],
    labels: Annotated[str, labels_option("esc50 (50 classes), us8k (10)")] = "esc50",
    checkpoint: Annotated[
        str, typer.Option("--checkpoint", help="audioclip-full, audioclip-partial, an imported name or a file.")
    ] = AUDIOCLIP_CHECKPOINT,
    top_k: TopK = 5,
    multilabel: Annotated[
        bool, typer.Option("--multilabel", help="Independent sigmoid(cos - 0.5) per label instead of softmax.")
    ] = False,
    window: Annotated[float, typer.Option("--window", help="Window length in seconds.")] = 5.0,
    template: Annotated[str, typer.Option("--template", help="Label text template; officially the bare label.")] = "{}",
    images: Annotated[
        Path | None, typer.Option("--images", help="Rank this folder's images for each audio (embeddings cached).")
    ] = None,
    texts: Annotated[Path | None, typer.Option("--texts", help="Rank these captions (one per line).")] = None,
    raw_scale: Annotated[
        bool, typer.Option("--raw-scale", help="Feed samples in [-1, 1], not the int16 scale the model expects.")
    ] = False,
    batch_size: Annotated[int, batch_size_option("Audio windows")] = 16,
    trust_checkpoint: TrustCheckpoint = False,
    html: Html = None,
    cluster: Cluster = None,
    workers: ClusterWorkers = None,
    *,
    common: Common,
) -> None:
    from clipcli.cli.html_pages import write_html
    from clipcli.cluster import executor_for
    from clipcli.media.audio import AUDIO_EXTENSIONS
    from clipcli.pipelines import audio as audio_pipeline

    paths = expand_inputs(audio, AUDIO_EXTENSIONS)
    report = audio_pipeline.run(
        paths,
        labels=labels,
        checkpoint=checkpoint,
        top_k=top_k,
        multilabel=multilabel,
        window=window,
        template=template,
        images=images,
        texts=texts,
        raw_scale=raw_scale,
        batch_size=batch_size,
        device=common.device,
        trust_checkpoint=trust_checkpoint,
        executor=executor_for(cluster, workers),
    )
    show(common, report, lambda: tag_tables(report.as_json()))
    write_html(html, report)
    _raise_for_failures(report)


def _raise_for_failures(report: Report) -> None:
    """Exit as for one batch of the audio files and the --images folder's images, where an unreadable image fails."""
    from clipcli.runner import Report, Result

    images = [Result(row["input"], "failed", error=row["error"]) for row in report.summary["image_failures"]]
    Report(report.command, report.results + images).raise_for_failures()


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    command(app, "audio-tag", help=AUDIO_TAG_HELP)(audio_tag)
