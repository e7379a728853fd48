"""Read point clouds and meshes as [N, 3] float32 coordinates.

PointCLIP only looks at coordinates, so every reader keeps x, y, z and skips the
rest (normals, colours, other elements). Meshes become points by area-weighted
surface sampling, so a mesh and a scan of the same shape give the same kind of
cloud whatever the tessellation.

PLY, OBJ, OFF, STL, GLB/glTF and 3MF are read by trimesh (`clipcli.media.
mesh_files`). PCD, text tables (.xyz, .txt, .csv) and NumPy arrays are read
here: trimesh does not read PCD, reads text tables with no header or
delimiter handling, and nothing else reads .npy/.npz as safely as numpy
without pickles. These readers parse whole arrays with numpy.
"""

from __future__ import annotations

import io
import re
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from clipcli.errors import BadInputError, ParameterError
from clipcli.media.mesh_files import MESH_FILE_TYPES, MeshFileError, read_mesh_file

SUPPORTED_POINT_EXTENSIONS = (
    ".ply", ".pcd", ".xyz", ".txt", ".csv", ".npy", ".npz", ".off", ".obj", ".stl", ".glb", ".gltf", ".3mf",
)  # fmt: skip


class PointCloudWarning(UserWarning):
    """A point-cloud file was read, but some of it had to be dropped."""


class _Malformed(Exception):
    """A reader's complaint about file contents; `load_mesh` adds the file name."""


class _Geometry(NamedTuple):
    """What a reader found; `notes` are header oddities it read past, for `load_mesh` to warn about."""

    vertices: np.ndarray  # [V, 3] float64
    triangles: np.ndarray | None  # [T, 3] int64
    notes: tuple[str, ...] = ()


def load_points(path: str | Path, *, mesh_samples: int = 10_000, seed: int = 0) -> np.ndarray:
    """Read a point cloud, or sample `mesh_samples` points from a mesh's surface: [N, 3] float32.

    Rows with NaN or infinite coordinates are dropped with a PointCloudWarning; a
    file left with no points raises BadInputError. Sampling is seeded, so the same
    file and seed give the same points.
    """
    if mesh_samples < 1:
        raise ParameterError("mesh_samples", f"must be at least 1, got {mesh_samples}")
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
    return _sample_surface(vertices, triangles[usable], mesh_samples, seed, path)


def load_mesh(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a file's vertices [V, 3] float32 and its triangles [T, 3] int64 (polygons are triangulated).

    Triangles are None for point clouds. Nothing is dropped here: that is `load_points`' job.
    """
    path = Path(path)
    reader = _reader_for(path)
    data = _read_bytes(path)
    try:
        vertices, triangles, notes = reader(data, path)
    except _Malformed as error:
        raise BadInputError(str(error), path) from None
    for note in notes:
        _warn(path, note, stacklevel=2)
    if triangles is not None and len(triangles):
        _check_indices(triangles, len(vertices), path)
    else:
        triangles = None
    with np.errstate(over="ignore"):  # doubles beyond float32 become inf and are dropped later
        return vertices.astype(np.float32), triangles


def _sample_surface(vertices: np.ndarray, triangles: np.ndarray, n: int, seed: int, path: Path) -> np.ndarray:
    """`n` points drawn uniformly over the mesh's surface with trimesh (triangles picked by area): [n, 3] float32."""
    import trimesh

    mesh = trimesh.Trimesh(vertices.astype(np.float64), triangles, process=False, validate=False)
    if not (mesh.area > 0 and np.isfinite(mesh.area)):
        raise BadInputError("mesh has zero surface area, so no surface points can be sampled", path)
    points, _ = trimesh.sample.sample_surface(mesh, n, seed=seed)
    return points.astype(np.float32)


# --- shared checks ----------------------------------------------------------------------------


def _reader_for(path: Path) -> Callable[[bytes, Path], _Geometry]:
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


def _xyz_columns(columns: list[np.ndarray]) -> np.ndarray:
    """Three coordinate columns of any numeric type as one [N, 3] float64 array."""
    return np.stack([np.asarray(column, dtype=np.float64) for column in columns], axis=1)


# --- meshes and clouds trimesh reads ----------------------------------------------------------


def _read_with_trimesh(data: bytes, path: Path) -> _Geometry:
    try:
        return _Geometry(*read_mesh_file(data, path))
    except MeshFileError as error:
        raise _Malformed(str(error)) from None


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
    return _Geometry(_xyz_columns(columns), None)


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
        return _Geometry(np.empty((0, 3)), None)
    first_tokens = re.split(r"[,\s]+", first.group(1).strip())
    if not all(_NUMBER.fullmatch(token) for token in first_tokens[:3]):
        text = text[first.end() :]
        first = _CONTENT_LINE.search(text)
        if first is None:
            return _Geometry(np.empty((0, 3)), None)
    delimiter = "," if "," in first.group(1) else None
    try:
        table = np.loadtxt(io.StringIO(text), usecols=(0, 1, 2), delimiter=delimiter, comments="#", ndmin=2)
    except ValueError as error:
        raise _Malformed(f"bad table data: {error}") from None
    return _Geometry(table, None)


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
    return _Geometry(array[:, :3].astype(np.float64), None)


def _npz_points_array(data: bytes) -> np.ndarray:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        if not archive.files:
            raise _Malformed("the .npz file holds no arrays")
        key = next((name for name in _NPZ_KEYS if name in archive.files), archive.files[0])
        return archive[key]


def _own_reader(read: Callable[[bytes], _Geometry]) -> Callable[[bytes, Path], _Geometry]:
    """A reader of bytes alone, called like the trimesh one (which needs the path for glTF's buffers)."""
    return lambda data, _path: read(data)


_READERS: dict[str, Callable[[bytes, Path], _Geometry]] = {
    ".pcd": _own_reader(_read_pcd),
    ".xyz": _own_reader(_read_table),
    ".txt": _own_reader(_read_table),
    ".csv": _own_reader(_read_table),
    ".npy": _own_reader(_read_numpy),
    ".npz": _own_reader(_read_numpy),
    **dict.fromkeys(MESH_FILE_TYPES, _read_with_trimesh),
}
