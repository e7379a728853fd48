"""Read mesh and point-cloud files through trimesh: PLY, OBJ, OFF, STL, GLB/glTF and 3MF.

Scenes (GLB/glTF, 3MF) are flattened: every instance of every geometry is moved
to its place by its node's transform. Files are loaded with `process=False`, so
vertices come back exactly as stored, in file order, without merging.

PLY headers are checked first (`clipcli.media.ply`): trimesh reads them leniently.
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from clipcli.errors import first_line
from clipcli.media.archives import ArchiveTooLarge, checked_entries
from clipcli.media.ply import PlyError, check_ascii_rows, parse_ply_header, read_binary_ply_row_by_row

# trimesh logs what it skips (unknown glTF extensions, undefined 3MF components); the
# CLI's one-line messages and warnings say what matters, so its records go nowhere.
logging.getLogger("trimesh").addHandler(logging.NullHandler())

MESH_FILE_TYPES = {
    ".ply": "ply",
    ".obj": "obj",
    ".off": "off",
    ".stl": "stl",
    ".glb": "glb",
    ".gltf": "gltf",
    ".3mf": "3mf",
}
MAX_3MF_INFLATION = 100  # 3MF's XML packs about 5 to 1, a zip bomb thousands to 1
_OBJ_COMMENT = re.compile(rb"#[^\n]*")
_OBJ_COMMENT_AFTER_DATA = re.compile(rb"^[ \t]*[a-z]+[ \t][^#\n]*#", re.M)
_OBJ_RELATIVE_INDEX_LINE = re.compile(rb"^[ \t]*f[ \t][^\n]*\s-\d", re.M)
_OBJ_RELATIVE_VERTEX = re.compile(rb"(?<=\s)-(\d+)")  # a corner's vertex index; /vt/vn follow a slash


class MeshFileError(Exception):
    """A file that trimesh (or the PLY header check) cannot read; the message says why, without the path."""


class MeshData(NamedTuple):
    """What a file holds: vertices [V, 3] float64, triangles [T, 3] int64 (None without faces), header notes."""

    vertices: np.ndarray
    triangles: np.ndarray | None
    notes: tuple[str, ...] = ()


def read_mesh_file(data: bytes, path: Path) -> MeshData:
    """Parse a file's bytes by its extension; `path` only locates glTF's external buffers."""
    file_type = MESH_FILE_TYPES[path.suffix.lower()]
    if file_type == "ply":
        return _read_ply(data, path)
    if file_type == "obj":
        data = _obj_for_trimesh(data)
    elif file_type == "stl" and not _is_binary_stl(data):
        _check_text_stl(data)
        data = _as_utf8(data)
    elif file_type == "off":
        data = _as_utf8(data)
    elif file_type == "3mf":
        _check_inflation(data)
    vertices, triangles = _flatten(_load_scene(data, file_type, path))
    if not len(vertices):
        raise MeshFileError(f"no vertices found: the file is empty or not {_format_name(file_type)}")
    return _checked(vertices, triangles)


def _format_name(file_type: str) -> str:
    return "glTF" if file_type == "gltf" else file_type.upper()


def _is_binary_stl(data: bytes) -> bool:
    """An 80-byte header, a triangle count, and 50 bytes per triangle: what trimesh reads as binary STL."""
    return len(data) >= 84 and 84 + 50 * int.from_bytes(data[80:84], "little") == len(data)


def _check_inflation(data: bytes) -> None:
    """Refuse a 3MF whose entries unpack too far: trimesh unpacks every entry into memory."""
    try:
        checked_entries(io.BytesIO(data), len(data), MAX_3MF_INFLATION)
    except ArchiveTooLarge as error:
        raise MeshFileError(f"3MF {error}") from None
    except (zipfile.BadZipFile, ValueError) as error:
        raise MeshFileError(f"not a readable 3MF file ({error})") from None


def _check_text_stl(data: bytes) -> None:
    """A file that is not binary STL must be text STL ('solid ...'); otherwise say what the binary header promised."""
    if len(data) >= 84 and not data.lstrip().startswith(b"solid"):
        triangles = int.from_bytes(data[80:84], "little")
        raise MeshFileError(
            f"damaged binary STL: its header counts {triangles:,} triangles ({84 + 50 * triangles:,} bytes),"
            f" the file has {len(data):,} bytes"
        )


def _obj_for_trimesh(data: bytes) -> bytes:
    """OBJ text with what trimesh misreads made plain: comments after data, and relative vertex indices.

    trimesh counts a negative index back from the file's last vertex; OBJ counts
    back from the last vertex defined before the face, so they are made absolute here.
    """
    data = _as_utf8(data)
    if _OBJ_COMMENT_AFTER_DATA.search(data):
        data = _OBJ_COMMENT.sub(b"", data)
    if not _OBJ_RELATIVE_INDEX_LINE.search(data):
        return data
    lines, vertices_so_far = data.split(b"\n"), 0
    for number, line in enumerate(lines):
        record = line.split(maxsplit=1)[:1]
        if record == [b"v"]:
            vertices_so_far += 1
        elif record == [b"f"]:
            lines[number] = _absolute_indices(line, vertices_so_far)
    return b"\n".join(lines)


def _absolute_indices(face_line: bytes, vertices_so_far: int) -> bytes:
    """An 'f' line with its negative vertex indices (-1 = the last vertex so far) made 1-based absolute ones."""
    return _OBJ_RELATIVE_VERTEX.sub(lambda match: b"%d" % (vertices_so_far + 1 - int(match.group(1))), face_line)


def _as_utf8(data: bytes) -> bytes:
    """trimesh decodes text as UTF-8 and guesses other encodings only with charset_normalizer: Latin-1 is assumed."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1").encode("utf-8")
    return data


def _read_ply(data: bytes, path: Path) -> MeshData:
    """A PLY whose header passes `parse_ply_header`; binary files trimesh refuses are read row by row.

    trimesh refuses binary faces of mixed sizes, and also truncated data: the row
    reader then says which element is cut short.
    """
    try:
        header = parse_ply_header(data)
        if header.byte_order is None:
            check_ascii_rows(data, header)
        data = _with_utf8_header(data, header.body_offset)
        try:
            vertices, triangles = _flatten(_load_scene(data, "ply", path))
        except MeshFileError:
            if header.byte_order is None:
                raise
            vertices, triangles = read_binary_ply_row_by_row(data, header)
    except PlyError as error:
        raise MeshFileError(str(error)) from None
    return _checked(vertices, triangles if triangles is not None and len(triangles) else None, header.notes)


def _with_utf8_header(data: bytes, header_end: int) -> bytes:
    """The PLY with its header in UTF-8, which trimesh requires (a Latin-1 comment is common); the body is kept."""
    header = data[:header_end]
    utf8_header = _as_utf8(header)
    return data if utf8_header is header else utf8_header + data[header_end:]


def _checked(vertices: np.ndarray, triangles: np.ndarray | None, notes: tuple[str, ...] = ()) -> MeshData:
    """Vertices must have three coordinates (trimesh reads OBJ 'v 1 2' lines as 2-D points)."""
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise MeshFileError(f"expected 3 coordinates per vertex, got an array of shape {list(vertices.shape)}")
    return MeshData(vertices, triangles, notes)


def _load_scene(data: bytes, file_type: str, path: Path):
    """trimesh's scene for the bytes; any exception it raises on bad data becomes a MeshFileError."""
    import trimesh

    resolver = trimesh.resolvers.FilePathResolver(str(path)) if file_type == "gltf" else None
    # Colours and textures are not used: skipping them also keeps trimesh from decoding images or reading .mtl files.
    options: dict[str, Any] = {"skip_materials": True} if file_type in ("obj", "ply", "glb", "gltf") else {}
    try:
        return trimesh.load_scene(io.BytesIO(data), file_type=file_type, resolver=resolver, process=False, **options)
    except Exception as error:  # trimesh's parsers raise whatever the bad bytes trip (ValueError, KeyError, ...)
        raise MeshFileError(f"not a readable {_format_name(file_type)} file ({first_line(error)})") from None


def _flatten(scene) -> tuple[np.ndarray, np.ndarray | None]:
    """Every geometry instance's vertices moved by its node's transform, and triangles renumbered to match."""
    import trimesh

    vertices, triangles, offset = [], [], 0
    for node in scene.graph.nodes_geometry:
        transform, name = scene.graph[node]
        geometry = scene.geometry[name]
        if not isinstance(geometry, trimesh.Trimesh | trimesh.PointCloud):
            continue  # lines and curves have no surface or points to sample
        points = np.asarray(geometry.vertices, dtype=np.float64)
        moved = not np.array_equal(transform, np.eye(4)) and points.shape[-1:] == (3,)
        vertices.append(trimesh.transform_points(points, transform) if moved else points)
        faces = getattr(geometry, "faces", None)
        if faces is not None and len(faces):
            triangles.append(np.asarray(faces, dtype=np.int64) + offset)
        offset += len(points)
    if len(vertices) < 2:  # a lone geometry (most files) is not copied
        return vertices[0] if vertices else np.empty((0, 3)), triangles[0] if triangles else None
    return np.concatenate(vertices), np.concatenate(triangles) if triangles else None
