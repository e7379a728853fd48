"""`clipcli vqa-eval`: the VQA accuracy of the zero-shot answer ranking on a VQAv2-format set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import RenderableType
from rich.markup import escape
from rich.table import Table

from clipcli.cli_support import Common, command, show
from clipcli.options import Cluster, ClusterWorkers, TrustCheckpoint, model_option

VQA_EVAL_HELP = """The standard VQA accuracy of `clipcli vqa`'s zero-shot answer ranking on VQAv2-format data.

QUESTIONS is v2_OpenEnded_mscoco_val2014_questions.json, ANNOTATIONS
v2_mscoco_val2014_annotations.json, IMAGES_DIR the folder of
COCO_val2014_%012d.jpg images (any image whose name ends in the image id is
found too). Each image is encoded once; each question's answers are ranked as
`clipcli vqa` ranks them, and the top one, in lower case, is scored as the
official vqaEval.py scores it: answers normalised (punctuation, number words,
articles, contractions) when the humans disagree, min(1, matching humans / 3)
averaged over the ten leave-one-out subsets of the human answers; overall and
per answer type, in percent with two decimals. Printed beside the TAP-C
zero-shot figure (about 39%, from a secondary source). Questions whose image
is missing or unreadable are reported and skipped (exit 4).
"""


def vqa_eval(
    questions: Annotated[Path, typer.Argument(help="The VQAv2 questions JSON.")],
    annotations: Annotated[Path, typer.Argument(help="The VQAv2 annotations JSON.")],
    images_dir: Annotated[Path, typer.Argument(help="The folder of the questions' images.")],
    model: Annotated[str, model_option()] = "ViT-B/16",
    answers: Annotated[
        str | None,
        typer.Option("--answers", help="Candidate answers for every question: a file or a comma list; default: vqa's."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Evaluate only the first N questions by question_id.")
    ] = None,
    trust_checkpoint: TrustCheckpoint = False,
    cluster: Cluster = None,
    workers: ClusterWorkers = None,
    *,
    common: Common,
) -> None:
    from clipcli.cluster import executor_for
    from clipcli.pipelines import vqa_eval as vqa_eval_pipeline

    report = vqa_eval_pipeline.evaluate(
        questions,
        annotations,
        images_dir,
        answers=answers,
        limit=limit,
        model_name=model,
        device=common.device,
        trust_checkpoint=trust_checkpoint,
        executor=executor_for(cluster, workers),
    )
    show(common, report, lambda: _vqa_eval_output(report.summary))
    report.raise_for_failures()


def _vqa_eval_output(summary: dict) -> list[RenderableType]:
    accuracy, published = summary["accuracy"], summary["published"]
    kinds = list(accuracy["per_answer_type"])
    table = Table(title=escape(f"VQA accuracy (%), {summary['model']}, answers: {summary['answer_set']}"))
    for column in ("", "overall", *kinds):
        table.add_column(escape(column), justify="left" if not column else "right")
    overall = accuracy["overall"]
    table.add_row(
        f"this run ({summary['evaluated']} questions)",
        "-" if overall is None else f"{overall:.2f}",
        *(f"{accuracy['per_answer_type'][kind]:.2f}" for kind in kinds),
    )
    approximate = "≈" if published.get("approximate") else ""
    table.add_row(escape(published["method"]), f"{approximate}{published['overall']:g}", *("-" for _ in kinds))
    notes = [f"published: {published['source']}"]
    if summary["skipped"]:
        notes.append(f"{summary['skipped']} of {summary['questions']} questions skipped (missing or unreadable images)")
    return [table, *notes]


def register(app: typer.Typer) -> None:
    """Add this module's command to `app`."""
    command(app, "vqa-eval", help=VQA_EVAL_HELP)(vqa_eval)
