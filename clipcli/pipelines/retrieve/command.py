"""`clipcli retrieve`: check the options, refresh the indexes, search them (or only refresh them)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from clipcli import ui
from clipcli.errors import BadInputError, ParameterError
from clipcli.media.decoders import CPU_DECODERS, VIDEO, Decoder, select_decoder
from clipcli.media.images import load_image
from clipcli.pipelines.retrieve.files import check_roots, default_index_dir, walk_videos
from clipcli.pipelines.retrieve.indexing import DEFAULT_FRAMES, SAMPLINGS, UpdateSummary, searchable, update_index
from clipcli.pipelines.retrieve.model import Retriever
from clipcli.pipelines.retrieve.search import check_ann, search
from clipcli.runner import Executor, Report
from clipcli.store.index import VideoIndex, discard_if_damaged


def check_options(top_k: int, frames: int, sampling: str) -> None:
    if top_k < 1:
        raise ParameterError("top_k", f"must be at least 1, got {top_k}")
    if frames < 1:
        raise ParameterError("frames", f"must be at least 1, got {frames}")
    if sampling not in SAMPLINGS:
        raise ParameterError("sampling", f"{sampling!r}: expected one of {', '.join(SAMPLINGS)}")


def index_groups(roots: Sequence[Path], index_dir: Path | None) -> list[tuple[Path, list[Path]]]:
    """(index folder, roots it covers): one shared --index, else one default index per root."""
    if index_dir is not None:
        return [(Path(index_dir).expanduser(), list(roots))]
    return [(default_index_dir(root), [root]) for root in roots]


def open_indexes(
    retriever: Retriever,
    groups: Sequence[tuple[Path, list[Path]]],
    *,
    frames: int,
    sampling: str,
    update: bool,
    reindex: bool = False,
    executor: Executor | None = None,
    decoder: Decoder = CPU_DECODERS[VIDEO],
) -> tuple[list[tuple[VideoIndex, list[Path]]], list[UpdateSummary]]:
    """Open (and unless `update` is false, refresh) each group's index; `reindex` rebuilds a damaged one."""
    opened, summaries = [], []
    try:
        for folder, roots in groups:
            damage = discard_if_damaged(folder, on_wait=ui.notice) if update and reindex else None
            index = VideoIndex(folder, create=update)
            opened.append((index, roots))
            if damage is not None:
                ui.notice(f"{index.db_path}: the index was damaged ({damage}); building it afresh")
            if update:
                files = list(dict.fromkeys(path for root in roots for path in walk_videos(root)))
                summaries.append(
                    update_index(
                        index,
                        retriever,
                        files,
                        roots=roots,
                        frames=frames,
                        sampling=sampling,
                        reindex=reindex,
                        executor=executor,
                        decoder=decoder,
                    )
                )
            elif not searchable(index.identity, retriever.identity(frames, sampling)):
                raise BadInputError(
                    f"index was built with another model or --frames/--sampling ({index.identity}); "
                    "rerun without --no-update to re-embed",
                    folder,
                )
    except BaseException:
        for index, _ in opened:
            index.close()
        raise
    return opened, summaries


def update_report(summaries: Sequence[UpdateSummary], **summary) -> Report:
    """One row per video of every index updated; the updates' counts in `summary["indexes"]`."""
    results = [result for update in summaries for result in update.results]
    return Report("retrieve", results, {**summary, "indexes": [update.as_dict() for update in summaries]})


def update_indexes(
    items: Sequence[str | Path],
    *,
    frames: int = DEFAULT_FRAMES,
    sampling: str = "uniform",
    model_name: str = "ViT-B/32",
    checkpoint: Path | None = None,
    index_dir: Path | None = None,
    reindex: bool = False,
    device: str = "auto",
    trust_checkpoint: bool = False,
    executor: Executor | None = None,
    decode: str = "auto",
) -> Report:
    """Refresh the indexes of `items` (folders or videos) and search nothing: one row per video."""
    check_options(1, frames, sampling)
    decoder = select_decoder(decode, device, VIDEO)
    roots = check_roots(items)
    retriever = Retriever.load(model_name, checkpoint, device, trust_checkpoint=trust_checkpoint)
    opened, summaries = open_indexes(
        retriever,
        index_groups(roots, index_dir),
        frames=frames,
        sampling=sampling,
        update=True,
        reindex=reindex,
        executor=executor,
        decoder=decoder,
    )
    for index, _ in opened:
        index.close()
    return update_report(summaries)


def run(
    items: Sequence[str | Path],
    query: str | None = None,
    image: Path | None = None,
    *,
    top_k: int = 10,
    frames: int = DEFAULT_FRAMES,
    sampling: str = "uniform",
    model_name: str = "ViT-B/32",
    checkpoint: Path | None = None,
    index_dir: Path | None = None,
    update: bool = True,
    reindex: bool = False,
    segments: bool = False,
    device: str = "auto",
    trust_checkpoint: bool = False,
    ann_mode: str = "auto",
    executor: Executor | None = None,
    decode: str = "auto",
) -> Report:
    """Update the indexes of `items` (folders or videos) and rank their videos for the query.

    The report has one row per video the update looked at and the top-k
    videos in `summary["hits"]`, best first.
    """
    check_options(top_k, frames, sampling)
    check_ann(ann_mode)
    decoder = select_decoder(decode, device, VIDEO)
    if (query is None) == (image is None):
        raise BadInputError("give a text QUERY or --image QUERY.jpg (one of them)")
    if query is not None and not query.strip():
        raise BadInputError("the query is empty")
    roots = check_roots(items)
    picture = load_image(image) if image is not None else None
    retriever = Retriever.load(model_name, checkpoint, device, trust_checkpoint=trust_checkpoint)
    if picture is not None:
        embedding = retriever.encode_image(picture)[0]
    else:
        assert query is not None  # one of the two, checked above
        embedding = retriever.encode_text([query])[0]
    opened, summaries = open_indexes(
        retriever,
        index_groups(roots, index_dir),
        frames=frames,
        sampling=sampling,
        update=update,
        reindex=reindex,
        executor=executor,
        decoder=decoder,
    )
    try:
        hits = search(opened, retriever, embedding, top_k, segments, ann_mode=ann_mode)
    finally:
        for index, _ in opened:
            index.close()
    return update_report(summaries, hits=[hit.as_dict() for hit in hits])
