"""Write synthetic point clouds and meshes in every format clipcli reads.

Values are written so they read back exactly: raw bytes in binary formats and
9 significant digits in text (enough to round-trip any float32). Generators
give primitives (sphere, cube, cylinder) for pipeline tests.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clipcli.store.atomic import atomic_path, atomic_write

Faces = np.ndarray | Sequence[Sequence[int]] | None

_PLY_NUMPY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip

# A property before x shifts every offset; normals and colours after z are what scanners write.
_PLY_EXTRA_BEFORE = (("label", "ushort"),)
_PLY_EXTRA_AFTER = (
    ("nx", "float"), ("ny", "float"), ("nz", "float"), ("red", "uchar"), ("green", "uchar"), ("blue", "uchar"),
)  # fmt: skip


# --- primitives -------------------------------------------------------------------------------


def sphere_points(n: int, seed: int = 0) -> np.ndarray:
    """`n` points uniform on the unit sphere: [n, 3] float32."""
    directions = np.random.default_rng(seed).standard_normal((n, 3))
    return (directions / np.linalg.norm(directions, axis=1, keepdims=True)).astype(np.float32)


def cube_points(n: int, seed: int = 0) -> np.ndarray:
    """`n` points uniform on the surface of the cube [-1, 1]^3: [n, 3] float32."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(-1.0, 1.0, (n, 3))
    axis = rng.integers(0, 3, n)
    points[np.arange(n), axis] = rng.choice([-1.0, 1.0], n)
    return points.astype(np.float32)


def cylinder_points(n: int, seed: int = 0) -> np.ndarray:
    """`n` points uniform on a closed cylinder (radius 1, z in [-1, 1]): [n, 3] float32.

    The side (area 4 pi) gets two thirds of the points, the two caps (2 pi) one third.
    """
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0.0, 2 * np.pi, n)
    on_side = rng.random(n) < 2 / 3
    radius = np.where(on_side, 1.0, np.sqrt(rng.random(n)))
    height = np.where(on_side, rng.uniform(-1.0, 1.0, n), rng.choice([-1.0, 1.0], n))
    return np.stack([radius * np.cos(angle), radius * np.sin(angle), height], axis=1).astype(np.float32)


def cube_mesh(half_size: float = 1.0, triangles: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A cube centred on the origin: vertices [8, 3] float32 and outward quads [6, 4] (or triangles [12, 3])."""
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float32)
    quads = np.array(
        [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]], dtype=np.int64
    )
    if triangles:
        quads = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    return corners * np.float32(half_size), quads


# --- PLY --------------------------------------------------------------------------------------


def write_ply(
    path: str | Path,
    points: np.ndarray,
    faces: Faces = None,
    binary: bool | str = False,
    extra_props: bool = True,
    coord_type: str = "float",
    face_count_type: str = "uchar",
    face_index_type: str = "int",
    leading_element: bool = False,
) -> Path:
    """Write a PLY file: ascii, or binary little/big endian (`binary=True` means little).

    `extra_props` adds a ushort before x and normals and uchar colours after z;
    `leading_element` puts an element with variable-length lists before the
    vertices, which a reader must skip correctly.
    """
    byte_order = {False: None, True: "<", "little": "<", "big": ">"}[binary]
    parts = []
    if leading_element:  # lists of 1, 2 and 0 items, each followed by a float
        parts.append(_ply_list_element("tag", "ids", [[7], [1, 2], []], ("uchar", "int"), byte_order, [0.5, 1.5, 2.5]))
    parts.append(_ply_vertex_element(np.asarray(points), coord_type, extra_props, byte_order))
    if faces is not None:
        face_types = (face_count_type, face_index_type)
        parts.append(_ply_list_element("face", "vertex_indices", _as_face_list(faces), face_types, byte_order))
    fmt = {None: "ascii", "<": "binary_little_endian", ">": "binary_big_endian"}[byte_order]
    header = ["ply", f"format {fmt} 1.0", "comment written by tests/makers/points.py"]
    header += [line for lines, _ in parts for line in lines] + ["end_header"]
    with atomic_write(path, "wb") as handle:
        handle.write(("\n".join(header) + "\n").encode("ascii") + b"".join(data for _, data in parts))
    return Path(path)


def _ply_vertex_element(
    points: np.ndarray, coord_type: str, extra_props: bool, byte_order: str | None
) -> tuple[list[str], bytes]:
    """Header lines and data of the vertex element."""
    columns = _ply_vertex_columns(points, coord_type, extra_props)
    lines = [f"element vertex {len(points)}"] + [f"property {kind} {name}" for name, kind, _ in columns]
    if byte_order is None:
        formats = ["%.17g" if kind in ("double", "float64") else "%.9g" for _, kind, _ in columns]
        return lines, _savetxt(np.stack([values for _, _, values in columns], axis=1).astype(np.float64), formats)
    dtype = np.dtype([(name, np.dtype(_PLY_NUMPY_TYPES[kind]).newbyteorder(byte_order)) for name, kind, _ in columns])
    records = np.empty(len(points), dtype=dtype)
    for name, _, values in columns:
        records[name] = values
    return lines, records.tobytes()


def _ply_vertex_columns(points: np.ndarray, coord_type: str, extra_props: bool) -> list[tuple[str, str, np.ndarray]]:
    """Vertex columns as (name, PLY type, values)."""
    count = len(points)
    columns = [(axis, coord_type, points[:, i]) for i, axis in enumerate("xyz")]
    if not extra_props:
        return columns
    normals = points.astype(np.float64) / np.maximum(np.linalg.norm(points, axis=1, keepdims=True), 1e-12)
    extra_values = [*normals.T, np.arange(count) % 256, (np.arange(count) * 7) % 256, (np.arange(count) * 13) % 256]
    before = [(name, kind, np.arange(count) % 65536) for name, kind in _PLY_EXTRA_BEFORE]
    after = [(name, kind, values) for (name, kind), values in zip(_PLY_EXTRA_AFTER, extra_values, strict=True)]
    return before + columns + after


def _ply_list_element(
    name: str,
    list_name: str,
    lists: list[list[int]],
    types: tuple[str, str],
    byte_order: str | None,
    weights: list[float] | None = None,
) -> tuple[list[str], bytes]:
    """Header lines and data of an element with one list property (and optionally a float after it)."""
    lines = [f"element {name} {len(lists)}", f"property list {types[0]} {types[1]} {list_name}"]
    lines += ["property float weight"] if weights is not None else []
    tails = [[weight] for weight in weights] if weights is not None else [[]] * len(lists)
    if byte_order is None:
        rows = [
            " ".join([str(len(items)), *map(str, items), *(f"{w:.9g}" for w in tail)])
            for items, tail in zip(lists, tails, strict=True)
        ]
        return lines, "".join(row + "\n" for row in rows).encode("ascii")
    count_type, index_type = (np.dtype(_PLY_NUMPY_TYPES[kind]).newbyteorder(byte_order) for kind in types)
    float_type = np.dtype("f4").newbyteorder(byte_order)
    chunks = [
        np.array([len(items)], count_type).tobytes()
        + np.array(items, index_type).tobytes()
        + np.array(tail, float_type).tobytes()
        for items, tail in zip(lists, tails, strict=True)
    ]
    return lines, b"".join(chunks)


def _as_face_list(faces: Faces) -> list[list[int]]:
    return [list(map(int, face)) for face in faces]


def _savetxt(values: np.ndarray, formats: list[str] | str, delimiter: str = " ") -> bytes:
    if not len(values):
        return b""
    buffer = io.StringIO()
    np.savetxt(buffer, values.reshape(len(values), -1), fmt=formats, delimiter=delimiter)
    return buffer.getvalue().encode("ascii")


# --- PCD --------------------------------------------------------------------------------------


def write_pcd(path: str | Path, points: np.ndarray, binary: bool = False, extra_fields: bool = True) -> Path:
    """Write a PCD v0.7 file (DATA ascii or binary).

    `extra_fields` adds a 2-byte label before x, a 3-value normal and an 8-byte
    intensity after z, so x, y, z sit at odd offsets among fields of mixed sizes.
    """
    points = np.asarray(points, dtype=np.float32)
    count = len(points)
    fields = [("x", "F", 4, 1, points[:, 0]), ("y", "F", 4, 1, points[:, 1]), ("z", "F", 4, 1, points[:, 2])]
    if extra_fields:
        normal = np.tile(np.float32([0, 0, 1]), (count, 1))
        intensity = np.linspace(0.0, 1.0, count)
        fields = [("label", "U", 2, 1, np.arange(count) % 65536), *fields]
        fields += [("normal", "F", 4, 3, normal), ("intensity", "F", 8, 1, intensity)]
    header = "\n".join(
        [
            "# .PCD v0.7 - Point Cloud Data file format",
            "VERSION 0.7",
            "FIELDS " + " ".join(name for name, *_ in fields),
            "SIZE " + " ".join(str(size) for _, _, size, _, _ in fields),
            "TYPE " + " ".join(kind for _, kind, _, _, _ in fields),
            "COUNT " + " ".join(str(n) for _, _, _, n, _ in fields),
            f"WIDTH {count}",
            "HEIGHT 1",
            "VIEWPOINT 0 0 0 1 0 0 0",
            f"POINTS {count}",
            f"DATA {'binary' if binary else 'ascii'}",
            "",
        ]
    ).encode("ascii")
    with atomic_write(path, "wb") as handle:
        handle.write(header + (_pcd_binary(fields, count) if binary else _pcd_ascii(fields, count)))
    return Path(path)


def _pcd_binary(fields: list, count: int) -> bytes:
    kinds = {"F": "f", "U": "u", "I": "i"}
    dtype = np.dtype([(name, f"<{kinds[kind]}{size}", (n,)) for name, kind, size, n, _ in fields])
    records = np.empty(count, dtype=dtype)
    for name, _, _, n, values in fields:
        records[name] = np.asarray(values).reshape(count, n)
    return records.tobytes()


def _pcd_ascii(fields: list, count: int) -> bytes:
    columns = [np.asarray(values, dtype=np.float64).reshape(count, n) for *_, n, values in fields]
    formats = [("%.17g" if size == 8 else "%.9g") for _, _, size, n, _ in fields for _ in range(n)]
    return _savetxt(np.concatenate(columns, axis=1), formats)


# --- text tables and NumPy --------------------------------------------------------------------


def write_xyz(
    path: str | Path, points: np.ndarray, delimiter: str = " ", header: str | None = None, extra_columns: int = 0
) -> Path:
    """One point per line (also for .txt and .csv), optionally after a header line and with extra columns."""
    points = np.asarray(points, dtype=np.float32).astype(np.float64)
    table = np.concatenate([points, np.ones((len(points), extra_columns))], axis=1)
    body = _savetxt(table, "%.9g", delimiter)
    with atomic_write(path, "wb") as handle:
        handle.write((f"{header}\n".encode() if header is not None else b"") + body)
    return Path(path)


def write_npy(path: str | Path, array: np.ndarray) -> Path:
    with atomic_path(path) as tmp:
        np.save(tmp, np.asarray(array))
    return Path(path)


def write_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    """An .npz with the given named arrays, in the given order."""
    with atomic_write(path, "wb") as handle:
        np.savez(handle, **arrays)
    return Path(path)


# --- OFF and OBJ ------------------------------------------------------------------------------


def write_off(path: str | Path, points: np.ndarray, faces: Faces = None, glued_header: bool = False) -> Path:
    """Write an OFF file; `glued_header` writes ModelNet40's 'OFF8 6 0' with the counts glued on."""
    face_list = [] if faces is None else _as_face_list(faces)
    counts = f"{len(points)} {len(face_list)} 0"
    header = f"OFF{counts}\n" if glued_header else f"OFF\n# written by tests/makers/points.py\n{counts}\n"
    face_text = "".join(f"{len(face)} {' '.join(map(str, face))}\n" for face in face_list)
    with atomic_write(path, "wb") as handle:
        handle.write(header.encode() + _savetxt(np.asarray(points, dtype=np.float64), "%.9g") + face_text.encode())
    return Path(path)


def write_obj(
    path: str | Path, points: np.ndarray, faces: Faces = None, corner_style: str = "v", negative: bool = False
) -> Path:
    """Write a Wavefront OBJ.

    `corner_style` is one of 'v', 'v/vt', 'v//vn', 'v/vt/vn' (texture and normal
    lines are written to match); `negative` writes relative indices (-1 = last vertex).
    """
    count = len(points)
    lines = ["# written by tests/makers/points.py", "o shape"]
    body = _savetxt(np.asarray(points, dtype=np.float64), "%.9g").decode()
    lines += ["v " + row for row in body.splitlines()]
    if "vt" in corner_style:
        lines += ["vt 0.5 0.5"] * count
    if "vn" in corner_style:
        lines += ["vn 0 0 1"] * count
    for face in [] if faces is None else _as_face_list(faces):
        indices = [index - count if negative else index + 1 for index in face]
        lines.append("f " + " ".join(_obj_corner(index, corner_style) for index in indices))
    with atomic_write(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return Path(path)


def _obj_corner(index: int, style: str) -> str:
    return {"v": f"{index}", "v/vt": f"{index}/{index}", "v//vn": f"{index}//{index}"}.get(
        style, f"{index}/{index}/{index}"
    )


# --- STL, GLB/glTF and 3MF (written with trimesh's exporters) -----------------------------------


def write_stl(path: str | Path, vertices: np.ndarray, triangles: np.ndarray, binary: bool = True) -> Path:
    """An STL of a triangle mesh, binary or ascii ('solid ... endsolid')."""
    data = _trimesh(vertices, triangles).export(file_type="stl" if binary else "stl_ascii")
    with atomic_write(path, "wb") as handle:
        handle.write(data if isinstance(data, bytes) else data.encode("ascii"))
    return Path(path)


def write_scene(
    path: str | Path, vertices: np.ndarray, triangles: np.ndarray, transforms: Sequence[np.ndarray]
) -> Path:
    """A GLB, glTF or 3MF (by `path`'s extension) with one node per 4x4 transform, each an instance of the mesh.

    A .gltf keeps its binary buffer in a file beside it, as exporters write it.
    """
    import trimesh

    scene = trimesh.Scene()
    for index, transform in enumerate(transforms):
        scene.add_geometry(_trimesh(vertices, triangles), node_name=f"part{index}", transform=transform)
    file_type = Path(path).suffix.lower().lstrip(".")
    exported = scene.export(file_type=file_type)
    files = exported if isinstance(exported, dict) else {Path(path).name: exported}
    for name, data in files.items():
        name = Path(path).name if name.endswith(".gltf") else name  # trimesh names the glTF model.gltf
        with atomic_write(Path(path).parent / name, "wb") as handle:
            handle.write(data)
    return Path(path)


def _trimesh(vertices: np.ndarray, triangles: np.ndarray):
    import trimesh

    return trimesh.Trimesh(np.asarray(vertices, dtype=np.float64), np.asarray(triangles), process=False)
