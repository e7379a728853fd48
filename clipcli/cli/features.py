"""`clipcli features` and `clipcli vqa`: the CLIP-ViL commands (image features, zero-shot VQA)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import RenderableType
from rich.markup import escape
from rich.table import Table

from clipcli.batch import expand_inputs
from clipcli.cli_support import Common, command, show
from clipcli.options import (
    Cluster,
    ClusterWorkers,
    Decode,
    DecodeMode,
    Dtype,
    FeatureLayout,
    Html,
    OutputFolder,
    Overwrite,
    TopK,
    TrustCheckpoint,
    Workers,
    batch_size_option,
    model_option,
)

if TYPE_CHECKING:
    from clipcli.runner import Report

FEATURES_HELP = """CLIP-ViL features (Shen et al. 2021, "How Much Can CLIP Benefit Vision-and-Language Tasks?").

CLIP's visual tower as the image encoder of VQA, captioning and navigation
models, in the layouts CLIP-ViL's models read.

--layout vqa (default): the Pythia/MCAN grid. Images are resized as the
official extractor does (detectron2 ResizeShortestEdge 600/1000, then a fixed
600x1000 resize that distorts the aspect ratio; PIL bilinear), normalised with
CLIP's mean/std and run through the ResNet stem and layer1-4, no attention
pool: OUT/NAME.npy of shape (1, 18, 31, C), C = 2048 for RN50/RN101, 2560 for
RN50x4, in float16 as the MCAN extractor stores them (the Pythia one casts to
float32: --dtype float32).

--layout caption: Resize((448, 448), bicubic); OUT/att/NAME.npz (key "feat",
the 14x14xC layer4 grid) and OUT/fc/NAME.npy (the attention pool, its
positional embedding resized 7x7 -> 14x14), float32: the files the CLIP-ViL
captioner reads (it finds them by COCO image id, so name images by id).

--layout pooled: encode_image vectors with CLIP's own preprocessing (the VLN
features): OUT/pooled.npy, one row per image, and OUT/pooled.json naming the
model and each row's image; reruns append new images.

ViTs give grids too (patch tokens after all but the last block for vqa, after
all blocks with the class token as fc for caption; positional embeddings
resized bilinearly), but the CLIP-ViL paper reports ViT grids much weaker
than ResNet grids (its table is not re-checked here). The released extraction
scripts do not run as published (a syntax error, undefined names); clipcli
implements what they spell out. Images are decoded as clipcli reads every
image (EXIF upright, transparency on white). Existing outputs are skipped
unless --overwrite; unreadable images are reported and skipped (exit 4).
"""


def features(
    images: Annotated[list[str], typer.Argument(help="Images, folders or globs.")],
    model: Annotated[str, model_option()] = "RN50",
    layout: Annotated[
        FeatureLayout, typer.Option("--layout", help="vqa (600x1000 grid), caption (448), or pooled.")
    ] = FeatureLayout.VQA,
    out: OutputFolder = Path("."),
    batch_size: Annotated[int, batch_size_option("Images")] = 8,
    dtype: Annotated[Dtype | None, typer.Option("--dtype", help="Default: float16 for vqa, else float32.")] = None,
    workers: Workers = None,
    overwrite: Overwrite = False,
    trust_checkpoint: TrustCheckpoint = False,
    cluster: Cluster = None,
    decode: Decode = DecodeMode.AUTO,
    *,
    common: Common,
) -> None:
    from clipcli.cluster import executor_for
    from clipcli.media.images import IMAGE_EXTENSIONS
    from clipcli.pipelines import features as features_pipeline

    paths = expand_inputs(images, IMAGE_EXTENSIONS)
    report = features_pipeline.run(
        paths,
        out=out,
        layout=layout,
        model_name=model,
        batch_size=batch_size,
        dtype=dtype,
        overwrite=overwrite,
        device=common.device,
        workers=workers,
        trust_checkpoint=trust_checkpoint,
        executor=executor_for(cluster, workers),
        decode=decode,
    )
    show(common, report, lambda: _features_output(report))
    report.raise_for_failures()


def _features_output(report: Report) -> list[RenderableType]:
    summary = report.summary
    pooled = summary["layout"] == "pooled"
    table = Table(title=escape(f"CLIP-ViL {summary['layout']} features ({summary['model']}, {summary['dtype']})"))
    for column in ("input", "status", "row" if pooled else "shape", "detail"):
        table.add_column(column)
    for row in report.rows():
        shape = " ".join(f"{k} {tuple(v)}" for k, v in row.get("shapes", {}).items()) or str(row.get("row", "-"))
        detail = ", ".join(row.get("outputs", [])) or row.get("reason") or row.get("error", "")
        table.add_row(escape(row["input"]), row["status"], shape, escape(detail))
    if not pooled:
        return [table]
    return [table, f"{summary['rows']} rows in {summary['matrix']} (index {summary['index']})"]


# ---- vqa

VQA_HELP = """Zero-shot VQA by answer scoring with CLIP: a ranker over candidate answers, not a VQA model.

The question becomes a statement by simple rules (yes/no, what colour, how
many, where, what/which/who; anything else becomes "a photo of {answer}"),
each candidate answer fills it, and the answers are ranked by the softmax of
logit_scale x cosine between the image and the statements: TAP-C (Song et al.
2022) without its T5 rewriting and answer filtering. Expect at best about 39%
on VQAv2, the figure reported for TAP-C-style zero-shot CLIP (not re-verified
here), and less where the rules miss.

--answers: yesno, colors, counts (0-20), objects (COCO's 80 and ImageNet's
1000 class names), a file (one answer per line) or "a,b,c"; by default the set
that fits the question. Questions with "or" are not split into their
alternatives: give them with --answers. Statement embeddings are cached per
model under ~/.cache/clipcli/text/.
"""


def vqa(
    images: Annotated[list[str], typer.Argument(help="Images, folders or globs, then the question.")],
    question: Annotated[str, typer.Argument(help='The question, e.g. "what color is the car?"')],
    answers: Annotated[
        str | None, typer.Option("--answers", help="yesno, colors, counts, objects, a file, or a comma list.")
    ] = None,
    top_k: TopK = 5,
    model: Annotated[str, model_option()] = "ViT-B/16",
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
    from clipcli.media.images import IMAGE_EXTENSIONS
    from clipcli.pipelines import vqa as vqa_pipeline

    paths = expand_inputs(images, IMAGE_EXTENSIONS)
    report = vqa_pipeline.run(
        paths,
        question,
        answers=answers,
        top_k=top_k,
        model_name=model,
        device=common.device,
        trust_checkpoint=trust_checkpoint,
        executor=executor_for(cluster, workers),
        decode=decode,
    )
    show(common, report, lambda: _vqa_output(report))
    write_html(html, report)
    report.raise_for_failures()


def _vqa_output(report: Report) -> list[RenderableType]:
    facts = report.summary
    statement = facts["template"] or f"yes: {facts['statements']['yes']} / no: {facts['statements']['no']}"
    heading = f"{facts['kind']} question; {facts['answers']} answers ({facts['answer_set']}); statement: {statement}"
    return [heading, *(_vqa_table(row) for row in report.rows())]


def _vqa_table(row: dict) -> Table:
    table = Table(title=escape(f"{row['input']}: {row.get('answer', row['status'])}"), title_justify="left")
    if row["status"] != "ok":
        table.add_column("detail")
        table.add_row(escape(row.get("error") or row.get("reason", "")))
        return table
    for column in ("answer", "probability", "statement"):
        table.add_column(column, justify="right" if column == "probability" else "left")
    for item in row["top"]:
        table.add_row(escape(item["answer"]), f"{item['probability']:.4f}", escape(item["statement"]))
    return table


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    command(
        app, "features", help=FEATURES_HELP, short_help="CLIP-ViL features: CLIP grids for VQA and captioning models."
    )(features)
    command(app, "vqa", help=VQA_HELP)(vqa)
