"""SVG files of black cubic strokes, written as diffvg's `save_svg` writes CLIPasso's sketches.

One `<path d="M P0 C P1 P2 P3">` per stroke on a `size` x `size` canvas,
`stroke-width` = 2 x the half-width, round caps and joins, no fill. Coordinates
are written as the shortest decimal that reads back to the same float32, so a
sketch survives a round trip through its SVG exactly.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np

from clipcli.errors import BadInputError
from clipcli.store.atomic import atomic_write

SVG_NAMESPACE = "http://www.w3.org/2000/svg"
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_CUBIC_PATH = re.compile(rf"^\s*M\s*({_NUMBER})[\s,]*({_NUMBER})\s*C" + rf"[\s,]*({_NUMBER})" * 6 + r"\s*$")


def _number(value: float) -> str:
    return np.format_float_positional(np.float32(value), unique=True, trim="-")


def svg_text(points: np.ndarray, width: float = 1.5, size: int = 224) -> str:
    """The SVG document for strokes `[N, 4, 2]` (pixels) of half-width `width`."""
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 3 or points.shape[1:] != (4, 2):
        raise ValueError(f"points must be [N, 4, 2], got {points.shape}")
    style = (
        f'fill="none" stroke="black" stroke-width="{_number(2 * width)}" stroke-linecap="round" stroke-linejoin="round"'
    )
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="{SVG_NAMESPACE}" version="1.1" width="{size}" height="{size}" viewBox="0 0 {size} {size}">',
    ]
    for stroke in points:
        (x0, y0), (x1, y1), (x2, y2), (x3, y3) = ((_number(x), _number(y)) for x, y in stroke)
        lines.append(f'  <path d="M {x0} {y0} C {x1} {y1} {x2} {y2} {x3} {y3}" {style}/>')
    lines.append("</svg>")
    return "\n".join(lines) + "\n"


def write_svg(path: str | Path, points: np.ndarray, width: float = 1.5, size: int = 224) -> None:
    """Write strokes `[N, 4, 2]` to `path` atomically."""
    with atomic_write(path, "w") as handle:
        handle.write(svg_text(points, width, size))


def read_svg(path: str | Path) -> tuple[np.ndarray, float, int]:
    """Strokes `[N, 4, 2]` float32, half-width and canvas size of a sketch SVG (ours or diffvg's).

    Only single-cubic paths (`M x y C x y x y x y`) are understood: that is all
    a CLIPasso sketch holds.
    """
    try:
        root = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, OSError) as err:
        raise BadInputError(f"not a readable SVG ({err})", path) from err
    if root.tag not in ("svg", f"{{{SVG_NAMESPACE}}}svg"):
        raise BadInputError("not an SVG document", path)
    size = int(float(root.get("width", "224").removesuffix("px")))
    strokes, widths = [], []
    for element in root.iter():
        if element.tag not in ("path", f"{{{SVG_NAMESPACE}}}path"):
            continue
        match = _CUBIC_PATH.match(element.get("d", ""))
        if match is None:
            raise BadInputError(f"path {element.get('d', '')[:60]!r} is not one cubic (M x y C ...)", path)
        strokes.append(np.array([float(v) for v in match.groups()], np.float32).reshape(4, 2))
        widths.append(float(element.get("stroke-width", "3")))
    points = np.stack(strokes) if strokes else np.zeros((0, 4, 2), np.float32)
    return points, (widths[0] / 2 if widths else 1.5), size
