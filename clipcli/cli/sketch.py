"""`clipcli sketch`: CLIPasso sketches of images."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from clipcli.batch import expand_inputs
from clipcli.cli_support import Common, command, show
from clipcli.options import (
    Animation,
    Cluster,
    ClusterWorkers,
    Decode,
    DecodeMode,
    Html,
    OutputFolder,
    Overwrite,
    TrustCheckpoint,
    model_option,
)

if TYPE_CHECKING:
    from clipcli.runner import Report

SKETCH_HELP = """CLIPasso object sketching (Vinker et al. 2022): an image as a few black Bézier strokes.

Defaults reproduce the official run: 16 strokes of half-width 1.5 start at edge
pixels sampled from ViT-B/32 attention x XDoG edges; Adam (lr 1.0) moves their
control points for 2000 steps to match RN101's layer2 and layer3 features plus
0.1 x the cosine of its embeddings, over the image and 4 augmented views (same
augmentation for sketch and image); every 10 steps the un-augmented loss is
measured; each seed (--seed, +1000, +2000) keeps its best, the best seed wins.

Deviations from the official code: strokes are drawn by clipcli's own
differentiable rasterizer, not diffvg; the seeds run as one batch; the sketch
kept is the one whose loss was measured (the official code saves it one Adam
step later); non-square images are padded to a white square (the official
fix_scale option) instead of stretched; --mask auto is OpenCV GrabCut seeded
from the saliency map, not U2Net (suits an object on a distinct background);
images with fewer edge pixels than strokes (flat colour, tiny icons; the
official code fails on them) start their strokes from the saliency map alone,
or uniformly where it is flat too, with a notice.

Writes NAME_sketch.svg (224x224), NAME_sketch.png (--size px), NAME_sketch.json
(strokes, per-seed losses, chosen seed, time) and, with --animate, a GIF or MP4
of the evaluation snapshots up to the best one (--mask auto adds NAME_mask.png).
On CUDA the RN101 passes of each step replay as CUDA graphs (about 34 s per
default sketch on one H100, 84 s without). Slow on a CPU: seconds per step.

--batch-images K optimises K images of a folder in one batch, each with its
own seeds, augmentations, early stop and best sketch, so each gets the SVG a
run of it alone gives (checked on the CPU); an image that finishes leaves the
batch. Default: 1 on a CPU; on CUDA as many as 90% of the free GPU memory
holds by an estimate (2 x 307 MiB of RN101 activations per view in fp32, half
in fp16, 15 views an image at the defaults), at most 16. Its throughput on a
GPU has not been measured yet.
"""


def sketch(
    images: Annotated[list[str], typer.Argument(help="Images, folders or globs.")],
    strokes: Annotated[int, typer.Option("--strokes", help="Number of strokes.")] = 16,
    iterations: Annotated[int, typer.Option("--iterations", help="Adam steps.")] = 2000,
    seeds: Annotated[int, typer.Option("--seeds", help="Runs from different seeds, one batch; the best is kept.")] = 3,
    width: Annotated[float, typer.Option("--width", help="Stroke half-width in pixels at 224 (1.5 = 3 px).")] = 1.5,
    mask: Annotated[
        str, typer.Option("--mask", help="none, auto (GrabCut), or a mask image (white = object) or folder of NAME.*.")
    ] = "none",
    model: Annotated[str, model_option("; a ResNet, for the loss")] = "RN101",
    saliency_model: Annotated[
        str, typer.Option("--saliency-model", help="CLIP ViT for the saliency map.")
    ] = "ViT-B/32",
    augmentations: Annotated[int, typer.Option("--augmentations", help="Augmented pairs per step.")] = 4,
    lr: Annotated[float, typer.Option("--lr", help="Adam learning rate on pixel coordinates.")] = 1.0,
    patience: Annotated[
        int | None, typer.Option("--patience", help="Stop a seed after N evaluations without improvement.")
    ] = None,
    early_stop: Annotated[
        bool,
        typer.Option(
            "--early-stop/--no-early-stop",
            help="CLIPasso's stopping rule: a seed stops at its second evaluation within 1e-5 of its best.",
        ),
    ] = True,
    cuda_graphs: Annotated[
        bool,
        typer.Option(
            "--cuda-graphs/--no-cuda-graphs",
            help="On CUDA, replay the ResNet passes of a step as CUDA graphs (same arithmetic, fewer launches).",
        ),
    ] = True,
    animate: Annotated[
        Animation | None, typer.Option("--animate", help="Also write the optimisation as a GIF or MP4.")
    ] = None,
    size: Annotated[int, typer.Option("--size", help="PNG (and animation) side in pixels.")] = 448,
    batch_images: Annotated[
        int | None,
        typer.Option(
            "--batch-images",
            help="Images optimised in one batch, each with its seeds [default: 1 on a CPU, from free memory on CUDA].",
        ),
    ] = None,
    out: OutputFolder = Path("."),
    seed: Annotated[int, typer.Option("--seed", help="First seed; the others are +1000, +2000, ...")] = 0,
    overwrite: Overwrite = False,
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
    from clipcli.pipelines import sketch as sketch_pipeline
    from clipcli.pipelines.sketch_files import output_names

    settings = sketch_pipeline.SketchSettings(
        strokes=strokes,
        iterations=iterations,
        seeds=seeds,
        width=width,
        augmentations=augmentations,
        lr=lr,
        patience=patience,
        seed=seed,
        early_stop=early_stop,
        cuda_graphs=cuda_graphs,
    )
    settings.check()
    paths = expand_inputs(images, IMAGE_EXTENSIONS, output_names(out))
    report = sketch_pipeline.run(
        paths,
        out=out,
        settings=settings,
        model_name=model,
        saliency_model_name=saliency_model,
        mask=mask,
        animate=animate,
        size=size,
        overwrite=overwrite,
        device=common.device,
        trust_checkpoint=trust_checkpoint,
        executor=executor_for(cluster, workers),
        decode=decode,
        batch_images=batch_images,
    )
    show(common, report, lambda: [_sketch_table(report)])
    write_html(html, report)
    report.raise_for_failures()


def _sketch_table(report: Report) -> Table:
    table = Table(title="CLIPasso")
    for column in ("input", "status", "seed", "loss", "steps", "seconds", "sketch"):
        table.add_column(column)
    for row in report.rows():
        if row["status"] == "ok":
            numbers = [f"{row['loss']:.4f}", str(row["iterations"]), f"{row['seconds']:.1f}"]
            table.add_row(escape(row["input"]), "ok", str(row["chosen_seed"]), *numbers, escape(row["svg"]))
        else:
            detail = escape(row.get("error") or row.get("reason", ""))
            table.add_row(escape(row["input"]), row["status"], "-", "-", "-", "-", detail)
    return table


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    flags = {"model_name": "--model", "saliency_model_name": "--saliency-model"}
    command(
        app,
        "sketch",
        help=SKETCH_HELP,
        flags=flags,
        short_help="CLIPasso: an abstract vector sketch (SVG) of each image.",
    )(sketch)
