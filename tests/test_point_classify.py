"""point-classify / point-eval: the logit formula, preprocessing, prompts and weights, files, exit codes."""

from __future__ import annotations

import errno
import importlib.util
import json
import pickle
import types
from dataclasses import replace
from importlib import resources
from pathlib import Path

import clip
import cv2
import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from makers import points as makers
from makers.points import cube_points, cylinder_points, sphere_points, write_npy, write_xyz
from makers.report import json_rows
from typer.testing import CliRunner

from clipcli.cli import app
from clipcli.errors import BadInputError, ParameterError
from clipcli.media import h5clouds
from clipcli.media.h5clouds import read_h5_clouds
from clipcli.media.points import load_points
from clipcli.models import load_clip
from clipcli.pipelines import point, point_prep, point_prompts
from clipcli.pipelines.point_prep import (
    FPS_POOL_MULTIPLE,
    CloudOptions,
    farthest_point_sample,
    normalize_unit_sphere,
    prepare_clouds,
)
from clipcli.render.projection import project_v1, project_v2

runner = CliRunner()
MN40_VIT_B16_WEIGHTS = [0.75, 0.75, 0.75, 0.25, 0.75, 1.0, 0.25, 1.0, 0.75, 0.25]  # spec 2.2


@pytest.fixture
def tiny_vit(tiny_vit_path):
    return load_clip(tiny_vit_path, device="cpu")[0]


def write_h5(path, shapes, labels=None):
    with h5py.File(path, "w") as handle:
        handle["data"] = np.asarray(shapes, dtype=np.float32)
        if labels is not None:
            handle["label"] = np.asarray(labels, dtype=np.uint8).reshape(-1, 1)  # ModelNet40's [S, 1] uint8
    return path


def invoke(*args):
    """The command's result and, with --json, its per-input rows."""
    result = runner.invoke(app, [str(a) for a in args])
    return result, (json_rows(result.stdout) if result.exit_code in (0, 4) and "--json" in args else None)


# ---------------------------------------------------------------- the logit formula (spec 1.2 / 2.1)


def official_logits(model, maps, sentences, weights, scale):
    """concat(w_v f_v/|f_v|) . repeat(t, V)/|repeat(t, V)|, from the projected maps, as the official code does."""
    views = maps.shape[1]
    images = maps.flatten(0, 1)[:, None].repeat(1, 3, 1, 1)
    images = F.interpolate(images, size=(224, 224), mode="bilinear", align_corners=True)
    features = model.encode_image(images)
    features = features / features.norm(dim=-1, keepdim=True)
    features = (features.reshape(-1, views, features.shape[-1]) * torch.tensor(weights).view(1, -1, 1)).flatten(1)
    text = model.encode_text(clip.tokenize(sentences)).repeat(1, views)
    text = text / text.norm(dim=-1, keepdim=True)
    return scale * features @ text.T


@torch.no_grad()
def test_v2_logits_equal_the_weighted_view_cosine_formula(tiny_vit):
    labels = point_prompts.load_label_set("modelnet40")
    classifier = point.ZeroShotClassifier.build(tiny_vit, labels, "v2", "paper:vit_b16", "paper:vit_b16")
    clouds = [cube_points(700, 0), cylinder_points(900, 1)]
    points = prepare_clouds(clouds, CloudOptions(points=256), "cpu")
    logits, maps = classifier(points)
    searched = json.loads((resources.files("clipcli.data") / point_prompts.SEARCHED_FILE).read_text(encoding="utf-8"))
    sentences = searched["prompts"]["modelnet40"]["vit_b16"]
    assert sentences[0] == "A three-dimensional model of an airplane composed of gray, fuzzy balls."
    expected = official_logits(tiny_vit, project_v2(points), sentences, MN40_VIT_B16_WEIGHTS, 100.0)
    assert logits.shape == (2, 40)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(maps, project_v2(points))


@torch.no_grad()
def test_v1_logits_use_clips_logit_scale_and_its_template(tiny_vit):
    labels = ["flower_pot", "chair", "range_hood"]
    classifier = point.ZeroShotClassifier.build(tiny_vit, labels, "v1", "template", "1,2,0.5,1,0,1")
    points = prepare_clouds([sphere_points(500, 2), cube_points(500, 3)], CloudOptions(points=200), "cpu")
    logits, _ = classifier(points)
    sentences = ["point cloud depth map of a flower pot.", "point cloud depth map of a chair.",
                 "point cloud depth map of a range hood."]  # fmt: skip
    scale = float(tiny_vit.logit_scale.exp())
    assert scale != pytest.approx(100.0)  # the tiny model's scale, so the test tells them apart
    expected = official_logits(tiny_vit, project_v1(points), sentences, [1, 2, 0.5, 1, 0, 1], scale)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_template_prompts_are_averaged_embeddings(tiny_vit):
    labels = ["mug", "chair"]
    classifier = point.ZeroShotClassifier.build(tiny_vit, labels, "v2")
    columns = []
    for name in labels:
        emb = tiny_vit.encode_text(clip.tokenize([t.format(name) for t in point_prompts.V2_TEMPLATES]))
        mean = (emb / emb.norm(dim=-1, keepdim=True)).mean(dim=0)
        columns.append(mean / mean.norm())
    torch.testing.assert_close(classifier.text, torch.stack(columns, dim=1), rtol=1e-5, atol=1e-5)
    assert torch.equal(classifier.weights, torch.ones(10)) and classifier.scale == 100.0


# ---------------------------------------------------------------- preprocessing


def test_farthest_point_sampling_picks_the_farthest_point_each_time():
    line = torch.tensor([[[float(x), 0.0, 0.0] for x in (3, 0, 10, 7, 5, 1)]])
    picks = farthest_point_sample(line, 4, torch.tensor([1]))  # start at x = 0
    assert [line[0, i, 0].item() for i in picks[0]] == [0.0, 10.0, 5.0, 3.0]  # 3 beats 7 on the (2 vs 2) tie: first


def test_batched_fps_with_padding_equals_each_cloud_alone():
    small, large = sphere_points(300, 0), cube_points(800, 1)
    options = CloudOptions(points=128, seed=3)
    together = prepare_clouds([small, large], options, "cpu")
    assert torch.equal(together[0], prepare_clouds([small], options, "cpu")[0])
    assert torch.equal(together[1], prepare_clouds([large], options, "cpu")[0])


def fps_from(cloud: np.ndarray, count: int, rng: np.random.Generator) -> torch.Tensor:
    """Farthest-point sampling over every point of `cloud`, from a start drawn from `rng`."""
    start = torch.tensor([rng.integers(len(cloud))])
    return torch.from_numpy(cloud)[farthest_point_sample(torch.from_numpy(cloud)[None], count, start)[0]]


def test_clouds_up_to_the_pool_size_are_sampled_from_every_point():
    count = 16
    cloud = cube_points(FPS_POOL_MULTIPLE * count, 2)
    out = prepare_clouds([cloud], CloudOptions(points=count, normalize=False, seed=5), "cpu")[0]
    assert torch.equal(out, fps_from(cloud, count, np.random.default_rng(5)))


def test_large_clouds_are_cut_to_a_seeded_random_pool_before_fps(monkeypatch):
    count = 16
    pool_size = FPS_POOL_MULTIPLE * count
    cloud = sphere_points(4 * pool_size, 3)
    searched_sizes = []

    def recording(points, *arguments):
        searched_sizes.append(points.shape[1])
        return farthest_point_sample(points, *arguments)

    monkeypatch.setattr(point_prep, "farthest_point_sample", recording)
    options = CloudOptions(points=count, normalize=False, seed=7)
    picked = prepare_clouds([cloud], options, "cpu")[0]
    assert searched_sizes == [pool_size]
    assert torch.equal(prepare_clouds([cloud], options, "cpu")[0], picked)
    assert not torch.equal(prepare_clouds([cloud], replace(options, seed=8), "cpu")[0], picked)
    rng = np.random.default_rng(7)
    pool = np.sort(rng.choice(len(cloud), pool_size, replace=False))
    assert torch.equal(picked, fps_from(cloud[pool], count, rng))


def test_normalisation_and_topping_up_small_clouds():
    cloud = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32) * 7 + 3
    out = prepare_clouds([cloud], CloudOptions(points=64), "cpu")[0]
    assert out.shape == (64, 3)
    assert out.norm(dim=1).max().item() == pytest.approx(1.0, abs=1e-6)
    raw = prepare_clouds([cloud], CloudOptions(points=64, normalize=False), "cpu")[0]
    assert torch.equal(raw[:10], torch.from_numpy(cloud))  # every original point, then repeats of them
    assert all(any(torch.equal(p, q) for q in raw[:10]) for p in raw[10:])
    unit = normalize_unit_sphere(torch.from_numpy(cloud)[None])[0]
    torch.testing.assert_close(unit.mean(dim=0), torch.zeros(3), atol=1e-6, rtol=0)


def test_up_axis_z_equals_rotating_the_cloud_to_y_up_first():
    cloud = cylinder_points(600, 4) * np.float32([0.3, 0.3, 1.0])  # tall along z
    x, y, z = cloud.T
    y_up = np.stack([x, z, -y], axis=1)  # z-up -> y-up: -90 degrees about x
    from_z = prepare_clouds([cloud], CloudOptions(points=256, up_axis="z"), "cpu")
    torch.testing.assert_close(from_z, prepare_clouds([y_up], CloudOptions(points=256), "cpu"))
    extent = from_z[0].amax(0) - from_z[0].amin(0)
    assert extent[1] > 2 * extent[0]  # now tall along y


# ---------------------------------------------------------------- labels, prompts, view weights


def test_label_sets_and_parsing(tmp_path):
    modelnet = point_prompts.parse_labels("modelnet40")
    assert len(modelnet) == 40 and modelnet[0] == "airplane" and modelnet[15] == "flower_pot" and modelnet[-1] == "xbox"
    scan = point_prompts.parse_labels("scanobjectnn")
    assert scan[:3] == ["bag", "bin", "box"] and scan[10] == "bed" and len(scan) == 15
    (tmp_path / "names.txt").write_text("# mine\ncup\n\nbowl\n")
    assert point_prompts.parse_labels(str(tmp_path / "names.txt")) == ["cup", "bowl"]
    assert point_prompts.parse_labels("a, b,c") == ["a", "b", "c"]
    assert point.dataset_of(scan) == "scanobjectnn" and point.dataset_of(["a", "b"]) is None
    with pytest.raises(BadInputError, match="duplicate"):
        point_prompts.parse_labels("a,b,a")
    with pytest.raises(BadInputError, match=r"not a built-in set \(modelnet40, scanobjectnn\)"):
        point_prompts.parse_labels("shapenet")


def test_prompt_modes():
    labels = ["flower_pot", "chair"]
    assert point.class_prompts(labels, "v1") == [["point cloud depth map of a flower pot."],
                                                 ["point cloud depth map of a chair."]]  # fmt: skip
    assert point.class_prompts(labels, "v1", "paper") == point.class_prompts(labels, "v1")
    assert len(point.class_prompts(labels, "v2")[0]) == len(point_prompts.V2_TEMPLATES)
    assert point.class_prompts(labels, "v2", "a {} in 3D") == [["a flower pot in 3D"], ["a chair in 3D"]]
    scan = point_prompts.load_label_set("scanobjectnn")
    assert point.class_prompts(scan, "v2", "paper:vit_b16")[1] == ["This is a monochrome depth map of a bin."]
    with pytest.raises(BadInputError, match="^prompts: paper: .* only for the modelnet40 and scanobjectnn labels$"):
        point.class_prompts(labels, "v2", "paper:vit_b16")
    with pytest.raises(BadInputError, match="use template, paper"):
        point.class_prompts(labels, "v2", "fancy")


def test_view_weight_modes(tiny_vit):
    modelnet = point_prompts.load_label_set("modelnet40")
    assert point.view_weights("paper:vit_b16", "v2", modelnet) == MN40_VIT_B16_WEIGHTS
    assert point.view_weights("uniform", "v1") == [1.0] * 6
    assert point.view_weights("1,0,2,1,1,1", "v1") == [1.0, 0.0, 2.0, 1.0, 1.0, 1.0]
    with pytest.raises(BadInputError, match="ships no searched view weights"):
        point.view_weights("paper", "v1", modelnet)
    with pytest.raises(BadInputError, match="v2 has 10 views"):
        point.view_weights("1,1,1", "v2")
    with pytest.raises(BadInputError, match="not for this model's architecture"):
        point.view_weights("paper", "v2", modelnet, tiny_vit)  # plain `paper` follows the model: tiny is none


def test_backbone_is_recognised_from_the_architecture(tiny_vit):
    fake_vit = types.SimpleNamespace(
        visual=types.SimpleNamespace(
            conv1=torch.nn.Conv2d(3, 768, 16, 16, bias=False), transformer=types.SimpleNamespace(resblocks=[None] * 12)
        )
    )
    assert point.backbone_key(fake_vit) == "vit_b16"
    assert point.backbone_key(tiny_vit) is None


def test_accuracy_report_by_hand():
    truth = torch.tensor([0, 0, 1, 2])
    ranked = torch.tensor([[0, 1], [1, 0], [1, 2], [0, 1]])
    report = point.accuracy_report(truth, ranked, ["a", "b", "c"])
    assert report["top1"] == 50.0 and report["top5"] == 75.0
    assert report["class_mean"] == pytest.approx(100 * (0.5 + 1 + 0) / 3, abs=0.01)
    assert report["per_class"] == {"a": 50.0, "b": 100.0, "c": 0.0}


# ---------------------------------------------------------------- files and the command line


def test_h5_reader_round_trip(tmp_path):
    shapes = np.stack([sphere_points(50, s) for s in range(3)])
    path = write_h5(tmp_path / "set.h5", shapes, [4, 0, 39])
    data, labels = h5clouds.read_h5_clouds(path)
    assert np.array_equal(data, shapes) and labels.tolist() == [4, 0, 39]
    count, labels = h5clouds.h5_labels(path)
    assert count == 3 and labels.tolist() == [4, 0, 39]
    (tmp_path / "fake.h5").write_bytes(b"not hdf5")
    for read in (h5clouds.read_h5_clouds, h5clouds.h5_labels):
        with pytest.raises(BadInputError, match="not a readable HDF5"):
            read(tmp_path / "fake.h5")


def test_h5_shapes_reads_each_set_once_and_pickles_empty(tmp_path, monkeypatch):
    first = write_h5(tmp_path / "first.h5", np.stack([sphere_points(50, s) for s in range(3)]))
    second = write_h5(tmp_path / "second.h5", np.stack([cube_points(60, s) for s in range(2)]))
    reads = []
    monkeypatch.setattr(h5clouds, "read_h5_clouds", lambda path: reads.append(path) or read_h5_clouds(path))
    sets = h5clouds.H5Shapes()
    got = [sets.shape(path, index) for path, index in ((first, 0), (first, 2), (second, 1), (second, 0))]
    assert reads == [first, second]
    assert np.array_equal(got[1], sphere_points(50, 2)) and np.array_equal(got[2], cube_points(60, 1))
    with pytest.raises(BadInputError, match=r"second.h5: has no shape 2: the file holds 2 shapes \(0-1\)$"):
        sets.shape(second, 2)
    copy = pickle.loads(pickle.dumps(sets))
    assert copy._path is None and np.array_equal(copy.shape(first, 1), sphere_points(50, 1))


def test_an_h5_index_beyond_the_set_fails_that_file_with_its_size(tmp_path, tiny_vit_path):
    path = write_h5(tmp_path / "set.h5", [sphere_points(50, s) for s in range(3)])
    result, _ = invoke("point-classify", path, "--h5-index", "3", "--model", tiny_vit_path, "--device", "cpu")
    assert result.exit_code == 2 and result.stderr == f"error: {path}: has no shape 3: the file holds 3 shapes (0-2)\n"


def test_classify_every_format_with_views(tmp_path, tiny_vit_path):
    cloud = cube_points(400, 5)
    vertices, faces = makers.cube_mesh()
    files = [
        makers.write_ply(tmp_path / "a.ply", cloud, binary=True),
        makers.write_pcd(tmp_path / "b.pcd", cloud),
        write_xyz(tmp_path / "c.xyz", cloud),
        write_npy(tmp_path / "d.npy", cloud),
        makers.write_off(tmp_path / "e.off", vertices, faces),
        makers.write_obj(tmp_path / "f.obj", vertices, faces),
        write_h5(tmp_path / "g.h5", [cloud, cloud * 2], [7, 8]),
    ]
    out = tmp_path / "views"
    options = ("--labels", "modelnet40", "--points", "128", "--top-k", "3", "--save-views", "--out", out)
    result, rows = invoke("point-classify", *files, *options, "--model", tiny_vit_path, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    assert [row["input"] for row in rows] == [str(f) for f in files[:-1]] + [f"{files[-1]}[0]", f"{files[-1]}[1]"]
    for row in rows:
        probabilities = [p["probability"] for p in row["predictions"]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
        assert 0 < sum(probabilities) <= 1 + 1e-6
        picture = cv2.imread(row["views"])
        assert picture is not None and picture.shape[0] > 2 * 224 and picture.shape[1] > 5 * 224
    assert rows[0]["predictions"] == rows[3]["predictions"]  # the same cloud from .ply and .npy
    assert rows[-2]["predictions"] == rows[-1]["predictions"]  # V2 ignores scale
    assert (rows[-2]["label"], rows[-1]["label"]) == ("car", "chair")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            "a_views.png",
            "b_views.png",
            "c_views.png",
            "d_views.png",
            "e_views.png",
            "f_views.png",
            "g_0000_views.png",
            "g_0001_views.png",
        ]  # fmt: skip
    )


def test_cli_up_axis_z_equals_a_rotated_file(tmp_path, tiny_vit_path):
    cloud = cylinder_points(300, 6) * np.float32([0.4, 0.4, 1.0])
    x, y, z = cloud.T
    write_npy(tmp_path / "z_up.npy", cloud)
    write_npy(tmp_path / "y_up.npy", np.stack([x, z, -y], axis=1))
    common = ("--labels", "cup,cone,bottle", "--points", "128", "--model", tiny_vit_path, "--device", "cpu", "--json")
    _, from_z = invoke("point-classify", tmp_path / "z_up.npy", "--up-axis", "z", *common)
    _, from_y = invoke("point-classify", tmp_path / "y_up.npy", *common)
    for a, b in zip(from_z[0]["predictions"], from_y[0]["predictions"], strict=True):
        assert a["label"] == b["label"] and a["probability"] == pytest.approx(b["probability"], abs=1e-5)


def test_batch_equals_single_through_the_command(tmp_path, tiny_vit_path, monkeypatch):
    monkeypatch.setattr(point, "CLOUD_BATCH", 2)  # batches that straddle files
    makers_ = (sphere_points, cube_points, cylinder_points)
    files = [write_npy(tmp_path / f"{i}.npy", maker(300 + 100 * i, i)) for i, maker in enumerate(makers_)]
    files.insert(1, write_h5(tmp_path / "two.h5", [cube_points(500, 8), sphere_points(500, 9)]))
    files.insert(2, tmp_path / "broken.npy")
    files[2].write_bytes(b"junk")
    common = ("--labels", "modelnet40", "--points", "128", "--projection", "v1", "--model", tiny_vit_path,
              "--device", "cpu", "--json")  # fmt: skip
    result, together = invoke("point-classify", *files, *common)
    assert result.exit_code == 4
    names = [row["input"] for row in together]
    assert names == [str(files[0]), f"{files[1]}[0]", f"{files[1]}[1]", str(files[2]), str(files[3]), str(files[4])]
    assert together[3]["status"] == "failed" and "NumPy" in together[3]["error"]
    alone = [invoke("point-classify", path, *common)[1] for path in files if path != files[2]]
    alone = [row for rows in alone for row in rows]
    for a, b in zip(alone, [row for row in together if row["status"] == "ok"], strict=True):
        assert a["input"] == b["input"]
        for p, q in zip(a["predictions"], b["predictions"], strict=True):
            assert p["label"] == q["label"] and p["probability"] == pytest.approx(q["probability"], abs=1e-5)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.xyz", "x y z\n", "no points"),
        ("nan.xyz", "nan nan nan\nnan 1 2\n", "every point has NaN"),
        ("same.xyz", "1 2 3\n1 2 3\n1 2 3\n", "all 3 points coincide"),
        ("huge.xyz", "1e31 0 0\n0 1 0\n", "coordinates beyond 1e+30"),
        ("speck.xyz", "0 0 0\n1e-31 0 0\n", "too little extent"),
        ("cloud.abc", "0 0 0\n1 1 1\n", "unsupported point-cloud extension"),
    ],
)
def test_bad_inputs_exit_2_with_the_file_name(tmp_path, tiny_vit_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    result, _ = invoke("point-classify", path, "--model", tiny_vit_path, "--device", "cpu")
    assert result.exit_code == 2, result.output
    assert f"error: {path}: " in result.stderr and message in result.stderr


def test_a_bad_cloud_in_a_batch_exits_4_and_small_clouds_are_topped_up(tmp_path, tiny_vit_path):
    small = write_xyz(tmp_path / "small.xyz", sphere_points(10, 0))
    bad = tmp_path / "bad.xyz"
    bad.write_text("1 1 1\n")
    result, rows = invoke("point-classify", small, bad, "--points", "64", "--model", tiny_vit_path, "--device", "cpu",
                          "--json")  # fmt: skip
    assert result.exit_code == 4
    assert rows[0]["status"] == "ok" and rows[0]["points"] == 10 and len(rows[0]["predictions"]) == 5
    assert rows[1]["status"] == "failed" and "coincide" in rows[1]["error"]


def test_usage_errors_exit_2_before_loading_a_model(tmp_path):
    cloud = write_npy(tmp_path / "c.npy", sphere_points(50, 0))
    for args, message in (
        (("--projection", "v3"), "'v3' is not one of"),
        (("--view-weights", "paper", "--labels", "a,b"), "--view-weights paper: PointCLIP V2 searched them only for"),
        (("--projection", "v1", "--view-weights", "paper"), "ships no searched view weights"),
        (("--view-weights", "1,2"), "give 10 weights"),
        (("--subsample", "grid"), "'grid' is not one of"),
        (("--up-axis", "x"), "'x' is not one of"),
        (("--prompts", "paper:vit_l14"), "not for 'vit_l14'"),
        (("--projection", "v1", "--prompts", "paper:rn50"), "--prompts paper:rn50: PointCLIP V1 has a single template"),
    ):
        result, _ = invoke("point-classify", cloud, "--model", tmp_path / "absent.pt", *args)
        assert result.exit_code == 2 and message in result.stderr, (args, result.stderr)


def test_point_eval_scores_the_predictions_point_classify_makes(tmp_path, tiny_vit_path):
    shapes = [sphere_points(1100, 0), cube_points(1100, 1), cylinder_points(1100, 2), cube_points(1100, 3) * 0.5]
    path = write_h5(tmp_path / "ply_data_test0.h5", shapes, [0, 7, 8, 3])
    model = ("--model", tiny_vit_path, "--device", "cpu", "--json")
    result, _ = invoke("point-eval", path, "--labels", "modelnet40", *model)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    _, rows = invoke("point-classify", path, "--subsample", "first", "--no-normalize", *model)
    hits = [row["predictions"][0]["label"] == row["label"] for row in rows]
    assert report["shapes"] == 4 and report["top1"] == pytest.approx(100 * np.mean(hits))
    assert report["settings"]["projection"] == "v2" and report["paper_top1"] is None


def test_point_eval_refuses_unscorable_sets(tmp_path, tiny_vit_path):
    model = ("--model", tiny_vit_path, "--device", "cpu")
    unlabelled = write_h5(tmp_path / "unlabelled.h5", [sphere_points(100, 0)])
    result, _ = invoke("point-eval", unlabelled, *model)
    assert result.exit_code == 2 and "no 'label' array" in result.stderr
    wide = write_h5(tmp_path / "wide.h5", [sphere_points(100, 0)], [20])
    result, _ = invoke("point-eval", wide, "--labels", "scanobjectnn", *model)
    assert result.exit_code == 2 and f"error: {wide}[0]: label 20 is outside the 15 labels\n" == result.stderr
    result, _ = invoke("point-eval", write_npy(tmp_path / "c.npy", sphere_points(50, 0)), *model)
    assert result.exit_code == 2


def test_bench_large_cloud_row_times_reading_and_preparing_a_generated_ply(tmp_path):
    spec = importlib.util.spec_from_file_location("bench", Path(__file__).parents[1] / "scripts" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    cloud = load_points(bench.write_binary_ply(tmp_path / "scan.ply", 3000))
    assert cloud.shape == (3000, 3)
    np.testing.assert_allclose(np.linalg.norm(cloud, axis=1), 1.0, atol=0.06)
    row = bench.large_cloud_cost(FPS_POOL_MULTIPLE * 64 + 1, points=64)
    assert row["bench"] == "point-large-cloud" and row["points_in_file"] == FPS_POOL_MULTIPLE * 64 + 1
    assert row["points"] == 64 and row["sampling"] == "fps"
    assert min(row["load_s"], row["prepare_s"]) >= 0
    assert row["total_s"] == pytest.approx(row["load_s"] + row["prepare_s"], abs=0.002)


@pytest.mark.parametrize("command", ["point-classify", "point-eval"])
def test_help_states_the_fps_pool_and_its_seed(command):
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.output.replace("│", " ").split())
    pool = f"{FPS_POOL_MULTIPLE} x --points"
    assert f"a cloud of over {pool} points is searched among {pool} of its points drawn at random" in text
    assert "seeded by --seed" in text


# ---------------------------------------------------------------- errors name what the caller gave


def bad_settings():
    """Calls that refuse one setting each, as point-classify and point-eval make them."""
    labels = point_prompts.load_label_set("modelnet40")
    return [
        lambda: CloudOptions(points=0).check(),
        lambda: CloudOptions(sampling="grid").check(),
        lambda: CloudOptions(up_axis="x").check(),
        lambda: point.check_settings(labels, "v3", "template", "uniform", CloudOptions()),
        lambda: point.check_settings(labels, "v2", "fancy", "uniform", CloudOptions()),
        lambda: point.check_settings(labels, "v1", "paper:rn50", "uniform", CloudOptions()),
        lambda: point.check_settings(labels, "v2", "template", "1,2", CloudOptions()),
        lambda: point.check_settings(labels, "v1", "template", "paper", CloudOptions()),
        lambda: point.check_settings(["a", "b"], "v2", "template", "paper", CloudOptions()),
        lambda: point.check_settings(labels, "v2", "template", "paper:vit_l14", CloudOptions()),
        lambda: point.classify([], labels=labels, top_k=0),
    ]


@pytest.mark.parametrize("command", ["point-classify", "point-eval"])
def test_every_setting_error_names_a_flag_the_command_has(command):
    from typer.main import get_command

    from clipcli.cli import point as point_cli

    flags = {opt for param in get_command(app).commands[command].params for opt in param.opts}
    for refuse in bad_settings():
        with pytest.raises(ParameterError) as caught:
            refuse()
        flag = caught.value.for_flag(point_cli.FLAGS).split()[0]
        assert flag in flags or (command, flag) == ("point-eval", "--top-k"), caught.value


def test_a_bad_subsample_names_subsample_on_the_command_line_and_sampling_in_python():
    from clipcli.cli import point as point_cli

    with pytest.raises(ParameterError) as caught:
        CloudOptions(sampling="grid").check()
    assert str(caught.value) == "sampling: 'grid': choose one of fps, random, first"
    assert caught.value.for_flag(point_cli.FLAGS) == "--subsample 'grid': choose one of fps, random, first"


def test_bad_settings_say_their_flag_in_one_line(tmp_path):
    cloud = write_npy(tmp_path / "c.npy", sphere_points(50, 0))
    result, _ = invoke("point-classify", cloud, "--points", "0", "--model", tmp_path / "absent.pt")
    assert result.exit_code == 2 and result.stderr == "error: --points must be at least 1, got 0\n"
    result, _ = invoke("point-eval", write_h5(tmp_path / "s.h5", [sphere_points(50, 0)], [1]), "--view-weights", "1,2")
    assert result.exit_code == 2
    assert result.stderr == "error: --view-weights '1,2': v2 has 10 views; give 10 weights >= 0\n"


# ---------------------------------------------------------------- one result per cloud


def test_a_views_picture_that_cannot_be_written_fails_that_cloud_only(tmp_path, tiny_vit_path, monkeypatch):
    clouds = [write_npy(tmp_path / f"{name}.npy", maker(300, 0)) for name, maker in (("ball", sphere_points),
              ("box", cube_points), ("can", cylinder_points))]  # fmt: skip
    write_png = point.write_png

    def disk_full_for_the_box(path, picture):
        if path.name == "box_views.png":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        write_png(path, picture)

    monkeypatch.setattr(point, "write_png", disk_full_for_the_box)
    out = tmp_path / "views"
    result, rows = invoke("point-classify", *clouds, "--points", "64", "--save-views", "--out", out,
                          "--model", tiny_vit_path, "--device", "cpu", "--json")  # fmt: skip
    assert result.exit_code == 4
    assert [row["status"] for row in rows] == ["ok", "failed", "ok"]
    assert sorted(p.name for p in out.iterdir()) == ["ball_views.png", "can_views.png"]
    failure = f"error: {clouds[1]}: No space left on device ({out / 'box_views.png'})"
    assert result.stderr.splitlines() == [failure, "error: 1 of 3 inputs failed"]


def test_a_bad_shape_fails_alone_and_the_rest_of_its_set_is_scored(tmp_path, tiny_vit_path):
    broken = sphere_points(200, 1)
    broken[5] = np.nan
    path = write_h5(tmp_path / "set.h5", [cube_points(200, 0), broken, cylinder_points(200, 2)], [7, 0, 8])
    result = runner.invoke(app, ["point-eval", str(path), "--model", str(tiny_vit_path), "--device", "cpu", "--json"])
    assert result.exit_code == 4
    report = json.loads(result.stdout)
    assert report["command"] == "point-eval" and report["counts"] == {"ok": 2, "skipped": 0, "failed": 1}
    assert [row["input"] for row in report["results"]] == [f"{path}[{i}]" for i in range(3)]
    failed = report["results"][1]
    assert failed["status"] == "failed" and failed["error"] == f"{path}[1]: the cloud has NaN or infinite coordinates"
    ok = [row for row in report["results"] if row["status"] == "ok"]
    assert [row["label"] for row in ok] == ["car", "chair"] and all(len(row["predictions"]) == 5 for row in ok)
    hits = [row["predictions"][0] == row["label"] for row in ok]
    top5 = [row["label"] in row["predictions"] for row in ok]
    assert report["shapes"] == 2 and report["top1"] == pytest.approx(100 * np.mean(hits))
    assert report["top5"] == pytest.approx(100 * np.mean(top5))


def test_clouds_are_scored_in_batches_of_batch_size(tmp_path, tiny_vit_path, monkeypatch):
    sizes = []
    compute_batch = point.PointJob.compute_batch

    def recording(job, items):
        sizes.append(len(items))
        return compute_batch(job, items)

    monkeypatch.setattr(point.PointJob, "compute_batch", recording)
    monkeypatch.setattr(point, "CLOUD_BATCH", 3)
    path = write_h5(tmp_path / "set.h5", [sphere_points(100, s) for s in range(7)])
    report = point.classify([path], labels=["a", "b"], model_name=str(tiny_vit_path), device="cpu",
                            options=CloudOptions(points=32))  # fmt: skip
    assert sizes == [3, 3, 1] and len(report.ok) == 7
    assert report.summary == {"model": str(tiny_vit_path), "projection": "v2", "prompts": "template",
                              "view_weights": "uniform"}  # fmt: skip
