"""Point-cloud and mesh readers: exact round trips for every format, mesh sampling, and clear errors.

The files the hand-written PLY, OFF and OBJ readers read before trimesh took over
are written here and must give the same vertices, exactly. Triangles are compared
as sets: trimesh splits a quad along the same diagonal as a fan from its first
corner, but lists the triangles in another order.
"""

from __future__ import annotations

import os
import struct
import warnings
import zipfile

import numpy as np
import pytest
import trimesh
from makers.points import (
    cube_mesh,
    cube_points,
    cylinder_points,
    sphere_points,
    write_npy,
    write_npz,
    write_obj,
    write_off,
    write_pcd,
    write_ply,
    write_scene,
    write_stl,
    write_xyz,
)
from typer.testing import CliRunner

from clipcli.cli import app
from clipcli.errors import BadInputError
from clipcli.media.ply import fan_triangulate
from clipcli.media.points import (
    SUPPORTED_POINT_EXTENSIONS,
    PointCloudWarning,
    load_mesh,
    load_points,
)

PLY_TYPES = ["char", "uchar", "short", "ushort", "int", "uint", "float", "double"]
PLY_TYPES += ["int8", "uint8", "int16", "uint16", "int32", "uint32", "float32", "float64"]
MIXED_FACES = [[0, 1, 3, 2], [4, 6, 7], [0, 4, 5, 1], [2, 3, 7]]
MIXED_TRIANGLES = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [0, 4, 5], [0, 5, 1], [2, 3, 7]])


@pytest.fixture
def cloud() -> np.ndarray:
    """Float32 values of very different magnitudes and signs, so any rounding shows."""
    return sphere_points(50, seed=3) * np.float32([1.0, -250.5, 1e-3])


def expected_fan(faces: np.ndarray) -> np.ndarray:
    """Fan triangles of same-size polygons, face by face, written out independently."""
    return np.stack([faces[:, [0, i, i + 1]] for i in range(1, faces.shape[1] - 1)], axis=1).reshape(-1, 3)


def assert_same_triangles(actual: np.ndarray, expected: np.ndarray) -> None:
    """The same triangles, whatever their order and the order of their corners."""
    canonical = [np.unique(np.sort(np.asarray(triangles), axis=1), axis=0) for triangles in (actual, expected)]
    assert len(actual) == len(expected)
    np.testing.assert_array_equal(*canonical)


# --- PLY --------------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, "little", "big"])
@pytest.mark.parametrize("extra_props", [True, False])
@pytest.mark.parametrize("leading_element", [False, True])
def test_ply_round_trips_exactly(tmp_path, cloud, binary, extra_props, leading_element):
    path = write_ply(tmp_path / "c.ply", cloud, binary=binary, extra_props=extra_props, leading_element=leading_element)
    points = load_points(path)
    assert points.dtype == np.float32 and points.shape == (50, 3)
    np.testing.assert_array_equal(points, cloud)


@pytest.mark.parametrize("binary", [False, "little", "big"])
def test_ply_with_extra_props_and_faces_keeps_vertex_values(tmp_path, binary):
    vertices, quads = cube_mesh(half_size=0.37)
    path = write_ply(tmp_path / "m.ply", vertices, quads, binary=binary, extra_props=True)
    header = path.read_bytes().split(b"end_header")[0]
    assert b"property uchar red" in header and b"element face 6" in header
    read_vertices, triangles = load_mesh(path)
    np.testing.assert_array_equal(read_vertices, vertices)
    assert_same_triangles(triangles, expected_fan(quads))


@pytest.mark.parametrize("binary", [False, "little", "big"])
@pytest.mark.parametrize("coord_type", PLY_TYPES)
def test_ply_reads_every_coordinate_type(tmp_path, binary, coord_type):
    points = (np.arange(36, dtype=np.float32).reshape(12, 3) * 7) % 101  # fits char and uchar
    path = write_ply(tmp_path / "t.ply", points, binary=binary, coord_type=coord_type)
    assert f"property {coord_type} x".encode() in path.read_bytes()
    np.testing.assert_array_equal(load_points(path), points)


@pytest.mark.parametrize("binary", [False, "little", "big"])
@pytest.mark.parametrize(
    "count_type, index_type",
    [("uchar", "int"), ("ushort", "uint"), ("int", "ushort"), ("char", "uchar"), ("uint8", "int32")],
)
def test_ply_face_lists_of_any_types(tmp_path, binary, count_type, index_type):
    vertices, quads = cube_mesh()
    for name, faces, triangles in (("same", quads, expected_fan(quads)), ("mixed", MIXED_FACES, MIXED_TRIANGLES)):
        path = tmp_path / f"{name}.ply"
        write_ply(path, vertices, faces, binary=binary, face_count_type=count_type, face_index_type=index_type)
        read_vertices, read_triangles = load_mesh(path)
        np.testing.assert_array_equal(read_vertices, vertices)
        assert_same_triangles(read_triangles, triangles)


@pytest.mark.parametrize("binary", [False, "little", "big"])
def test_ply_skips_a_leading_element_with_ragged_lists(tmp_path, binary):
    vertices, _ = cube_mesh()
    path = write_ply(tmp_path / "lead.ply", vertices, MIXED_FACES, binary=binary, leading_element=True)
    assert path.read_bytes().index(b"element tag 3") < path.read_bytes().index(b"element vertex")
    read_vertices, triangles = load_mesh(path)
    np.testing.assert_array_equal(read_vertices, vertices)
    assert_same_triangles(triangles, MIXED_TRIANGLES)


def test_binary_ply_with_mixed_polygon_sizes_keeps_the_fan_order(tmp_path):
    # trimesh cannot read these (Blender writes its polygons as they are); they are read row by row.
    vertices, _ = cube_mesh()
    for byte_order in ("little", "big"):
        path = write_ply(tmp_path / f"{byte_order}.ply", vertices, MIXED_FACES, binary=byte_order, extra_props=True)
        read_vertices, triangles = load_mesh(path)
        np.testing.assert_array_equal(read_vertices, vertices)
        np.testing.assert_array_equal(triangles, MIXED_TRIANGLES)


def test_ply_elements_after_faces_are_ignored_and_crlf_header_accepted(tmp_path):
    body = struct.pack("<3f", 1.5, -2.0, 3.25) + b"trailing garbage"
    header = "ply\r\nformat binary_little_endian 1.0\r\nelement vertex 1\r\nproperty float x\r\nproperty float y\r\n"
    header += "property float z\r\nelement edge 5\r\nproperty int vertex1\r\nend_header\r\n"
    path = tmp_path / "crlf.ply"
    path.write_bytes(header.encode() + body)
    np.testing.assert_array_equal(load_points(path), [[1.5, -2.0, 3.25]])


# --- PCD --------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra_fields", [True, False])
def test_pcd_ascii_and_binary_round_trip(tmp_path, cloud, extra_fields):
    ascii_path = write_pcd(tmp_path / "a.pcd", cloud, binary=False, extra_fields=extra_fields)
    binary_path = write_pcd(tmp_path / "b.pcd", cloud, binary=True, extra_fields=extra_fields)
    assert b"DATA ascii" in ascii_path.read_bytes() and b"DATA binary" in binary_path.read_bytes()
    np.testing.assert_array_equal(load_points(ascii_path), cloud)
    np.testing.assert_array_equal(load_points(binary_path), cloud)


def test_pcd_binary_compressed_is_refused_clearly(tmp_path, cloud):
    path = write_pcd(tmp_path / "c.pcd", cloud, binary=True)
    path.write_bytes(path.read_bytes().replace(b"DATA binary", b"DATA binary_compressed"))
    with pytest.raises(BadInputError, match=r"c\.pcd: binary_compressed PCD is not supported"):
        load_points(path)


def test_pcd_truncated_binary_and_missing_fields(tmp_path, cloud):
    path = write_pcd(tmp_path / "t.pcd", cloud, binary=True)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(BadInputError, match="truncated PCD data"):
        load_points(path)
    path.write_bytes(b"VERSION 0.7\nFIELDS a b c\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nPOINTS 1\nDATA ascii\n1 2 3\n")
    with pytest.raises(BadInputError, match="no x, y, z field"):
        load_points(path)


def test_pcd_without_points_uses_width_times_height(tmp_path):
    path = tmp_path / "wh.pcd"
    path.write_bytes(b"FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nWIDTH 2\nHEIGHT 2\nDATA ascii\n" + b"1 2 3\n" * 4)
    np.testing.assert_array_equal(load_points(path), np.tile([1, 2, 3], (4, 1)))


# --- text tables and NumPy --------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, delimiter, header, extra_columns",
    [("c.xyz", " ", None, 0), ("c.txt", " ", "x y z nx", 3), ("c.csv", ",", "x,y,z,r", 1), ("c.txt", ", ", None, 2)],
)
def test_text_tables_round_trip(tmp_path, cloud, name, delimiter, header, extra_columns):
    path = write_xyz(tmp_path / name, cloud, delimiter=delimiter, header=header, extra_columns=extra_columns)
    np.testing.assert_array_equal(load_points(path), cloud)


def test_text_table_comments_and_bad_rows(tmp_path):
    path = tmp_path / "c.xyz"
    path.write_text("# scanner output\n\n1 2 3\n# middle\n4 5 6 7\n")
    np.testing.assert_array_equal(load_points(path), [[1, 2, 3], [4, 5, 6]])
    path.write_text("x y z\n1 2 3\n4 five 6\n")
    with pytest.raises(BadInputError, match=r"c\.xyz: bad table data"):
        load_points(path)
    path.write_text("1 2\n3 4\n")
    with pytest.raises(BadInputError, match="bad table data"):
        load_points(path)


def test_npy_and_npz_round_trip(tmp_path, cloud):
    wide = np.concatenate([cloud, np.ones((50, 2), np.float32)], axis=1)
    np.testing.assert_array_equal(load_points(write_npy(tmp_path / "a.npy", wide)), cloud)
    np.testing.assert_array_equal(load_points(write_npy(tmp_path / "b.npy", cloud[None])), cloud)
    np.testing.assert_array_equal(load_points(write_npy(tmp_path / "c.npy", cloud.astype(np.float64))), cloud)
    np.testing.assert_array_equal(load_points(write_npz(tmp_path / "d.npz", labels=np.zeros((4, 4)), xyz=cloud)), cloud)
    np.testing.assert_array_equal(load_points(write_npz(tmp_path / "e.npz", first=cloud, other=-cloud)), cloud)


def test_npy_refuses_objects_bad_shapes_and_non_numpy_bytes(tmp_path):
    with pytest.raises(BadInputError, match="Python objects"):
        load_points(write_npy(tmp_path / "o.npy", np.array([None, 1], dtype=object)))
    with pytest.raises(BadInputError, match=r"shape \[N, 3\]"):
        load_points(write_npy(tmp_path / "s.npy", np.zeros((10, 2))))
    (tmp_path / "x.npy").write_bytes(b"not numpy at all")
    with pytest.raises(BadInputError, match="no .npy or .npz signature"):
        load_points(tmp_path / "x.npy")
    truncated = tmp_path / "t.npy"
    truncated.write_bytes(write_npy(tmp_path / "full.npy", np.zeros((10, 3))).read_bytes()[:-8])
    with pytest.raises(BadInputError, match="unreadable NumPy data"):
        load_points(truncated)


# --- OFF and OBJ ------------------------------------------------------------------------------


@pytest.mark.parametrize("glued_header", [False, True])
def test_off_round_trips_vertices_and_faces(tmp_path, cloud, glued_header):
    points_path = write_off(tmp_path / "p.off", cloud, glued_header=glued_header)
    np.testing.assert_array_equal(load_points(points_path), cloud)
    vertices, quads = cube_mesh()
    mesh_path = write_off(tmp_path / "m.off", vertices, quads, glued_header=glued_header)
    assert mesh_path.read_text().startswith("OFF8 6 0\n" if glued_header else "OFF\n")
    read_vertices, triangles = load_mesh(mesh_path)
    np.testing.assert_array_equal(read_vertices, vertices)
    assert_same_triangles(triangles, expected_fan(quads))


def test_off_modelnet_header_mixed_faces_and_face_colours(tmp_path):
    path = tmp_path / "chair_0001.off"
    vertices = "0 0 0\n1 0 0\n1 1 0\n0 1 0\n0 0 1\n"
    path.write_text("OFF5 3 0\n" + vertices + "4 0 1 2 3\n3 0 1 4 255 0 0\n3 1 2 4\n")
    read_vertices, triangles = load_mesh(path)
    assert read_vertices.shape == (5, 3)
    assert_same_triangles(triangles, [[0, 1, 2], [0, 2, 3], [0, 1, 4], [1, 2, 4]])


@pytest.mark.parametrize("corner_style", ["v", "v/vt", "v//vn", "v/vt/vn"])
@pytest.mark.parametrize("negative", [False, True])
def test_obj_corner_forms_and_negative_indices(tmp_path, corner_style, negative):
    vertices, quads = cube_mesh()
    path = write_obj(tmp_path / "m.obj", vertices, quads, corner_style=corner_style, negative=negative)
    assert ("f -8" in path.read_text()) == negative
    read_vertices, triangles = load_mesh(path)
    np.testing.assert_array_equal(read_vertices, vertices)
    assert_same_triangles(triangles, expected_fan(quads))


@pytest.mark.parametrize("binary", [False, "little"])
def test_latin1_comments_in_ply_obj_off_and_stl_are_read(tmp_path, binary):
    vertices, triangles = cube_mesh(triangles=True)
    ply = write_ply(tmp_path / "m.ply", vertices, triangles, binary=binary)
    ply.write_bytes(ply.read_bytes().replace(b"written by", b"\xe9crit par", 1))
    obj = write_obj(tmp_path / "m.obj", vertices, triangles)
    obj.write_bytes(b"# mod\xe8le\n" + obj.read_bytes())
    off = write_off(tmp_path / "m.off", vertices, triangles)
    off.write_bytes(off.read_bytes().replace(b"written by", b"\xe9crit par", 1))
    stl = write_stl(tmp_path / "m.stl", vertices, triangles, binary=False)
    stl.write_bytes(stl.read_bytes().replace(b"solid", b"solid caf\xe9", 1))
    for path in (ply, obj, off):
        read_vertices, read_triangles = load_mesh(path)
        np.testing.assert_array_equal(read_vertices, vertices, err_msg=path.name)
        assert_same_triangles(read_triangles, triangles)
    assert load_mesh(stl)[1].shape == (12, 3)


def test_obj_negative_indices_are_relative_to_the_vertices_so_far(tmp_path, cloud):
    path = tmp_path / "rel.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf -3 -2 -1\nv 0 0 1\nf -4/1/1 -1/1/1 -3/1/1 # a comment 9\n")
    np.testing.assert_array_equal(load_mesh(path)[1], [[0, 1, 2], [0, 3, 1]])
    np.testing.assert_array_equal(load_points(write_obj(tmp_path / "p.obj", cloud)), cloud)


# --- STL, GLB/glTF and 3MF -------------------------------------------------------------------

SQRT2 = np.sqrt(2.0)
SHIFT = trimesh.transformations.translation_matrix([3.0, 0.0, 0.0])
TURN_AND_DOUBLE = trimesh.transformations.rotation_matrix(np.pi / 4, [0, 0, 1]) @ np.diag([2.0, 2.0, 2.0, 1.0])


@pytest.mark.parametrize("binary", [True, False])
def test_stl_gives_every_triangle_corner_and_samples_its_surface(tmp_path, binary):
    vertices, triangles = cube_mesh(half_size=0.5, triangles=True)
    path = write_stl(tmp_path / "cube.stl", vertices, triangles, binary=binary)
    assert path.read_bytes().startswith(b"solid") != binary
    read_vertices, read_triangles = load_mesh(path)
    np.testing.assert_array_equal(read_vertices, vertices[triangles].reshape(-1, 3))  # STL stores corners, not indices
    np.testing.assert_array_equal(read_triangles, np.arange(36).reshape(12, 3))
    points = load_points(path, mesh_samples=2000, seed=3)
    assert points.shape == (2000, 3)
    np.testing.assert_allclose(np.abs(points).max(axis=1), 0.5, atol=1e-6)  # on the surface
    np.testing.assert_allclose([points.min(axis=0), points.max(axis=0)], [[-0.5] * 3, [0.5] * 3], atol=0.02)


@pytest.mark.parametrize("suffix", [".glb", ".gltf", ".3mf"])
def test_scene_files_apply_each_nodes_transform(tmp_path, suffix):
    # Two instances of a unit cube: one moved 3 along x, one turned 45 degrees about z and doubled.
    vertices, triangles = cube_mesh(half_size=0.5, triangles=True)
    path = write_scene(tmp_path / f"parts{suffix}", vertices, triangles, [SHIFT, TURN_AND_DOUBLE])
    read_vertices, read_triangles = load_mesh(path)
    moved = [trimesh.transform_points(vertices, transform) for transform in (SHIFT, TURN_AND_DOUBLE)]
    expected = np.concatenate(moved).astype(np.float32)
    assert read_vertices.shape == (16, 3) and read_triangles.shape == (24, 3)
    np.testing.assert_allclose(np.unique(read_vertices, axis=0), np.unique(expected, axis=0), atol=1e-6)
    corners = read_vertices[read_triangles].astype(np.float64)
    areas = 0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    assert areas.sum() == pytest.approx(6 + 24)  # the unit cube's area, and 4 times it for the doubled one
    points = load_points(path, mesh_samples=5000, seed=1)
    np.testing.assert_allclose(points.min(axis=0), [-SQRT2, -SQRT2, -1.0], atol=0.05)
    np.testing.assert_allclose(points.max(axis=0), [3.5, SQRT2, 1.0], atol=0.05)
    in_shifted_cube = np.all(np.abs(points - [3.0, 0.0, 0.0]) <= 0.5 + 1e-5, axis=1)
    assert np.mean(in_shifted_cube) == pytest.approx(6 / 30, abs=0.03)  # its area is 6 of the scene's 6 + 24


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("photo.glb", b"\x89PNG\r\n\x1a\n" + bytes(64), "not a readable GLB file"),
        ("photo.3mf", b"\x89PNG\r\n\x1a\n" + bytes(64), "not a readable 3MF file"),
        ("notes.gltf", b"just some text", "not a readable glTF file"),
        ("photo.stl", b"\x89PNG\r\n\x1a\n" + bytes(80), "damaged binary STL: its header counts 0 triangles"),
        ("notes.stl", b"solid notes\nnot a facet\n", "no vertices found: the file is empty or not STL"),
    ],
)
def test_wrong_type_scene_and_stl_files_are_one_line_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(BadInputError, match=rf"{name}: {message}") as error:
        load_points(path)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "suffix, message",
    [
        (".glb", "not a readable GLB file"),
        (".3mf", "not a readable 3MF file"),
        (".stl", r"damaged binary STL: its header counts 12 triangles \(684 bytes\), the file has 342 bytes"),
    ],
)
def test_truncated_scene_and_stl_files_are_errors(tmp_path, suffix, message):
    vertices, triangles = cube_mesh(triangles=True)
    path = tmp_path / f"whole{suffix}"
    write_stl(path, vertices, triangles) if suffix == ".stl" else write_scene(path, vertices, triangles, [SHIFT])
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(BadInputError, match=rf"cut\{suffix}: {message}"):
        load_points(cut)


def test_3mf_that_unpacks_far_beyond_its_size_is_refused(tmp_path):
    path = tmp_path / "bomb.3mf"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("3D/3dmodel.model", b" " * 20_000_000)  # packs to about 20 kB
    with pytest.raises(
        BadInputError, match=r"bomb\.3mf: 3MF zip archive unpacks to 20,000,000 bytes from [\d,]+; at most 100"
    ):
        load_points(path)


def test_gltf_with_a_missing_buffer_file_is_an_error(tmp_path):
    vertices, triangles = cube_mesh(triangles=True)
    path = write_scene(tmp_path / "scene.gltf", vertices, triangles, [SHIFT])
    for buffer in tmp_path.glob("*.bin"):
        buffer.unlink()
    with pytest.raises(BadInputError, match=r"scene\.gltf: not a readable glTF file"):
        load_points(path)


def test_point_classify_reads_an_stl_and_refuses_a_damaged_glb(tmp_path, tiny_clip_files):
    vertices, triangles = cube_mesh(triangles=True)
    stl = write_stl(tmp_path / "cube.stl", vertices, triangles)
    glb = tmp_path / "broken.glb"
    glb.write_bytes(b"glTF" + bytes(20))
    common = ["--labels", "cube,sphere", "--model", tiny_clip_files["vit"], "--device", "cpu", "--json"]
    runner = CliRunner()
    result = runner.invoke(app, ["point-classify", str(stl), *common])
    assert result.exit_code == 0, result.output
    assert '"input"' in result.stdout and "cube.stl" in result.stdout
    result = runner.invoke(app, ["point-classify", str(glb), *common])
    assert result.exit_code == 2
    assert f"{glb}: not a readable GLB file" in result.stderr and "Traceback" not in result.output
    help_text = runner.invoke(app, ["point-classify", "--help"], terminal_width=200).output
    assert all(suffix in help_text for suffix in (".stl", ".glb", ".gltf", ".3mf"))


# --- mesh sampling ----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".ply", ".off", ".obj"])
def test_mesh_files_are_sampled_on_the_surface(tmp_path, suffix):
    vertices, quads = cube_mesh(half_size=0.5)
    writer = {".ply": write_ply, ".off": write_off, ".obj": write_obj}[suffix]
    path = writer(tmp_path / f"cube{suffix}", vertices, quads)
    points = load_points(path, mesh_samples=3000, seed=1)
    assert points.shape == (3000, 3) and points.dtype == np.float32
    np.testing.assert_allclose(np.abs(points).max(axis=1), 0.5, atol=1e-5)
    on_face = np.isclose(np.abs(points), 0.5, atol=1e-5) * np.sign(points)  # which of the 6 faces
    face_counts = np.concatenate([(on_face == 1).sum(0), (on_face == -1).sum(0)])
    assert face_counts.min() > 3000 / 6 * 0.8  # every face gets its share


def test_sampling_is_seeded(tmp_path):
    path = write_off(tmp_path / "cube.off", *cube_mesh())
    first = load_points(path, mesh_samples=200, seed=7)
    np.testing.assert_array_equal(first, load_points(path, mesh_samples=200, seed=7))
    assert not np.array_equal(first, load_points(path, mesh_samples=200, seed=8))


def test_sample_counts_follow_triangle_areas(tmp_path):
    # The unit square cut into triangles of area 0.05 (below y = 0.1 x), 0.45 and 0.5 (above y = x).
    vertices = np.array([[0, 0, 0], [1, 0, 0], [1, 0.1, 0], [1, 1, 0], [0, 1, 0]], dtype=np.float32)
    path = write_off(tmp_path / "square.off", vertices, [[0, 1, 2], [0, 2, 3], [0, 3, 4]])
    points = load_points(path, mesh_samples=40_000, seed=0)
    x, y = points[:, 0], points[:, 1]
    assert np.all((x >= 0) & (x <= 1) & (y >= 0) & (y <= 1)) and np.all(points[:, 2] == 0)
    assert np.mean(y < 0.1 * x) == pytest.approx(0.05, abs=0.005)  # binomial sd 0.0011
    assert np.mean(y > x) == pytest.approx(0.5, abs=0.012)  # binomial sd 0.0025


def test_samples_are_uniform_inside_a_triangle(tmp_path):
    path = write_off(tmp_path / "triangle.off", np.eye(3, dtype=np.float32)[:, [1, 2, 0]] * [1, 1, 0], [[0, 1, 2]])
    vertices, _ = load_mesh(path)
    np.testing.assert_array_equal(vertices, [[0, 0, 0], [1, 0, 0], [0, 1, 0]])
    points = load_points(path, mesh_samples=40_000)
    assert np.all(points[:, :2] >= 0) and np.all(points[:, 0] + points[:, 1] <= 1 + 1e-6)
    np.testing.assert_allclose(points[:, 2], 0.0)
    # The corner triangle x + y < 0.5 holds a quarter of the area; the centroid is (1/3, 1/3).
    assert np.mean(points[:, 0] + points[:, 1] < 0.5) == pytest.approx(0.25, abs=0.01)
    np.testing.assert_allclose(points[:, :2].mean(axis=0), [1 / 3, 1 / 3], atol=0.01)


def test_mesh_of_zero_area_is_refused(tmp_path):
    path = write_off(tmp_path / "flat.off", np.zeros((3, 3)), [[0, 1, 2]])
    with pytest.raises(BadInputError, match=r"flat\.off: mesh has zero surface area"):
        load_points(path)


def test_fan_triangulate_handles_mixed_and_degenerate_polygons():
    triangles = fan_triangulate([(5, 6, 7, 8, 9), (1, 2), (3, 4)])  # a pentagon and two edges
    np.testing.assert_array_equal(triangles, [[5, 6, 7], [5, 7, 8], [5, 8, 9]])
    np.testing.assert_array_equal(fan_triangulate([(0, 1, 2), (3, 4, 5)]), [[0, 1, 2], [3, 4, 5]])
    assert fan_triangulate([]).shape == (0, 3)


# --- dropped rows and errors ------------------------------------------------------------------


def test_nan_rows_are_dropped_with_a_warning(tmp_path, cloud):
    dirty = cloud.copy()
    dirty[[4, 9], 1] = np.nan
    dirty[20, 0] = np.inf
    path = write_npy(tmp_path / "dirty.npy", dirty)
    with pytest.warns(PointCloudWarning, match=r"dirty\.npy: dropped 3 of 50 points"):
        points = load_points(path)
    np.testing.assert_array_equal(points, np.delete(cloud, [4, 9, 20], axis=0))


def test_all_nan_or_no_points_is_an_error(tmp_path):
    with pytest.warns(PointCloudWarning), pytest.raises(BadInputError, match="no points left"):
        load_points(write_xyz(tmp_path / "nan.xyz", np.full((3, 3), np.nan)))
    with pytest.raises(BadInputError, match=r"empty\.ply: no points"):
        load_points(write_ply(tmp_path / "empty.ply", np.zeros((0, 3)), binary="little"))
    (tmp_path / "header_only.csv").write_text("x,y,z\n")
    with pytest.raises(BadInputError, match="no points"):
        load_points(tmp_path / "header_only.csv")


def test_mesh_with_a_nan_vertex_drops_its_triangles(tmp_path):
    vertices, quads = cube_mesh()
    vertices[0] = np.nan
    path = write_off(tmp_path / "nan.off", vertices, quads)
    with pytest.warns(PointCloudWarning, match="dropped 1 of 8 vertices .* 6 triangles"):
        points = load_points(path, mesh_samples=300)
    assert np.isfinite(points).all() and points.shape == (300, 3)
    np.testing.assert_allclose(np.abs(points).max(axis=1), 1.0, atol=1e-5)


def test_wrong_ply_header_names_the_file(tmp_path):
    path = tmp_path / "fake.ply"
    path.write_bytes(b"solid cube\nfacet normal 0 0 1\n")
    with pytest.raises(BadInputError, match=r"fake\.ply: not a PLY file: header does not start with 'ply'") as error:
        load_points(path)
    assert error.value.path == path
    path.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\n")
    with pytest.raises(BadInputError, match="no 'end_header' line"):
        load_points(path)
    path.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 1\nproperty quad x\nend_header\n1\n")
    with pytest.raises(BadInputError, match="bad PLY header line 4"):
        load_points(path)
    path.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float u\nend_header\n1\n")
    with pytest.raises(BadInputError, match="no vertex element with x, y, z properties"):
        load_points(path)


@pytest.mark.parametrize("binary", [False, True])
def test_ply_header_line_without_a_keyword_is_read_as_a_comment_with_a_warning(tmp_path, binary):
    # Blender 2.47's exporter wrote its credit line without the 'comment' keyword (assimp's Wuson.ply).
    cloud = cube_points(8)
    path = write_ply(tmp_path / "wuson.ply", cloud, binary=binary)
    credit = b"Created by Blender3D 247 - www.blender.org, source file: 'wuson.blend'"
    path.write_bytes(path.read_bytes().replace(b"comment written by tests/makers/points.py", credit, 1))
    with pytest.warns(PointCloudWarning, match=r"wuson\.ply: PLY header line 3 has no known keyword") as caught:
        points = load_points(path)
    assert len(caught) == 1 and "Created by Blender3D 247" in str(caught[0].message)
    np.testing.assert_array_equal(points, cloud)


@pytest.mark.parametrize("version", [b"9.9", b"2.0", b"0.9"])
def test_ply_format_version_other_than_1_0_is_refused(tmp_path, version):
    path = write_ply(tmp_path / "future.ply", cube_points(8))
    path.write_bytes(path.read_bytes().replace(b"format ascii 1.0", b"format ascii " + version, 1))
    with pytest.raises(BadInputError, match=r"future\.ply: unsupported PLY format version") as error:
        load_points(path)
    assert version.decode() in str(error.value) and "1.0" in str(error.value)


@pytest.mark.parametrize("binary", [False, "little", "big"])
def test_truncated_ply_is_an_error(tmp_path, cloud, binary):
    path = write_ply(tmp_path / "cut.ply", cloud, binary=binary)
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(BadInputError, match=r"cut\.ply: truncated PLY data"):
        load_points(path)
    vertices, _ = cube_mesh()
    mesh_path = write_ply(tmp_path / "cut_faces.ply", vertices, MIXED_FACES, binary=binary)
    mesh_path.write_bytes(mesh_path.read_bytes()[:-3])
    with pytest.raises(BadInputError, match="truncated PLY data"):
        load_mesh(mesh_path)


def test_malformed_text_data_is_reported(tmp_path):
    ply_header = "ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\n"
    cases = {
        "bad.ply": (ply_header + "end_header\n1 2 3\n4 5 abc\n", "not a readable PLY file"),
        "short.obj": ("v 1 2\nv 1 2\n", r"expected 3 coordinates per vertex, got an array of shape \[2, 2\]"),
        "few.off": ("OFF\n4 1 0\n0 0 0\n1 0 0\n0 1 0\n", "not a readable OFF file"),
        "cut.pcd": ("FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nPOINTS 3\nDATA ascii\n1 2 3\n4 5 6\n", "got 2"),
        "nope.off": ("ply\n", "not a readable OFF file"),
        "nope.stl": ("solid cube\nfacet normal 0 0 1\n", "no vertices found: the file is empty or not STL"),
        "nope.pcd": ("ply\n", "not a PCD file"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(BadInputError, match=rf"{name}: .*{message}"):
            load_points(tmp_path / name)


def test_face_index_out_of_range_is_an_error(tmp_path):
    vertices = np.eye(3, dtype=np.float32)
    with pytest.raises(BadInputError, match=r"bad\.ply: a face refers to vertex 3, but the file has 3 vertices"):
        load_points(write_ply(tmp_path / "bad.ply", vertices, [[0, 1, 3]]))
    with pytest.raises(BadInputError, match=r"bad\.off: .*face index outside the range of its vertices"):
        load_points(write_off(tmp_path / "bad.off", vertices, [[0, 1, 3]]))


@pytest.mark.parametrize("suffix", SUPPORTED_POINT_EXTENSIONS)
def test_zero_byte_missing_and_directory_are_errors(tmp_path, suffix):
    empty = tmp_path / f"empty{suffix}"
    empty.write_bytes(b"")
    with pytest.raises(BadInputError, match=rf"empty\{suffix}: empty file \(0 bytes\)"):
        load_points(empty)
    with pytest.raises(BadInputError, match="no such file"):
        load_points(tmp_path / f"missing{suffix}")
    folder = tmp_path / f"folder{suffix}"
    folder.mkdir()
    with pytest.raises(BadInputError, match="is a directory"):
        load_points(folder)


def test_unknown_extension_lists_the_supported_ones(tmp_path):
    path = tmp_path / "cloud.las"
    path.write_bytes(b"LASF")
    with pytest.raises(BadInputError, match=r"unsupported point-cloud extension '\.las'.*\.ply.*\.obj") as error:
        load_points(path)
    assert all(suffix in str(error.value) for suffix in SUPPORTED_POINT_EXTENSIONS)
    assert SUPPORTED_POINT_EXTENSIONS[:9] == (".ply", ".pcd", ".xyz", ".txt", ".csv", ".npy", ".npz", ".off", ".obj")
    assert SUPPORTED_POINT_EXTENSIONS[9:] == (".stl", ".glb", ".gltf", ".3mf")


def test_extension_is_case_insensitive_and_mesh_samples_must_be_positive(tmp_path, cloud):
    path = write_ply(tmp_path / "LOUD.PLY", cloud, binary="little")
    np.testing.assert_array_equal(load_points(path), cloud)
    with pytest.raises(BadInputError, match="^mesh_samples: must be at least 1, got 0$"):
        load_points(path, mesh_samples=0)


def test_non_utf8_file_name(tmp_path, cloud):
    name = os.fsdecode(b"caf\xe9.ply")
    path = write_ply(tmp_path / name, cloud, binary="big")
    np.testing.assert_array_equal(load_points(path), cloud)
    np.testing.assert_array_equal(load_points(os.fsdecode(bytes(path))), cloud)
    with pytest.raises(BadInputError) as error:
        load_points(tmp_path / os.fsdecode(b"gon\xe9.ply"))
    message = str(error.value)  # formatting the message must not raise
    assert "no such file" in message and message.encode("utf-8", "surrogateescape").endswith(
        b"gon\xe9.ply: no such file"
    )


def test_clean_files_of_every_format_load_without_warnings(tmp_path, cloud):
    vertices, triangles = cube_mesh(triangles=True)
    clouds = [
        write_pcd(tmp_path / "c.pcd", cloud, binary=True),
        write_ply(tmp_path / "c.ply", cloud, binary="little"),
        write_xyz(tmp_path / "c.xyz", cloud),
        write_npy(tmp_path / "c.npy", cloud),
        write_off(tmp_path / "c.off", cloud),
        write_obj(tmp_path / "c.obj", cloud),
    ]
    meshes = [
        write_stl(tmp_path / "m.stl", vertices, triangles),
        write_scene(tmp_path / "m.glb", vertices, triangles, [SHIFT]),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for path in clouds:
            np.testing.assert_array_equal(load_points(path), cloud, err_msg=path.name)
        for path in meshes:
            assert load_points(path, mesh_samples=100).shape == (100, 3)


# --- primitive makers -------------------------------------------------------------------------


def test_primitives_lie_on_their_shapes():
    sphere = sphere_points(500, seed=1)
    np.testing.assert_allclose(np.linalg.norm(sphere, axis=1), 1.0, atol=1e-6)
    cube = cube_points(500, seed=1)
    np.testing.assert_allclose(np.abs(cube).max(axis=1), 1.0)
    cylinder = cylinder_points(3000, seed=1)
    radius = np.linalg.norm(cylinder[:, :2], axis=1)
    on_side = np.isclose(radius, 1.0, atol=1e-6)
    assert np.all(on_side | np.isclose(np.abs(cylinder[:, 2]), 1.0)) and np.all(radius <= 1 + 1e-6)
    assert np.mean(on_side) == pytest.approx(2 / 3, abs=0.03)
    assert sphere.dtype == cube.dtype == cylinder.dtype == np.float32
    np.testing.assert_array_equal(sphere_points(10, seed=4), sphere_points(10, seed=4))
