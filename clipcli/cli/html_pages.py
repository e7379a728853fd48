"""`--html FILE`: one static page per run, built from a command's `Report` beside its table and `--json`.

Each command's page body is made from `report.rows()` and `report.summary`
alone, as the table and the JSON are; the pipelines know nothing of HTML. The
page lists every input: what it made, or why it failed or was skipped.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clipcli.errors import BadInputError
from clipcli.render.html import (
    Html,
    Links,
    bar_chart,
    element,
    image_uri,
    join,
    number,
    page,
    table,
    text,
    write_page,
)

if TYPE_CHECKING:
    from clipcli.runner import Report

Body = Callable[["Report", Links], list[Html]]
MANY_SKIPPED = 20  # more skipped inputs than this (a resumed batch, an indexed folder) are counted by reason


def write_html(path: Path | None, report: Report, asked: str | None = None) -> None:
    """With `--html FILE`, write the page of `report` there atomically; a failure to write names the file (exit 2).

    `asked` is what the run was asked where the report does not say it (retrieve's query), shown under the title.
    """
    if path is None:
        return
    links = Links(path.parent)
    body = BODIES[report.command](report, links)
    question = [element("h2", asked)] if asked else []
    document = page(f"clipcli {report.command}", heading(report), *question, *body, problems(report, links))
    try:
        write_page(path, document)
    except OSError as err:
        raise BadInputError(f"cannot write the page: {err.strerror or err}", path) from None


def heading(report: Report) -> Html:
    counts = ", ".join(f"{count} {status}" for status, count in report.counts().items())
    settings = table(("setting", "value"), flat_summary(report.summary))
    return join([element("h1", f"clipcli {report.command}"), element("p", counts), settings])


def flat_summary(summary: dict[str, Any], prefix: str = "") -> Iterable[tuple[str, str]]:
    """The summary's settings as `(name, value)` text: nested ones as `outer.inner`; long lists and records left out."""
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from flat_summary(value, f"{name}.")
        elif isinstance(value, list | tuple):
            if len(value) <= 16 and all(not isinstance(item, dict | list) for item in value):
                yield name, ", ".join(map(str, value))
        else:
            yield name, "-" if value is None else str(value)


def problems(report: Report, links: Links) -> Html:
    """Every input that failed, with its error, and every skipped one with the reason (counted by reason if many)."""
    rows = [row for row in report.rows() if row["status"] != "ok"] + report.summary.get("image_failures", [])
    if not rows:
        return Html("")
    failed = [row for row in rows if row["status"] == "failed"]
    cells: list[tuple[Html | str, Html, str]] = [
        (source(links, row["input"]), status("failed"), row["error"]) for row in failed
    ]
    skipped = [row for row in rows if row["status"] == "skipped"]
    if len(skipped) > MANY_SKIPPED:
        reasons = Counter(row["reason"] for row in skipped)
        cells += [(f"{count} inputs", status("skipped"), reason) for reason, count in reasons.items()]
    else:
        cells += [(source(links, row["input"]), status("skipped"), row["reason"]) for row in skipped]
    return join([element("h2", "Failed and skipped inputs"), table(("input", "status", "why"), cells)])


def status(name: str) -> Html:
    return element("span", name, class_=name)


def ok_rows(report: Report) -> list[dict[str, Any]]:
    return [row for row in report.rows() if row["status"] == "ok"]


def source(links: Links, name: str) -> Html:
    """An input's name, linked to the file where it is one (an HDF5 shape or a bad path is just named)."""
    return links.link(name, name) if os.path.isfile(name) else text(name)


def files(links: Links, row: dict[str, Any], keys: Iterable[str]) -> Html:
    """Links to a row's output files, by the names their keys give."""
    return join(links.link(row[key], f"[{key}] ") for key in keys if row.get(key))


def ranked(entries: Iterable[dict[str, Any]], name: str, score: str, digits: int = 4) -> Html:
    return table((name, score), ((entry[name], number(entry[score], digits)) for entry in entries))


def sketch_body(report: Report, links: Links) -> list[Html]:
    rows = [
        (
            links.thumbnail(row["input"], row["input"]),
            links.thumbnail(row["png"], files(links, row, ("svg", "png", "json", "animation", "mask"))),
            str(row["chosen_seed"]),
            number(row["loss"]),
            str(row["iterations"]),
            number(row["seconds"], 1),
        )
        for row in ok_rows(report)
    ]
    return [table(("original", "sketch", "seed", "loss", "steps", "seconds"), rows)]


def depth_body(report: Report, links: Links) -> list[Html]:
    bins = report.summary.get("bins") or [0.0]
    scale = (
        f"Colours span the depth bins' range, {min(bins):.2f} m to {max(bins):.2f} m "
        f"({report.summary.get('colormap', '')}); each picture carries its legend."
    )
    rows = [
        (
            links.thumbnail(row["input"], row["input"]),
            links.thumbnail(row["color"], files(links, row, ("color", "png", "npy"))),
            *(number(row[key], 2) for key in ("min", "mean", "max")),
        )
        for row in ok_rows(report)
    ]
    return [element("p", scale), table(("image", "depth", "min m", "mean m", "max m"), rows)]


def audio_body(report: Report, links: Links) -> list[Html]:
    return [audio_section(row, links) for row in ok_rows(report)]


def audio_section(row: dict[str, Any], links: Links) -> Html:
    facts = f"{row['duration_s']:.2f} s" + (", silent: its tags mean nothing" if row["silent"] else "")
    parts = [element("h2", source(links, row["input"])), element("p", facts), ranked(row["tags"], "label", "score")]
    if row["windows"]:
        parts.append(element("p", f"{row['tags'][0]['label']} in each window:"))
        parts.append(window_chart(row["tags"][0]["label"], row["windows"]))
    if "images" in row:
        pictures = (
            links.thumbnail(entry["image"], join([entry["image"], f" {entry['score']:.3f}"])) for entry in row["images"]
        )
        parts.append(element("div", *pictures, class_="figures"))
    if "texts" in row:
        parts.append(ranked(row["texts"], "text", "score", 3))
    return join(parts)


def window_chart(label: str, windows: list[dict[str, Any]]) -> Html:
    """The clip's top tag's score in each window (0 where it is not among that window's top tags)."""
    scores = [next((tag["score"] for tag in window["tags"] if tag["label"] == label), 0.0) for window in windows]
    titles = [
        f"{window['start_s']:.2f}-{window['end_s']:.2f} s: {label} {score:.3f}; top {window['tags'][0]['label']}"
        for window, score in zip(windows, scores, strict=True)
    ]
    return bar_chart(scores, titles)


def top_labels(predictions: Iterable[dict[str, Any]]) -> Html:
    return ranked(predictions, "label", "probability")


def point_body(report: Report, links: Links) -> list[Html]:
    """The top labels of each cloud, beside the views CLIP saw where --save-views wrote them."""
    rows = [
        (
            source(links, row["input"]),
            row.get("label", "-"),
            links.thumbnail(row["views"], files(links, row, ("views",))) if row.get("views") else "-",
            top_labels(row["predictions"]),
        )
        for row in ok_rows(report)
    ]
    return [table(("cloud", "true label", "views (--save-views)", "top labels"), rows)]


def action_body(report: Report, links: Links) -> list[Html]:
    return [action_section(row, links) for row in ok_rows(report)]


def action_section(row: dict[str, Any], links: Links) -> Html:
    """A video's top labels, or its windows' top labels under the timeline plot where --plot drew it."""
    parts = [element("h2", source(links, row["input"]))]
    if row.get("plot"):
        parts.append(links.thumbnail(row["plot"], files(links, row, ("plot",))))
    if "windows" not in row:
        return join([*parts, top_labels(row["predictions"])])
    windows = (
        (number(window["start"], 2), number(window["end"], 2), top_labels(window["predictions"][:3]))
        for window in row["windows"]
    )
    return join([*parts, table(("start s", "end s", "top labels"), windows)])


def vqa_body(report: Report, links: Links) -> list[Html]:
    rows = [(links.thumbnail(row["input"], row["input"]), ranked_answers(row["top"])) for row in ok_rows(report)]
    return [element("h2", report.summary.get("question", "")), table(("image", "answers"), rows)]


def ranked_answers(answers: Iterable[dict[str, Any]]) -> Html:
    rows = ((answer["answer"], number(answer["probability"]), answer["statement"]) for answer in answers)
    return table(("answer", "probability", "statement"), rows)


def retrieve_body(report: Report, links: Links) -> list[Html]:
    """The ranked videos, each with its best frames, each frame opening the video at its time."""
    rows = [
        (str(hit["rank"]), source(links, hit["path"]), number(hit["score"]), segment_text(hit), best_frames(hit, links))
        for hit in report.summary.get("hits", [])
    ]
    return [table(("rank", "video", "score", "segment", "best frames"), rows)]


def segment_text(hit: dict[str, Any]) -> str:
    segment = hit.get("segment")
    return f"{segment['start']:.2f}-{segment['end']:.2f} s" if segment else "-"


def frame_times(hit: dict[str, Any]) -> list[float]:
    """Where a hit's best frames are: its segment's start, peak and end, or the middle without --segments."""
    segment = hit.get("segment")
    return [segment["start"], segment["peak"], segment["end"]] if segment else [hit["duration"] / 2]


def best_frames(hit: dict[str, Any], links: Links) -> Html:
    """Thumbnails of the frames at `frame_times`, each linking to the video at that time (`#t=SECONDS`)."""
    from clipcli.media.video import read_frames
    from clipcli.media.video_probe import probe_video

    times = frame_times(hit)
    try:
        info = probe_video(hit["path"])
        indices = [min(info.frame_count - 1, max(0, round(time * info.fps))) for time in times]
        frames = read_frames(info, indices).frames
    except (BadInputError, OSError, ValueError):
        return text("no preview")
    figures = (
        links.figure(image_uri(frame), hit["path"], f"{time:.2f} s", fragment=f"t={time:.2f}")
        for frame, time in zip(frames, times, strict=True)
    )
    return element("div", *figures, class_="figures")


BODIES: dict[str, Body] = {
    "sketch": sketch_body,
    "depth": depth_body,
    "audio-tag": audio_body,
    "point-classify": point_body,
    "classify-action": action_body,
    "vqa": vqa_body,
    "retrieve": retrieve_body,
}
