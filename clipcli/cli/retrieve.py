"""`clipcli retrieve` and `clipcli retrieve-eval`: CLIP4Clip text-to-video search and its R@K evaluation."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from clipcli import ui
from clipcli.cli_support import Common, command, show
from clipcli.errors import BadInputError
from clipcli.options import (
    AnnMode,
    Cluster,
    ClusterWorkers,
    Decode,
    DecodeMode,
    FrameSampling,
    Html,
    TopK,
    TrustCheckpoint,
    frames_option,
    model_option,
)

if TYPE_CHECKING:
    from clipcli.runner import Report

# Declared once for retrieve and retrieve-eval, which embed videos the same way.
Frames = Annotated[int, frames_option("(CLIP4Clip's max_frames)")]
Model = Annotated[str, model_option(", for zero-shot meanP (ignored with --checkpoint)")]
Checkpoint = Annotated[
    Path | None, typer.Option("--checkpoint", help="A CLIP4Clip pytorch_model.bin.N (meanP/seqLSTM/seqTransf).")
]

RETRIEVE_HELP = """CLIP4Clip text-to-video search (Luo et al. 2021) over folders of videos.

Usage: FOLDER... QUERY (the text query is the last argument), or
FOLDER... --image QUERY.jpg to query by example image, or
FOLDER... --update-only to refresh the indexes and search nothing.

Zero-shot (default) is CLIP4Clip's meanP on OpenAI CLIP: --frames (12)
frames per video, each CLIP embedding L2-normalised, averaged and
renormalised, ranked by cosine with the query (tokenised as CLIP4Clip does:
at most 30 BPE tokens). --checkpoint loads a CLIP4Clip pytorch_model.bin.N:
its CLIP embeds frames and text, its seqTransf or seqLSTM head pools the
frames (--model is then ignored). tightTransf checkpoints are refused (they
score each text-video pair jointly, so videos cannot be indexed), and so
are --linear_patch 3d ones.

The first run indexes every video under the folders (recursively, by
extension, following symlinks without loops, skipping hidden folders);
later runs embed only new or changed files (size + mtime) and drop deleted
ones. Indexes live in $CLIPCLI_INDEX_HOME, else in
$XDG_DATA_HOME/clipcli/indexes (~/.local/share/clipcli/indexes), one per
folder, named after it plus a hash of its path; --index DIR keeps one index
for all the folders given. A different model, --checkpoint, --frames or
--sampling re-embeds. Videos that fail to decode are reported (exit 4 after
the results) and not retried until they change or --reindex.
--no-update opens the index read-only, so it can be searched where it cannot
be written. A damaged index, a full disk or a read-only index folder when
updating is a one-line error (exit 2); --reindex rebuilds a damaged index.

Sampling: uniform (default) spreads the frames over the whole video, each
distinct frame once; fps is CLIP4Clip's own loader (1 frame per second,
then --frames of those by linspace); --fast snaps each uniform time to the
keyframe at or before it and decodes only keyframes (much faster on long
videos; approximate times, fewer frames when keyframes are sparse).
--segments adds each hit's best-matching time range from frame-level scores
(an addition: CLIP4Clip ranks whole clips). Scores are cosines (CLIP4Clip
scales them by 100; the order is the same). Frames are resized with torch's
antialiased bicubic, about one grey level from PIL's.
"""

ANN_HELP = (
    "auto, on or off: approximate search (needs pip install clipcli\\[faiss]); auto uses it above 100k videos in an "
    "index, on always, off never. A faiss IVF index, built once per change of the index and saved beside it, its "
    "lists scanned calibrated to find 95% of the exact top 10; hits are re-scored exactly. Measured recall@10 vs "
    "exact on random 512-d unit vectors (the worst case): 0.93 at 100k, 0.95 at 1M (0.99 on clustered ones); "
    "per query on 2 CPU cores 11 ms vs 64 ms exact at 100k, 106 ms vs 260 ms at 1M (1 ms if clustered)."
)


def retrieve(
    items: Annotated[
        list[str], typer.Argument(metavar="FOLDER... QUERY", help="Folders or videos, then the text query.")
    ],
    top_k: TopK = 10,
    frames: Frames = 12,
    model: Model = "ViT-B/32",
    checkpoint: Checkpoint = None,
    index: Annotated[
        Path | None, typer.Option("--index", help="Index folder (default: one per searched folder).")
    ] = None,
    no_update: Annotated[bool, typer.Option("--no-update", help="Search the index as it is; embed nothing.")] = False,
    update_only: Annotated[
        bool, typer.Option("--update-only", help="Refresh the indexes and search nothing (no QUERY).")
    ] = False,
    reindex: Annotated[
        bool, typer.Option("--reindex", help="Re-embed every video, failed ones included; rebuild a damaged index.")
    ] = False,
    image: Annotated[Path | None, typer.Option("--image", help="Query by this image instead of text.")] = None,
    segments: Annotated[bool, typer.Option("--segments", help="Also report each hit's best time range.")] = False,
    paths_only: Annotated[bool, typer.Option("--paths-only", "-f", help="One path per line, for pipes.")] = False,
    null: Annotated[
        bool, typer.Option("--null", "-0", help="Paths only, each ended by a NUL byte, for xargs -0 (as find -print0).")
    ] = False,
    sampling: Annotated[
        FrameSampling, typer.Option("--sampling", help="Frames spread evenly, or CLIP4Clip's 1 frame per second.")
    ] = FrameSampling.UNIFORM,
    fast: Annotated[bool, typer.Option("--fast", help="Keyframes near uniform times (approximate).")] = False,
    ann: Annotated[AnnMode, typer.Option("--ann", help=ANN_HELP)] = AnnMode.AUTO,
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
    from clipcli.media.sampling import fast_variant
    from clipcli.pipelines import retrieve as retrieve_pipeline

    if null and common.json:
        raise BadInputError("--null prints paths only; it cannot be combined with --json")
    indexing: dict[str, Any] = dict(
        frames=frames,
        sampling=fast_variant(sampling) if fast else sampling,
        model_name=model,
        checkpoint=checkpoint,
        index_dir=index,
        reindex=reindex,
        device=common.device,
        trust_checkpoint=trust_checkpoint,
        decode=decode,
    )
    if update_only:
        _check_update_only(items, image, no_update, paths_only or null)
        report = retrieve_pipeline.update_indexes(items, **indexing, executor=executor_for(cluster, workers))
    else:
        items, query = _split_query(items, image)
        report = retrieve_pipeline.run(
            items,
            query,
            image,
            top_k=top_k,
            update=not no_update,
            segments=segments,
            ann_mode=ann,
            **indexing,
            executor=executor_for(cluster, workers),
        )
    for update in report.summary["indexes"]:
        ui.notice(retrieve_pipeline.summary_line(update))
    if update_only:
        show(common, report, lambda: [_update_table(report)])
    elif (paths_only or null) and not common.json:
        _print_paths([hit["path"] for hit in report.summary["hits"]], b"\0" if null else b"\n")
    else:
        show(common, report, lambda: [_retrieve_table(report.summary["hits"], segments)])
    write_html(html, report, asked=None if update_only else query or f"like {image}")
    report.raise_for_failures()


def _split_query(items: list[str], image: Path | None) -> tuple[list[str], str | None]:
    """The folders and the text query (the last argument), or all folders with --image."""
    if image is not None:
        return items, None
    if len(items) < 2:
        raise BadInputError("give one or more folders, then the query (or use --image QUERY.jpg)")
    return items[:-1], items[-1]


def _check_update_only(items: list[str], image: Path | None, no_update: bool, paths: bool) -> None:
    """--update-only takes folders and videos only, and none of the options of a search that does not happen."""
    clashing = [flag for flag, given in (("--image", image is not None), ("--no-update", no_update),
                                         ("--paths-only/--null", paths)) if given]  # fmt: skip
    if clashing:
        raise BadInputError(f"--update-only searches nothing; it cannot be combined with {clashing[0]}")
    if not os.path.exists(os.path.expanduser(items[-1])):
        raise BadInputError(f"--update-only takes no QUERY: {items[-1]!r} is not a folder or video")


def _print_paths(paths: list[str], end: bytes) -> None:
    """Each path as its file-system bytes (any name prints, UTF-8 or not), followed by `end`."""
    sys.stdout.flush()
    sys.stdout.buffer.write(b"".join(os.fsencode(path) + end for path in paths))
    sys.stdout.buffer.flush()


def _retrieve_table(hits: list[dict], segments: bool) -> Table:
    table = Table(title="CLIP4Clip retrieval" if hits else "CLIP4Clip retrieval: no indexed videos")
    for column in ("rank", "score", "duration", *(["best segment"] if segments else [])):
        table.add_column(column, justify="left" if column == "best segment" else "right", no_wrap=True)
    table.add_column("path", overflow="fold")
    for hit in hits:
        cells = [str(hit["rank"]), f"{hit['score']:.4f}", f"{hit['duration']:.1f} s"]
        if segments:
            cells.append(f"{hit['segment']['start']:.1f}-{hit['segment']['end']:.1f} s")
        table.add_row(*cells, escape(hit["path"]))
    return table


def _update_table(report: Report) -> Table:
    """The videos embedded or failed in this run; the unchanged ones are counted in the title."""
    unchanged = report.counts()["skipped"]
    table = Table(title=f"CLIP4Clip index update ({unchanged} video(s) unchanged)")
    table.add_column("video", overflow="fold")
    table.add_column("status")
    table.add_column("frames", justify="right")
    table.add_column("duration", justify="right", overflow="fold")
    for row in report.rows():
        if row["status"] == "ok":
            table.add_row(escape(row["input"]), "ok", str(row["frames"]), f"{row['duration']:.1f} s")
        elif row["status"] == "failed":
            table.add_row(escape(row["input"]), "failed", "-", escape(row["error"]))
    return table


def retrieve_eval(
    csv_file: Annotated[Path, typer.Argument(metavar="CSV", help="video_id,sentence rows (MSR-VTT style).")],
    videos: Annotated[Path, typer.Argument(metavar="VIDEOS_DIR", help="Folder holding VIDEO_ID.mp4 (any video type).")],
    frames: Frames = 12,
    model: Model = "ViT-B/32",
    checkpoint: Checkpoint = None,
    index: Annotated[
        Path | None, typer.Option("--index", help="Index folder (default: one for VIDEOS_DIR), reused by retrieve.")
    ] = None,
    sampling: Annotated[
        FrameSampling, typer.Option("--sampling", help="Frames spread evenly, or CLIP4Clip's 1 frame per second.")
    ] = FrameSampling.UNIFORM,
    trust_checkpoint: TrustCheckpoint = False,
    cluster: Cluster = None,
    workers: ClusterWorkers = None,
    *,
    common: Common,
) -> None:
    """Text-to-video R@1/5/10, MdR, MnR (CLIP4Clip's metrics) on a CSV of captions and a folder of videos."""
    from clipcli.cluster import executor_for
    from clipcli.pipelines import retrieve as retrieve_pipeline

    report = retrieve_pipeline.evaluate(
        csv_file,
        videos,
        frames=frames,
        sampling=sampling,
        model_name=model,
        checkpoint=checkpoint,
        index_dir=index,
        device=common.device,
        trust_checkpoint=trust_checkpoint,
        executor=executor_for(cluster, workers),
    )
    show(common, report, lambda: [_retrieve_eval_table(report.summary)])
    report.raise_for_failures()


def _retrieve_eval_table(report: dict) -> Table:
    metrics = report["text_to_video"]
    table = Table(title=f"CLIP4Clip {report['head']}: {report['evaluated']} sentences, {report['videos']} videos")
    for column in ("", "R@1", "R@5", "R@10", "MdR", "MnR"):
        table.add_column(column, justify="right")
    table.add_row("this run", *(f"{metrics[key]:.1f}" for key in ("R@1", "R@5", "R@10", "MdR", "MnR")))
    for name, paper in report["paper_msrvtt_1ka"].items():
        cells = (f"{paper[key]:.1f}" if key in paper else "-" for key in ("R@1", "R@5", "R@10", "MdR", "MnR"))
        table.add_row(f"paper, MSR-VTT 1k-A, {name}", *cells)
    return table


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    command(
        app,
        "retrieve",
        help=RETRIEVE_HELP,
        short_help="CLIP4Clip text-to-video search over folders.",
        flags={"ann_mode": "--ann", "model_name": "--model"},
    )(retrieve)
    command(app, "retrieve-eval", flags={"model_name": "--model"})(retrieve_eval)
