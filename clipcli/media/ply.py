"""What trimesh's PLY reader leaves to us: header checks, ascii truncation, binary faces of mixed sizes.

trimesh reads PLY headers leniently, reads a cut-short ascii row without
complaint, and sizes a binary element by its first row's list lengths, so a
binary mesh that mixes triangles and quads (Blender writes its polygons as
they are) fails there. `read_binary_ply_row_by_row` reads those files, and says
which element a truncated one is cut in: only vertices' x, y, z and the faces'
index lists.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple

import numpy as np

_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip
ByteOrder = Literal["<", ">"]  # struct and numpy spelling of little and big endian
_BYTE_ORDERS: dict[str, ByteOrder | None] = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}
_END_HEADER = re.compile(rb"^end_header[ \t]*(?:\r?\n|\Z)", re.M)
_FACE_LISTS = ("vertex_indices", "vertex_index")


class PlyError(Exception):
    """A PLY file this module refuses; the message says why, without the path."""


class PlyProperty(NamedTuple):
    name: str
    dtype: np.dtype  # of the value, or of each list item
    count_dtype: np.dtype | None  # of a list's length; None for a scalar


class PlyElement(NamedTuple):
    name: str
    row_count: int
    properties: list[PlyProperty]


class PlyHeader(NamedTuple):
    elements: list[PlyElement]
    byte_order: ByteOrder | None  # None for ascii
    body_offset: int
    notes: tuple[str, ...]  # header lines read past, for the caller to warn about


def parse_ply_header(data: bytes) -> PlyHeader:
    """A PLY 1.0 header with x, y, z vertices, or PlyError.

    A line that starts with no PLY keyword is read as a comment and noted:
    Blender 2.47 wrote its credit line without the 'comment' keyword.
    """
    if not re.match(rb"ply[ \t]*\r?\n", data):
        raise PlyError("not a PLY file: header does not start with 'ply'")
    end = _END_HEADER.search(data)
    if end is None:
        raise PlyError("not a PLY file: header has no 'end_header' line")
    lines = data[: end.start()].decode("latin-1").splitlines()
    if lines[1:2] == [] or lines[1].split()[:1] != ["format"]:
        raise PlyError("PLY header has no 'format' line right after 'ply'")  # where trimesh reads it
    byte_order = _format(lines[1].split())
    elements: list[PlyElement] = []
    notes = []
    for line_number, line in enumerate(lines[2:], start=3):
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] not in ("element", "property"):
            notes.append(f"PLY header line {line_number} has no known keyword; read as a comment: {line.strip()!r}")
            continue
        try:
            if words[0] == "element":
                elements.append(PlyElement(words[1], _count(words[2]), []))
            else:
                elements[-1].properties.append(_property(words))
        except (ValueError, IndexError, KeyError):
            raise PlyError(f"bad PLY header line {line_number}: {line.strip()!r}") from None
    vertex = next((element for element in elements if element.name == "vertex"), None)
    if vertex is None or not set("xyz") <= {prop.name for prop in vertex.properties}:
        raise PlyError("PLY header declares no vertex element with x, y, z properties")
    return PlyHeader(elements, byte_order, end.end(), tuple(notes))


def read_binary_ply_row_by_row(data: bytes, header: PlyHeader) -> tuple[np.ndarray, np.ndarray]:
    """Vertices [V, 3] float64 and fan-triangulated faces [T, 3] int64 of a binary PLY, row by row.

    Elements without lists are skipped whole; those with lists are walked one row
    at a time, as each row's list lengths decide where the next row starts.
    """
    assert header.byte_order is not None, "an ascii body has no binary rows"
    wanted = [i for i, element in enumerate(header.elements) if element.name in ("vertex", "face")]
    offset = header.body_offset
    columns: dict[str, Mapping[str, np.ndarray | list]] = {}
    for element in header.elements[: wanted[-1] + 1]:  # what follows the last wanted element is never read
        values, offset = _read_rows(data, offset, element, header.byte_order)
        columns.setdefault(element.name, values)
    vertices = np.stack([np.asarray(columns["vertex"][axis], dtype=np.float64) for axis in "xyz"], axis=1)
    face_columns = columns.get("face", {})
    faces: Sequence | np.ndarray = next((face_columns[name] for name in _FACE_LISTS if name in face_columns), [])
    return vertices, fan_triangulate(faces)


def check_ascii_rows(data: bytes, header: PlyHeader) -> None:
    """An ascii body must hold a line per declared row, and its last row every value: trimesh reads short rows silently.

    trimesh drops a face whose list is cut short and reads a row per line, so a
    file cut anywhere is caught here by its line count and its last row.
    """
    last = next((element for element in reversed(header.elements) if element.row_count), None)
    if last is None:
        return
    rows = sum(element.row_count for element in header.elements)
    body = data[header.body_offset :]
    line_ends = np.flatnonzero(np.frombuffer(body, dtype=np.uint8) == ord("\n"))
    line_ends = np.append(line_ends, len(body)) if not body.endswith(b"\n") else line_ends
    if len(line_ends) < rows:
        raise PlyError(f"truncated PLY data: {rows} rows declared, {len(line_ends)} lines after the header")
    start = line_ends[rows - 2] + 1 if rows > 1 else 0
    if not _row_is_complete(body[start : line_ends[rows - 1]].split(), last):
        raise PlyError(f"truncated PLY data: row {rows} (the last of element {last.name!r}) is incomplete")


def _row_is_complete(tokens: list[bytes], element: PlyElement) -> bool:
    """Whether one ascii row holds a value for every property (list lengths read from the row)."""
    position = 0
    for prop in element.properties:
        if prop.count_dtype is not None:
            if position >= len(tokens) or not tokens[position].isdigit():
                return False
            position += int(tokens[position])
        position += 1
    return position <= len(tokens)


def fan_triangulate(polygons: Sequence | np.ndarray) -> np.ndarray:
    """Polygons (index sequences) split into triangles (c0, ci, ci+1): [T, 3] int64; fewer than 3 corners give none."""
    counts = np.array([len(polygon) for polygon in polygons], dtype=np.int64)
    indices = np.concatenate([np.asarray(polygon, dtype=np.int64) for polygon in polygons] or [np.empty(0, np.int64)])
    per_polygon = np.maximum(counts - 2, 0)
    first = np.repeat(np.cumsum(counts) - counts, per_polygon)
    step = np.arange(per_polygon.sum()) - np.repeat(np.cumsum(per_polygon) - per_polygon, per_polygon) + 1
    return np.stack([indices[first], indices[first + step], indices[first + step + 1]], axis=1)


def _format(words: list[str]) -> ByteOrder | None:
    """The byte order of 'format ascii|binary_little_endian|binary_big_endian 1.0'; 1.0 is the only version."""
    if len(words) != 3 or words[1] not in _BYTE_ORDERS:
        raise PlyError(f"bad PLY format line: {' '.join(words)!r}")
    try:
        version = float(words[2])
    except ValueError:
        version = None
    if version != 1.0:
        raise PlyError(f"unsupported PLY format version {words[2]!r}: only 1.0 exists")
    return _BYTE_ORDERS[words[1]]


def _count(word: str) -> int:
    count = int(word)
    if count < 0:
        raise ValueError
    return count


def _property(words: list[str]) -> PlyProperty:
    """'property float x' or 'property list uchar int vertex_indices'."""
    if words[1] == "list":
        return PlyProperty(words[4], np.dtype(_TYPES[words[3]]), np.dtype(_TYPES[words[2]]))
    if len(words) != 3:
        raise ValueError
    return PlyProperty(words[2], np.dtype(_TYPES[words[1]]), None)


def _read_rows(
    data: bytes, offset: int, element: PlyElement, byte_order: ByteOrder
) -> tuple[Mapping[str, np.ndarray | list], int]:
    """One binary element's values by property name (a list per row for list properties), and where it ends."""
    if all(prop.count_dtype is None for prop in element.properties):
        dtype = np.dtype([(f"p{i}", prop.dtype.newbyteorder(byte_order)) for i, prop in enumerate(element.properties)])
        end = offset + dtype.itemsize * element.row_count
        if end > len(data):
            raise PlyError(f"truncated PLY data in element {element.name!r}")
        records = np.frombuffer(data, dtype=dtype, count=element.row_count, offset=offset)
        return {prop.name: records[f"p{i}"] for i, prop in enumerate(element.properties)}, end
    values: dict[str, list] = {prop.name: [] for prop in element.properties}
    try:
        for _ in range(element.row_count):
            for prop in element.properties:
                length = 1
                if prop.count_dtype is not None:
                    (length,) = struct.unpack_from(byte_order + prop.count_dtype.char, data, offset)
                    offset += prop.count_dtype.itemsize
                if length < 0:
                    raise PlyError(f"negative list length {length} in PLY element {element.name!r}")
                row = struct.unpack_from(f"{byte_order}{length}{prop.dtype.char}", data, offset)
                values[prop.name].append(row if prop.count_dtype is not None else row[0])
                offset += length * prop.dtype.itemsize
    except struct.error:
        raise PlyError(f"truncated PLY data in element {element.name!r}") from None
    return values, offset
