"""Self-contained static HTML pages: escaped text, inlined thumbnails, links relative to the page.

A page must open from disk with no server and stay safe whatever the input
files are called, so every piece of text goes through `text` (names that are
not UTF-8 show with replacement characters), every link through `Links.href`
(relative to the page's folder, percent-encoded from the name's bytes), and
pictures are inlined as small `data:` thumbnails. Markup is built from `Html`
pieces: a plain `str` handed to `element` is always escaped, so only markup
this module made is ever written as markup. Pillow and NumPy load only when a
picture is inlined, so importing this costs a command's start-up nothing.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from clipcli.store.atomic import atomic_write

if TYPE_CHECKING:
    import numpy as np

THUMBNAIL_SIDE = 192

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fff}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}
img{display:block;max-width:256px;height:auto;background:#eee}
.figures{display:flex;gap:8px;flex-wrap:wrap}
figure{margin:0}figcaption{font-size:.85em;color:#555}
.num{text-align:right;font-variant-numeric:tabular-nums}
.failed{color:#a00}.skipped{color:#666}
.bars rect{fill:#4a7ab8}.bars text{font-size:10px;fill:#222}
""".strip()


class Html(str):
    """Markup that is already safe to write as it is (made by this module, never taken from a file)."""


def text(value: object) -> Html:
    """`value` as escaped text; characters of a name that was not UTF-8 show as U+FFFD."""
    readable = os.fsencode(value).decode("utf-8", "replace") if isinstance(value, str | os.PathLike) else str(value)
    return Html(html.escape(readable, quote=True))


def join(pieces: Iterable[Html | str]) -> Html:
    """Pieces side by side; plain strings among them are escaped."""
    return Html("".join(piece if isinstance(piece, Html) else text(piece) for piece in pieces))


def element(name: str, *content: Html | str, **attributes: object) -> Html:
    """`<name attributes>content</name>`; attribute values and plain-string content are escaped.

    A trailing underscore in an attribute's keyword is dropped (`class_` -> `class`); None leaves it out.
    """
    return Html(f"<{name}{_attributes(attributes)}>{join(content)}</{name}>")


def void(name: str, **attributes: object) -> Html:
    """An element without content or closing tag (`img`, `meta`)."""
    return Html(f"<{name}{_attributes(attributes)}>")


def _attributes(attributes: dict[str, object]) -> str:
    return "".join(f' {key.rstrip("_")}="{text(value)}"' for key, value in attributes.items() if value is not None)


def table(header: Sequence[str], rows: Iterable[Sequence[Html | str]]) -> Html:
    head = element("tr", *(element("th", cell) for cell in header))
    body = [element("tr", *(element("td", cell) for cell in row)) for row in rows]
    return element("table", head, *body)


def number(value: float, digits: int = 4) -> Html:
    return element("span", f"{value:.{digits}f}", class_="num")


@dataclass(frozen=True)
class Links:
    """Links from a page in `folder` to files named as the command named them (relative to the working folder)."""

    folder: Path

    def href(self, target: str | Path, fragment: str = "") -> str:
        """`target` relative to the page's folder, percent-encoded from its bytes (so any name works)."""
        relative = os.path.relpath(os.path.abspath(target), os.path.abspath(self.folder))
        encoded = quote(os.fsencode(relative).replace(os.sep.encode(), b"/"), safe="/")
        return f"{encoded}#{quote(fragment, safe='=.,')}" if fragment else encoded

    def link(self, target: str | Path, label: Html | str | None = None, fragment: str = "") -> Html:
        return element("a", Path(target).name if label is None else label, href=self.href(target, fragment))

    def thumbnail(self, target: str | Path, caption: Html | str = "") -> Html:
        """A figure: the image file's inlined thumbnail (or "no preview") linking to the file, with a caption."""
        return self.figure(image_file_uri(target), target, caption)

    def figure(self, source: Html | None, target: str | Path, caption: Html | str = "", fragment: str = "") -> Html:
        """A figure: the `data:` picture `source` (or "no preview") linking to `target`, with a caption."""
        picture = void("img", src=source, alt=Path(target).name) if source else element("span", "no preview")
        link = element("a", picture, href=self.href(target, fragment))
        return element("figure", link, element("figcaption", caption))


def image_uri(pixels: np.ndarray, side: int = THUMBNAIL_SIDE) -> Html:
    """A `data:` URI of an `[H,W,3]` (or `[H,W]`) uint8 picture shrunk to `side` pixels at most: JPEG, PNG if grey."""
    import numpy as np
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(pixels))
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    kind = "png" if image.mode in ("L", "LA", "RGBA") else "jpeg"
    image.save(buffer, format=kind.upper(), **({"quality": 85} if kind == "jpeg" else {}))
    return Html(f"data:image/{kind};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}")


def image_file_uri(path: str | Path, side: int = THUMBNAIL_SIDE) -> Html | None:
    """The thumbnail of an image file as a `data:` URI, or None where it cannot be read."""
    from clipcli.errors import BadInputError
    from clipcli.media.images import load_image

    try:
        return image_uri(load_image(path), side)
    except (BadInputError, OSError, ValueError):
        return None


def bar_chart(values: Sequence[float], titles: Sequence[str], *, width: int = 320, height: int = 60) -> Html:
    """An inline SVG of bars in [0, 1], one per value, each with its title as a tooltip."""
    step = width / max(1, len(values))
    bars = []
    for index, (value, title) in enumerate(zip(values, titles, strict=True)):
        tall = max(0.0, min(1.0, float(value))) * (height - 12)
        box = {"x": f"{index * step + 1:.1f}", "y": f"{height - tall:.1f}", "width": f"{max(1.0, step - 2):.1f}"}
        bars.append(element("rect", element("title", title), **box, height=f"{tall:.1f}"))
    return element("svg", *bars, class_="bars", width=width, height=height, viewBox=f"0 0 {width} {height}",
                   xmlns="http://www.w3.org/2000/svg", role="img")  # fmt: skip


def page(title: str, *sections: Html) -> Html:
    """The whole document: one inline style sheet, no scripts, no external resources."""
    head = join([Html('<meta charset="utf-8">'), element("title", title), element("style", Html(STYLE))])
    return Html(f"<!DOCTYPE html>\n{element('html', element('head', head), element('body', *sections), lang='en')}\n")


def write_page(path: str | Path, document: Html) -> None:
    """Write the page atomically: a reader sees the old page or the whole new one."""
    with atomic_write(path, "w", encoding="utf-8") as handle:
        handle.write(document)
