"""Read point clouds and meshes as [N, 3] float32 coordinates.

PointCLIP only looks at coordinates, so every reader keeps x, y, z and skips the
rest (normals, colours, other elements). Meshes become points by area-weighted
surface sampling, so a mesh and a scan of the same shape give the same kind of
cloud whatever the tessellation. Readers work on the file's bytes and parse
them with whole-array numpy operations; Python loops run only over header
lines, and over faces in the rare files whose polygons differ in size.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from clipcli.errors import BadInputError

SUPPORTED_POINT_EXTENSIONS = (".ply", ".pcd", ".xyz", ".txt", ".csv", ".npy", ".npz", ".off", ".obj")


class PointCloudWarning(UserWarning):
    """A point-cloud file was read, but some of it had to be dropped."""


class _Malformed(Exception):
    """A reader's complaint about file contents; `load_mesh` adds the file name."""


class _Ragged(NamedTuple):
    """Variable-length lists (PLY list properties, polygon faces): all values, and each list's length."""

    values: np.ndarray
    counts: np.ndarray


class _Geometry(NamedTuple):
    """What a reader found; `notes` are header oddities it read past, for `load_mesh` to warn about."""

    vertices: np.ndarray  # [V, 3] float64
    polygons: _Ragged | None
    notes: tuple[str, ...] = ()


def load_points(path: str | Path, *, mesh_samples: int = 10_000, seed: int = 0) -> np.ndarray:
    """Read a point cloud, or sample `mesh_samples` points from a mesh's surface: [N, 3] float32.

    Rows with NaN or infinite coordinates are dropped with a PointCloudWarning; a
    file left with no points raises BadInputError. Sampling is seeded, so the same
    file and seed give the same points.
    """
    if mesh_samples < 1:
        raise BadInputError(f"mesh_samples must be at least 1, got {mesh_samples}")
    path = Path(path)
    vertices, triangles = load_mesh(path)
    finite = np.isfinite(vertices).all(axis=1)
    if triangles is None:
        return _finite_points(vertices, finite, path)
    usable = finite[triangles].all(axis=1)
    if not finite.all():
        dropped = f"{np.count_nonzero(~finite)} of {len(vertices)} vertices with NaN or infinite coordinates"
        _warn(path, f"dropped {dropped} and the {np.count_nonzero(~usable)} triangles that use them", stacklevel=2)
    if not usable.any():
        raise BadInputError("mesh has no triangle whose vertices are all finite", path)
    try:
        return sample_mesh_surface(vertices, triangles[usable], mesh_samples, np.random.default_rng(seed))
    except ValueError as error:
        raise BadInputError(str(error), path) from None


def load_mesh(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a file's vertices [V, 3] float32 and its faces fan-triangulated to [T, 3] int64.

    Faces are None for point clouds (and for meshes whose faces have fewer than
    three corners). Nothing is dropped here: that is `load_points`' job.
    """
    path = Path(path)
    reader = _reader_for(path)
    data = _read_bytes(path)
    try:
        vertices, polygons, notes = _Geometry(*reader(data))
    except _Malformed as error:
        raise BadInputError(str(error), path) from None
    for note in notes:
        _warn(path, note, stacklevel=2)
    triangles = None if polygons is None else fan_triangulate(polygons.values, polygons.counts)
    if triangles is not None and len(triangles):
        _check_indices(triangles, len(vertices), path)
    else:
        triangles = None
    with np.errstate(over="ignore"):  # doubles beyond float32 become inf and are dropped later
        return vertices.astype(np.float32), triangles


def sample_mesh_surface(
    vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator | int | None
) -> np.ndarray:
    """Draw `n` points uniformly over a mesh's surface: [n, 3] float32.

    A triangle is picked with probability proportional to its area, and a point
    inside it with barycentric weights (1 - sqrt(u), sqrt(u) (1 - v), sqrt(u) v),
    which is uniform over the triangle. `faces` is [F, k] with k >= 3; polygons
    are fan-triangulated. Raises ValueError for a mesh of zero area.
    """
    if n < 0:
        raise ValueError(f"number of samples must be non-negative, got {n}")
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    if faces.ndim != 2 or faces.shape[1] < 3:
        raise ValueError(f"faces must be [F, k] with k >= 3, got shape {faces.shape}")
    if faces.shape[1] > 3:
        faces = fan_triangulate(faces.ravel(), np.full(len(faces), faces.shape[1]))
    corners = vertices[faces]  # [F, 3, 3]
    areas = triangle_areas(corners)
    cumulative = np.cumsum(areas)
    if not (len(cumulative) and cumulative[-1] > 0 and np.isfinite(cumulative[-1])):
        raise ValueError("mesh has zero surface area, so no surface points can be sampled")
    rng = np.random.default_rng(rng)
    chosen = np.searchsorted(cumulative, rng.random(n) * cumulative[-1], side="right")
    chosen = np.minimum(chosen, len(areas) - 1)  # r * total can round up to total
    u, v = rng.random((2, n))
    root_u = np.sqrt(u)
    weights = np.stack([1.0 - root_u, root_u * (1.0 - v), root_u * v], axis=1)
    return np.einsum("nk,nkd->nd", weights, corners[chosen]).astype(np.float32)


def triangle_areas(corners: np.ndarray) -> np.ndarray:
    """Areas of triangles given as corners [T, 3, 3]: half the cross product's length."""
    edges_a = corners[:, 1] - corners[:, 0]
    edges_b = corners[:, 2] - corners[:, 0]
    return 0.5 * np.linalg.norm(np.cross(edges_a, edges_b), axis=1)


def fan_triangulate(indices: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Split polygons into triangles (c0, ci, ci+1): [T, 3] int64.

    `indices` holds every polygon's corner indices back to back and `counts`
    each polygon's corner count; polygons with fewer than 3 corners give none.
    """
    indices = np.asarray(indices, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    starts = np.cumsum(counts) - counts
    per_polygon = np.maximum(counts - 2, 0)
    owner = np.repeat(np.arange(len(counts)), per_polygon)
    first = starts[owner]
    step = np.arange(per_polygon.sum()) - np.repeat(np.cumsum(per_polygon) - per_polygon, per_polygon) + 1
    return np.stack([indices[first], indices[first + step], indices[first + step + 1]], axis=1)


# --- shared checks ----------------------------------------------------------------------------


def _reader_for(path: Path) -> Callable[[bytes], _Geometry]:
    """The reader for a file's extension (case-insensitive)."""
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        supported = ", ".join(SUPPORTED_POINT_EXTENSIONS)
        raise BadInputError(f"unsupported point-cloud extension {path.suffix or '(none)'!r}; use {supported}", path)
    return reader


def _read_bytes(path: Path) -> bytes:
    """The whole file, or BadInputError saying plainly why it cannot be read."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BadInputError("no such file", path) from None
    except IsADirectoryError:
        raise BadInputError("is a directory, not a point-cloud file", path) from None
    except PermissionError:
        raise BadInputError("permission denied", path) from None
    except OSError as error:
        raise BadInputError(f"cannot read file: {error.strerror or error}", path) from None
    if not data:
        raise BadInputError("empty file (0 bytes)", path)
    return data


def _check_indices(triangles: np.ndarray, vertex_count: int, path: Path) -> None:
    """Faces must refer to vertices that exist."""
    bad = (triangles < 0) | (triangles >= vertex_count)
    if bad.any():
        index = int(triangles[bad][0])
        raise BadInputError(f"a face refers to vertex {index}, but the file has {vertex_count} vertices", path)


def _finite_points(points: np.ndarray, finite: np.ndarray, path: Path) -> np.ndarray:
    """Drop non-finite rows (with a warning); no points left is an error."""
    if not len(points):
        raise BadInputError("no points in the file", path)
    if finite.all():
        return points
    _warn(
        path,
        f"dropped {np.count_nonzero(~finite)} of {len(points)} points with NaN or infinite coordinates",
        stacklevel=3,
    )
    if not finite.any():
        raise BadInputError("no points left: every point has NaN or infinite coordinates", path)
    return points[finite]


def _warn(path: Path, message: str, stacklevel: int) -> None:
    """Warn about dropped data; `stacklevel` points the warning at the caller of `load_points`."""
    warnings.warn(f"{path}: {message}", PointCloudWarning, stacklevel=stacklevel + 1)


def _numbers(tokens: list[bytes] | list[str] | np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """Text tokens to numbers in one numpy conversion."""
    try:
        return np.array(tokens).astype(dtype)
    except ValueError:
        raise _Malformed(f"bad number in the data: {_first_bad_token(tokens, dtype)!r}") from None


def _first_bad_token(tokens: list[bytes] | list[str] | np.ndarray, dtype: type) -> str:
    """The token that failed a conversion (searched only once the conversion has failed)."""
    for token in tokens:
        try:
            np.array([token]).astype(dtype)
        except ValueError:
            return token.decode("latin-1") if isinstance(token, bytes) else str(token)
    return "?"


def _xyz_columns(columns: list[np.ndarray]) -> np.ndarray:
    """Three coordinate columns of any numeric type as one [N, 3] float64 array."""
    return np.stack([np.asarray(column, dtype=np.float64) for column in columns], axis=1)


# --- PLY --------------------------------------------------------------------------------------

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip
_PLY_BYTE_ORDERS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}
_PLY_FACE_LISTS = ("vertex_indices", "vertex_index")
_PLY_END_HEADER = re.compile(rb"^end_header[ \t]*(?:\r?\n|\Z)", re.M)


class _PlyProperty(NamedTuple):
    name: str
    dtype: np.dtype  # of the value, or of each list item
    count_dtype: np.dtype | None  # of a list's length; None for a scalar


class _PlyElement(NamedTuple):
    name: str
    count: int
    properties: list[_PlyProperty]


_PlyColumns = dict[str, "np.ndarray | _Ragged"]


def _read_ply(data: bytes) -> _Geometry:
    """PLY in ascii or either binary byte order; any element order, any numeric types."""
    elements, byte_order, body, notes = _parse_ply_header(data)
    if not any(element.name == "vertex" for element in elements):
        raise _Malformed("PLY header declares no vertex element")
    found = _read_ply_elements(elements, body, byte_order, wanted=("vertex", "face"))
    vertex_columns = found["vertex"]
    if not all(isinstance(vertex_columns.get(axis), np.ndarray) for axis in "xyz"):
        raise _Malformed("PLY vertex element has no x, y, z properties")
    vertices = _xyz_columns([vertex_columns[axis] for axis in "xyz"])
    face_lists = [found.get("face", {}).get(name) for name in _PLY_FACE_LISTS]
    polygons = next((faces for faces in face_lists if isinstance(faces, _Ragged)), None)
    return _Geometry(vertices, polygons, notes)


def _parse_ply_header(data: bytes) -> tuple[list[_PlyElement], str | None, bytes, tuple[str, ...]]:
    """Elements, byte order ('<', '>' or None for ascii), the bytes after the header, and notes.

    A line that starts with no PLY keyword is read as a comment and noted:
    Blender 2.47 wrote its credit line without the 'comment' keyword.
    """
    if not re.match(rb"ply[ \t]*\r?\n", data):
        raise _Malformed("not a PLY file: header does not start with 'ply'")
    end = _PLY_END_HEADER.search(data)
    if end is None:
        raise _Malformed("not a PLY file: header has no 'end_header' line")
    elements: list[_PlyElement] = []
    byte_order = "missing"
    notes: list[str] = []
    for line_number, line in enumerate(data[: end.start()].decode("latin-1").splitlines()[1:], start=2):
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        try:
            if words[0] == "format":
                byte_order = _PLY_BYTE_ORDERS[words[1]]
                _check_ply_version(words[2])
            elif words[0] == "element":
                elements.append(_PlyElement(words[1], _count(words[2]), []))
            elif words[0] == "property":
                elements[-1].properties.append(_ply_property(words))
            else:
                notes.append(f"PLY header line {line_number} has no known keyword; read as a comment: {line.strip()!r}")
        except (ValueError, IndexError, KeyError):
            raise _Malformed(f"bad PLY header line {line_number}: {line.strip()!r}") from None
    if byte_order == "missing":
        raise _Malformed("PLY header has no 'format' line")
    return elements, byte_order, data[end.end() :], tuple(notes)


def _check_ply_version(word: str) -> None:
    """1.0 is the only PLY version there is; another number means a format this reader does not know."""
    if float(word) != 1.0:
        raise _Malformed(f"unsupported PLY format version {word!r}: only 1.0 exists")


def _count(word: str) -> int:
    count = int(word)
    if count < 0:
        raise ValueError
    return count


def _ply_property(words: list[str]) -> _PlyProperty:
    """'property float x' or 'property list uchar int vertex_indices'."""
    if words[1] == "list":
        return _PlyProperty(words[4], np.dtype(_PLY_TYPES[words[3]]), np.dtype(_PLY_TYPES[words[2]]))
    return _PlyProperty(words[2], np.dtype(_PLY_TYPES[words[1]]), None)


def _read_ply_elements(
    elements: list[_PlyElement], body: bytes, byte_order: str | None, wanted: tuple[str, ...]
) -> dict[str, _PlyColumns]:
    """Columns of the wanted elements; the elements before them are read only to be skipped."""
    last_wanted = max(i for i, element in enumerate(elements) if element.name in wanted)
    source: bytes | list[bytes] = body.split() if byte_order is None else body
    position = 0
    found: dict[str, _PlyColumns] = {}
    for element in elements[: last_wanted + 1]:
        if byte_order is None:
            columns, position = _read_ascii_element(source, position, element)
        else:
            columns, position = _read_binary_element(source, position, element, byte_order)
        found.setdefault(element.name, columns)
    return found


def _read_binary_element(data: bytes, offset: int, element: _PlyElement, byte_order: str) -> tuple[_PlyColumns, int]:
    """One element as a structured array; list lengths are taken from the first row and checked on all."""
    lengths = _first_binary_list_lengths(data, offset, element, byte_order)
    dtype = _ply_record_dtype(element, byte_order, lengths)
    end = offset + dtype.itemsize * element.count
    if end == offset:  # no rows, or rows without properties
        return _assemble_columns(element, [[] for _ in element.properties], [[] for _ in element.properties]), end
    if end > len(data) and lengths:  # maybe not truncated: later rows may hold shorter lists
        return _read_binary_element_row_by_row(data, offset, element, byte_order)
    if end > len(data):
        raise _Malformed(
            f"truncated PLY data: element {element.name!r} needs {end - offset} bytes"
            f" but only {max(len(data) - offset, 0)} remain"
        )
    records = np.frombuffer(data, dtype=dtype, count=element.count, offset=offset)
    if not all(np.all(records[f"n{i}"] == length) for i, length in lengths.items()):
        return _read_binary_element_row_by_row(data, offset, element, byte_order)
    columns = {
        prop.name: _Ragged(records[f"p{i}"].reshape(-1), np.full(element.count, lengths[i]))
        if i in lengths
        else records[f"p{i}"]
        for i, prop in enumerate(element.properties)
    }
    return columns, end


def _first_binary_list_lengths(data: bytes, offset: int, element: _PlyElement, byte_order: str) -> dict[int, int]:
    """Each list property's length in the element's first row: {property index: length}."""
    lengths: dict[int, int] = {}
    if element.count == 0:
        return {i: 0 for i, prop in enumerate(element.properties) if prop.count_dtype is not None}
    for i, prop in enumerate(element.properties):
        if prop.count_dtype is None:
            offset += prop.dtype.itemsize
            continue
        lengths[i] = _unpack_length(data, offset, prop.count_dtype, byte_order, element.name)
        offset += prop.count_dtype.itemsize + lengths[i] * prop.dtype.itemsize
    return lengths


def _unpack_length(data: bytes, offset: int, count_dtype: np.dtype, byte_order: str, name: str) -> int:
    try:
        (length,) = struct.unpack_from(byte_order + count_dtype.char, data, offset)
    except struct.error:
        raise _Malformed(f"truncated PLY data in element {name!r}") from None
    if length < 0:
        raise _Malformed(f"negative list length {length} in PLY element {name!r}")
    return int(length)


def _ply_record_dtype(element: _PlyElement, byte_order: str, lengths: dict[int, int]) -> np.dtype:
    """A packed structured dtype for one row: p<i> for values, n<i> for list lengths."""
    fields: list[tuple] = []
    for i, prop in enumerate(element.properties):
        if prop.count_dtype is None:
            fields.append((f"p{i}", prop.dtype.newbyteorder(byte_order)))
        else:
            fields.append((f"n{i}", prop.count_dtype.newbyteorder(byte_order)))
            fields.append((f"p{i}", prop.dtype.newbyteorder(byte_order), (lengths[i],)))
    return np.dtype(fields)


def _read_binary_element_row_by_row(
    data: bytes, offset: int, element: _PlyElement, byte_order: str
) -> tuple[_PlyColumns, int]:
    """Fallback for lists whose lengths vary between rows (mixed triangles and quads)."""
    values: list[list] = [[] for _ in element.properties]
    counts: list[list[int]] = [[] for _ in element.properties]
    try:
        for _ in range(element.count):
            for i, prop in enumerate(element.properties):
                length = 1
                if prop.count_dtype is not None:
                    length = _unpack_length(data, offset, prop.count_dtype, byte_order, element.name)
                    offset += prop.count_dtype.itemsize
                    counts[i].append(length)
                values[i].extend(struct.unpack_from(f"{byte_order}{length}{prop.dtype.char}", data, offset))
                offset += length * prop.dtype.itemsize
    except struct.error:
        raise _Malformed(f"truncated PLY data in element {element.name!r}") from None
    return _assemble_columns(element, values, counts), offset


def _read_ascii_element(tokens: list[bytes], start: int, element: _PlyElement) -> tuple[_PlyColumns, int]:
    """One element as a table of numbers; list lengths are taken from the first row and checked on all."""
    lengths = _first_ascii_list_lengths(tokens, start, element)
    width = sum(1 + lengths[i] if i in lengths else 1 for i in range(len(element.properties)))
    end = start + width * element.count
    if end <= len(tokens):
        table = _numbers(tokens[start:end]).reshape(element.count, width)
        column = 0
        columns: _PlyColumns = {}
        for i, prop in enumerate(element.properties):
            if i not in lengths:
                columns[prop.name], column = table[:, column], column + 1
                continue
            if np.any(table[:, column] != lengths[i]):
                return _read_ascii_element_row_by_row(tokens, start, element)
            values = table[:, column + 1 : column + 1 + lengths[i]].reshape(-1)
            columns[prop.name], column = _Ragged(values, np.full(element.count, lengths[i])), column + 1 + lengths[i]
        return columns, end
    if not lengths:
        raise _Malformed(f"truncated PLY data: element {element.name!r} needs {end - start} numbers")
    return _read_ascii_element_row_by_row(tokens, start, element)


def _first_ascii_list_lengths(tokens: list[bytes], position: int, element: _PlyElement) -> dict[int, int]:
    lengths: dict[int, int] = {}
    if element.count == 0:
        return {i: 0 for i, prop in enumerate(element.properties) if prop.count_dtype is not None}
    for i, prop in enumerate(element.properties):
        if prop.count_dtype is not None:
            lengths[i] = _ascii_length(tokens, position, element.name)
            position += lengths[i]
        position += 1
    return lengths


def _ascii_length(tokens: list[bytes], position: int, name: str) -> int:
    if position >= len(tokens):
        raise _Malformed(f"truncated PLY data in element {name!r}")
    try:
        length = int(tokens[position])
    except ValueError:
        raise _Malformed(f"bad list length {tokens[position]!r} in PLY element {name!r}") from None
    if length < 0:
        raise _Malformed(f"negative list length {length} in PLY element {name!r}")
    return length


def _read_ascii_element_row_by_row(tokens: list[bytes], start: int, element: _PlyElement) -> tuple[_PlyColumns, int]:
    """Fallback for lists whose lengths vary between rows: walk rows to find where each value sits."""
    position = start
    value_positions: list[list[int]] = [[] for _ in element.properties]
    counts: list[list[int]] = [[] for _ in element.properties]
    for _ in range(element.count):
        for i, prop in enumerate(element.properties):
            length = 1
            if prop.count_dtype is not None:
                length = _ascii_length(tokens, position, element.name)
                position += 1
                counts[i].append(length)
            value_positions[i].extend(range(position, position + length))
            position += length
    if position > len(tokens):
        raise _Malformed(f"truncated PLY data in element {element.name!r}")
    numbers = _numbers(tokens[start:position])
    values = [numbers[np.asarray(where, dtype=np.int64) - start] for where in value_positions]
    return _assemble_columns(element, values, counts), position


def _assemble_columns(element: _PlyElement, values: list, counts: list[list[int]]) -> _PlyColumns:
    return {
        prop.name: _Ragged(np.asarray(values[i]), np.asarray(counts[i], dtype=np.int64))
        if prop.count_dtype is not None
        else np.asarray(values[i])
        for i, prop in enumerate(element.properties)
    }


# --- PCD --------------------------------------------------------------------------------------

_PCD_KINDS = {"F": "f", "U": "u", "I": "i"}
_PCD_DATA_LINE = re.compile(rb"^DATA[ \t]+(\S+)[^\n]*(?:\n|\Z)", re.M)


def _read_pcd(data: bytes) -> _Geometry:
    """PCD (PCL) with DATA ascii or binary; x, y, z may sit anywhere among the fields."""
    header, layout, body = _parse_pcd_header(data)
    fields = header["FIELDS"]
    count = _pcd_point_count(header)
    missing = [axis for axis in "xyz" if axis not in fields]
    if missing:
        raise _Malformed(f"PCD file has no {', '.join(missing)} field")
    if layout == "ascii":
        starts = np.cumsum(_pcd_counts(header)) - _pcd_counts(header)
        columns = _pcd_ascii_columns(body, count, [int(starts[fields.index(axis)]) for axis in "xyz"])
    elif layout == "binary":
        records = _pcd_binary_records(body, count, _pcd_dtype(header))
        columns = [records[f"f{fields.index(axis)}"][:, 0] for axis in "xyz"]  # first of COUNT values
    elif layout == "binary_compressed":
        raise _Malformed(
            "binary_compressed PCD is not supported; re-save it as ascii or binary"
            " (e.g. pcl_convert_pcd_ascii_binary IN OUT 1)"
        )
    else:
        raise _Malformed(f"unknown PCD DATA type {layout!r}; expected ascii or binary")
    return _xyz_columns(columns), None


def _parse_pcd_header(data: bytes) -> tuple[dict[str, list[str]], str, bytes]:
    """Header keywords to their words, the DATA layout and the bytes after the DATA line."""
    if not re.match(rb"\s*(#|VERSION|FIELDS)", data):
        raise _Malformed("not a PCD file: header does not start with VERSION or FIELDS")
    data_line = _PCD_DATA_LINE.search(data)
    if data_line is None:
        raise _Malformed("not a PCD file: header has no DATA line")
    header: dict[str, list[str]] = {}
    for line in data[: data_line.start()].decode("latin-1").splitlines():
        words = line.split()
        if words and not words[0].startswith("#"):
            header[words[0].upper()] = words[1:]
    if "FIELDS" not in header:
        raise _Malformed("not a PCD file: header has no FIELDS line")
    return header, data_line.group(1).decode("latin-1").lower(), data[data_line.end() :]


def _pcd_counts(header: dict[str, list[str]]) -> np.ndarray:
    counts = header.get("COUNT", ["1"] * len(header["FIELDS"]))
    return np.array(_pcd_ints(counts, "COUNT", len(header["FIELDS"])), dtype=np.int64)


def _pcd_ints(words: list[str], keyword: str, expected: int | None = None) -> list[int]:
    try:
        values = [int(word) for word in words]
    except ValueError:
        raise _Malformed(f"bad PCD {keyword} line: {' '.join(words)!r}") from None
    if (expected is not None and len(values) != expected) or any(value < 0 for value in values):
        raise _Malformed(f"PCD {keyword} line does not match FIELDS: {' '.join(words)!r}")
    return values


def _pcd_point_count(header: dict[str, list[str]]) -> int:
    """POINTS, or WIDTH x HEIGHT when POINTS is absent."""
    if "POINTS" in header:
        return _pcd_ints(header["POINTS"][:1], "POINTS", 1)[0]
    if "WIDTH" in header:
        width = _pcd_ints(header["WIDTH"][:1], "WIDTH", 1)[0]
        return width * _pcd_ints(header.get("HEIGHT", ["1"])[:1], "HEIGHT", 1)[0]
    raise _Malformed("PCD header has neither POINTS nor WIDTH")


def _pcd_dtype(header: dict[str, list[str]]) -> np.dtype:
    """Packed little-endian record dtype from SIZE, TYPE and COUNT: field i is f<i>."""
    fields = header["FIELDS"]
    sizes = _pcd_ints(header.get("SIZE", []), "SIZE", len(fields))
    types = header.get("TYPE", [])
    if len(types) != len(fields):
        raise _Malformed(f"PCD TYPE line does not match FIELDS: {' '.join(types)!r}")
    counts = _pcd_counts(header)
    try:
        return np.dtype(
            [
                (f"f{i}", np.dtype(f"<{_PCD_KINDS[kind.upper()]}{size}"), (int(count),))
                for i, (kind, size, count) in enumerate(zip(types, sizes, counts, strict=True))
            ]
        )
    except (KeyError, TypeError):
        raise _Malformed(f"unsupported PCD TYPE/SIZE: {' '.join(types)} / {' '.join(map(str, sizes))}") from None


def _pcd_ascii_columns(body: bytes, count: int, columns: list[int]) -> list[np.ndarray]:
    """The given columns of the first `count` rows of an ascii body (one point per line)."""
    if count == 0:
        return [np.empty(0)] * len(columns)
    if not body.strip():
        raise _Malformed(f"truncated PCD data: expected {count} points, got none")
    try:
        table = np.loadtxt(io.StringIO(body.decode("latin-1")), usecols=columns, max_rows=count, ndmin=2, comments=None)
    except ValueError as error:
        raise _Malformed(f"bad PCD data: {error}") from None
    if len(table) < count:
        raise _Malformed(f"truncated PCD data: expected {count} points, got {len(table)}")
    return list(table.T)


def _pcd_binary_records(body: bytes, count: int, dtype: np.dtype) -> np.ndarray:
    if len(body) < count * dtype.itemsize:
        raise _Malformed(
            f"truncated PCD data: {count} points need {count * dtype.itemsize} bytes, the file has {len(body)}"
        )
    return np.frombuffer(body, dtype=dtype, count=count)


# --- text tables (.xyz, .txt, .csv) -----------------------------------------------------------

_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|[-+]?(nan|inf|infinity)", re.I)
_CONTENT_LINE = re.compile(r"^[ \t]*([^\s#][^\r\n]*)", re.M)


def _read_table(data: bytes) -> _Geometry:
    """One point per line, comma- or whitespace-separated, x y z in the first three columns.

    A first line that is not numeric (a column header) is skipped; '#' starts a comment.
    """
    text = data.removeprefix(b"\xef\xbb\xbf").decode("latin-1")
    first = _CONTENT_LINE.search(text)
    if first is None:
        return np.empty((0, 3)), None
    first_tokens = re.split(r"[,\s]+", first.group(1).strip())
    if not all(_NUMBER.fullmatch(token) for token in first_tokens[:3]):
        text = text[first.end() :]
        first = _CONTENT_LINE.search(text)
        if first is None:
            return np.empty((0, 3)), None
    delimiter = "," if "," in first.group(1) else None
    try:
        table = np.loadtxt(io.StringIO(text), usecols=(0, 1, 2), delimiter=delimiter, comments="#", ndmin=2)
    except ValueError as error:
        raise _Malformed(f"bad table data: {error}") from None
    return table, None


# --- NumPy (.npy, .npz) -----------------------------------------------------------------------

_NPZ_KEYS = ("points", "xyz", "data")


def _read_numpy(data: bytes) -> _Geometry:
    """An [N, >=3] numeric array; in an .npz the one named points, xyz or data, else the first."""
    try:
        if data.startswith(b"\x93NUMPY"):
            array = np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
        elif data.startswith(b"PK"):
            array = _npz_points_array(data)
        else:
            raise _Malformed("not a NumPy file: no .npy or .npz signature")
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        reason = "it holds Python objects, which are not loaded" if "pickle" in str(error) else str(error)
        raise _Malformed(f"unreadable NumPy data: {reason}") from None
    while array.ndim > 2 and array.shape[0] == 1:  # a batch of one, [1, N, 3]
        array = array[0]
    if array.dtype.kind not in "iuf" or array.ndim != 2 or array.shape[1] < 3:
        raise _Malformed(f"expected a numeric array of shape [N, 3] (or more columns), got {array.dtype} {array.shape}")
    return array[:, :3].astype(np.float64), None


def _npz_points_array(data: bytes) -> np.ndarray:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        if not archive.files:
            raise _Malformed("the .npz file holds no arrays")
        key = next((name for name in _NPZ_KEYS if name in archive.files), archive.files[0])
        return archive[key]


# --- OFF --------------------------------------------------------------------------------------

_OFF_KEYWORD = re.compile(r"(ST)?C?N?(4)?(n)?OFF")
_COMMENT = re.compile(r"#[^\n]*")
_LINE_CONTENT = re.compile(r"\S[^\n]*")  # each non-blank line, from its first non-space character
_TOKEN_OR_NEWLINE = re.compile(r"\S+|\n")


def _read_off(data: bytes) -> _Geometry:
    """OFF and its C/N/ST variants, including ModelNet's 'OFF490 518 0' with counts glued on."""
    lines = _LINE_CONTENT.findall(_COMMENT.sub("", data.decode("latin-1")))
    keyword = _OFF_KEYWORD.match(lines[0]) if lines else None
    if keyword is None:
        raise _Malformed("not an OFF file: header does not start with 'OFF'")
    if keyword.group(2) or keyword.group(3):
        raise _Malformed(f"only 3-D OFF files are supported, not {keyword.group(0)!r}")
    counts, first_vertex_line = lines[0][keyword.end() :].split(), 1
    if not counts and len(lines) > 1:
        counts, first_vertex_line = lines[1].split(), 2
    try:
        vertex_count, face_count = _count(counts[0]), _count(counts[1])
    except (ValueError, IndexError):
        raise _Malformed("bad OFF header: expected vertex and face counts") from None
    vertex_lines = lines[first_vertex_line : first_vertex_line + vertex_count]
    face_lines = lines[first_vertex_line + vertex_count : first_vertex_line + vertex_count + face_count]
    if len(vertex_lines) < vertex_count or len(face_lines) < face_count:
        raise _Malformed(f"truncated OFF data: expected {vertex_count} vertices and {face_count} faces")
    vertices = _first_three_columns(vertex_lines, "OFF vertex")
    return vertices, _off_polygons(face_lines) if face_count else None


def _first_three_columns(rows: list[str], what: str) -> np.ndarray:
    """x, y, z from rows that may carry more columns (colours, normals): [len(rows), 3] float64."""
    if not rows:
        return np.empty((0, 3))
    try:
        table = np.loadtxt(rows, usecols=(0, 1, 2), ndmin=2, comments=None)
    except ValueError as error:
        raise _Malformed(f"bad {what} line: {error}") from None
    if len(table) != len(rows):
        raise _Malformed(f"a {what} line has fewer than 3 coordinates")
    return table


def _off_polygons(face_lines: list[str]) -> _Ragged:
    """Faces 'k i1 ... ik [colour]'; one table when all faces have the same size, else token by token."""
    table = _integer_table(face_lines)
    if table is not None and table.shape[1] > table[0, 0] >= 0 and np.all(table[:, 0] == table[0, 0]):
        return _Ragged(table[:, 1 : table[0, 0] + 1].reshape(-1), table[:, 0])
    tokens, row_of = _tokens_by_row(face_lines)
    row_start = np.searchsorted(row_of, np.arange(len(face_lines)))
    counts = _numbers(tokens[row_start], np.int64)
    if np.any(counts < 0) or np.any(np.bincount(row_of, minlength=len(face_lines)) <= counts):
        raise _Malformed("bad OFF face line: fewer indices than its count says")
    position = np.arange(len(tokens)) - row_start[row_of]
    is_index = (position >= 1) & (position <= counts[row_of])
    return _Ragged(_numbers(tokens[is_index], np.int64), counts)


def _integer_table(rows: list[str]) -> np.ndarray | None:
    """Rows of integers as one [rows, columns] table, or None when rows differ in length (or hold non-integers)."""
    try:
        table = np.loadtxt(rows, dtype=np.int64, ndmin=2, comments=None)
    except ValueError:
        return None
    return table if len(table) == len(rows) else None


def _tokens_by_row(rows: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Every whitespace-separated token of `rows`, and the index of the row it is on."""
    pieces = np.array(_TOKEN_OR_NEWLINE.findall("\n".join(rows) + "\n"))
    is_newline = pieces == "\n"
    return pieces[~is_newline], np.cumsum(is_newline)[~is_newline]


# --- OBJ --------------------------------------------------------------------------------------

_OBJ_RECORD = re.compile(r"^[ \t]*(v|f)[ \t]", re.M)
_OBJ_VERTEX = re.compile(r"^[ \t]*v[ \t]+([^\n]*)", re.M)
_OBJ_FACE = re.compile(r"^[ \t]*f[ \t]+([^\n]*)", re.M)
_OBJ_CORNER_REFERENCES = re.compile(r"/\S*")  # the '/vt/vn' after each corner's vertex index


def _read_obj(data: bytes) -> _Geometry:
    """Wavefront OBJ: 'v' lines and 'f' lines (i, i/t, i//n, i/t/n; negative = relative)."""
    text = _COMMENT.sub("", data.decode("latin-1"))
    vertices = _first_three_columns(_OBJ_VERTEX.findall(text), "OBJ 'v'")
    face_rows = _OBJ_CORNER_REFERENCES.sub("", "\n".join(_OBJ_FACE.findall(text))).split("\n")
    if not face_rows[0] and len(face_rows) == 1:
        return vertices, None
    table = _integer_table(face_rows)
    if table is not None:
        polygons = _Ragged(table.reshape(-1), np.full(len(table), table.shape[1]))
    else:
        tokens, row_of = _tokens_by_row(face_rows)
        polygons = _Ragged(_numbers(tokens, np.int64), np.bincount(row_of, minlength=len(face_rows)))
    return vertices, _obj_zero_based(polygons, text)


def _obj_zero_based(polygons: _Ragged, text: str) -> _Ragged:
    """OBJ indices count from 1; negative ones count back from the last vertex defined before the face."""
    indices = polygons.values
    if not np.any(indices < 0):
        return polygons._replace(values=indices - 1)
    records = np.array(_OBJ_RECORD.findall(text), dtype="<U1")
    vertices_before_face = np.cumsum(records == "v")[records == "f"]
    face_of_corner = np.repeat(np.arange(len(polygons.counts)), polygons.counts)
    resolved = np.where(indices < 0, vertices_before_face[face_of_corner] + indices, indices - 1)
    return polygons._replace(values=resolved)


_READERS: dict[str, Callable[[bytes], _Geometry]] = {
    ".ply": _read_ply,
    ".pcd": _read_pcd,
    ".xyz": _read_table,
    ".txt": _read_table,
    ".csv": _read_table,
    ".npy": _read_numpy,
    ".npz": _read_numpy,
    ".off": _read_off,
    ".obj": _read_obj,
}
