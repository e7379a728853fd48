"""CLIP-ViL features: pixels as the official mappers make them, grids equal to the towers run by hand, files, CLI."""

from __future__ import annotations

import copy
import errno
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_RESNET, TINY_VIT, build_tiny_clip
from makers.images import draw_shapes_image, write_image
from makers.report import json_rows
from PIL import Image
from torchvision import transforms
from typer.testing import CliRunner

from clipcli.cli import app
from clipcli.errors import ParameterError
from clipcli.media.images import load_image
from clipcli.models import load_clip
from clipcli.models.spatial import attention_pool, resize_grid_embedding
from clipcli.pipelines import features, features_grid

runner = CliRunner()
CLIP_NORMALIZE = transforms.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))


@pytest.fixture(scope="module")
def tiny_rn():
    return build_tiny_clip(TINY_RESNET, 0)


@pytest.fixture(scope="module")
def tiny_vit():
    return build_tiny_clip(TINY_VIT, 1)


def timm_resize(positional_embedding: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """timm's resize_pos_embed as of mid 2021: class entry kept, the square grid resized bilinearly."""
    token, cells = positional_embedding[:1], positional_embedding[1:]
    side = int(len(cells) ** 0.5)
    cells = cells.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    cells = F.interpolate(cells, size=grid, mode="bilinear")
    return torch.cat([token, cells.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)])


def stem_and_layers_by_hand(visual, x):
    """ModifiedResNet.forward with the attention pool commented out, as CLIP-ViL's clip/model.py has it."""
    for conv, bn, relu in ((visual.conv1, visual.bn1, visual.relu1), (visual.conv2, visual.bn2, visual.relu2),
                           (visual.conv3, visual.bn3, visual.relu3)):  # fmt: skip
        x = relu(bn(conv(x)))
    x = visual.avgpool(x)
    return visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))


def vit_tokens_by_hand(visual, image, blocks):
    x = visual.conv1(image)
    height, width = x.shape[-2:]
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding + torch.zeros(x.shape[0], 1, x.shape[-1])
    x = torch.cat([cls, x], dim=1) + timm_resize(visual.positional_embedding, (height, width))
    x = visual.ln_pre(x).permute(1, 0, 2)
    for block in list(visual.transformer.resblocks)[:blocks]:
        x = block(x)
    return x.permute(1, 0, 2), (height, width)


# ---------------------------------------------------------------- pixels


@pytest.mark.parametrize(
    "shape, expected",
    [((480, 640), (600, 800)), ((640, 480), (800, 600)), ((300, 1200), (250, 1000)), ((600, 1000), (600, 1000)),
     ((1000, 1000), (600, 600)), ((333, 500), (600, 901)), ((90, 130), (600, 867))],
)  # fmt: skip
def test_shortest_edge_size_follows_detectron2(shape, expected):
    assert features_grid.shortest_edge_size(*shape) == expected


def test_vqa_pixels_are_two_pil_bilinear_resizes():
    rgb = np.random.default_rng(0).integers(0, 256, (90, 130, 3), dtype=np.uint8)
    expected = Image.fromarray(rgb).resize((867, 600), Image.BILINEAR).resize((1000, 600), Image.BILINEAR)
    pixels = features_grid.vqa_pixels(rgb)
    assert pixels.shape == (600, 1000, 3) and pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels, np.asarray(expected))


def test_caption_pixels_and_normalisation_match_torchvision():
    rgb = draw_shapes_image((150, 260), seed=3)
    official = transforms.Compose(
        [transforms.Resize((448, 448), interpolation=transforms.InterpolationMode.BICUBIC),
         transforms.CenterCrop((448, 448)), transforms.ToTensor()]
    )(Image.fromarray(rgb))  # fmt: skip
    ours = features_grid.normalize(torch.from_numpy(features_grid.caption_pixels(rgb))[None])
    torch.testing.assert_close(ours[0], CLIP_NORMALIZE(official), rtol=0, atol=1e-5)


# ---------------------------------------------------------------- grids


def test_resnet_vqa_grid_is_layer4_without_attention_pool(tiny_rn):
    images = torch.randn(2, 3, 600, 1000)
    with torch.no_grad():
        expected = stem_and_layers_by_hand(tiny_rn.visual, images).permute(0, 2, 3, 1)
    grid = features_grid.vqa_grid(tiny_rn, images)
    assert grid.shape == (2, 18, 31, 512)  # stride 32; layer4's 512 channels, not the 256-d pooled embedding
    torch.testing.assert_close(grid, expected, rtol=0, atol=0)


def test_vit_vqa_grid_is_patch_tokens_before_the_last_block(tiny_vit):
    image = torch.randn(1, 3, 600, 1000)
    with torch.no_grad():
        tokens, (height, width) = vit_tokens_by_hand(tiny_vit.visual, image, blocks=1)  # first 1 of 2 blocks
    assert (height, width) == (18, 31)
    grid = features_grid.vqa_grid(tiny_vit, image)
    assert grid.shape == (1, 18, 31, 64)
    torch.testing.assert_close(grid, tokens[:, 1:].reshape(1, 18, 31, 64), rtol=1e-5, atol=1e-5)


def test_attention_pool_matches_clip_at_its_own_size_and_resized_embedding_at_14(tiny_rn):
    visual = tiny_rn.visual
    with torch.no_grad():
        grid7 = stem_and_layers_by_hand(visual, torch.randn(2, 3, 224, 224))
        torch.testing.assert_close(attention_pool(visual.attnpool, grid7), visual.attnpool(grid7), rtol=0, atol=0)
        images = torch.randn(2, 3, 448, 448)
        pool14 = copy.deepcopy(visual.attnpool)  # as clip_prepro_feats.py: swap in the resized embedding
        pool14.positional_embedding = torch.nn.Parameter(timm_resize(pool14.positional_embedding, (14, 14)))
        expected_fc = pool14(stem_and_layers_by_hand(visual, images))
    att, fc = features_grid.caption_features(tiny_rn, images)
    assert att.shape == (2, 14, 14, 512) and fc.shape == (2, 256)
    torch.testing.assert_close(fc, expected_fc, rtol=1e-5, atol=1e-6)
    assert visual.attnpool.positional_embedding.shape == (50, 512)  # the shared model is left alone


def test_vit_caption_features_are_all_blocks_with_the_class_token_as_fc(tiny_vit):
    image = torch.randn(1, 3, 448, 448)
    with torch.no_grad():
        tokens, _ = vit_tokens_by_hand(tiny_vit.visual, image, blocks=2)
    att, fc = features_grid.caption_features(tiny_vit, image)
    assert att.shape == (1, 14, 14, 64) and fc.shape == (1, 64)
    torch.testing.assert_close(att, tokens[:, 1:].reshape(1, 14, 14, 64), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fc, tokens[:, 0], rtol=1e-5, atol=1e-5)


def test_resize_grid_embedding_keeps_the_class_entry_and_is_identity_at_the_same_size():
    embedding = torch.randn(50, 8)
    assert resize_grid_embedding(embedding, (7, 7)) is embedding
    resized = resize_grid_embedding(embedding, (18, 31))
    assert resized.shape == (1 + 18 * 31, 8)
    torch.testing.assert_close(resized[0], embedding[0], rtol=0, atol=0)
    torch.testing.assert_close(resized, timm_resize(embedding, (18, 31)))


# ---------------------------------------------------------------- files and the CLI


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    write_image(folder / "a.jpg", draw_shapes_image((120, 160), seed=1))
    write_image(folder / "b.png", draw_shapes_image((200, 100), seed=2))
    (folder / "broken.jpg").write_bytes(b"not an image")
    return folder


def invoke(*args):
    return runner.invoke(app, [*map(str, args), "--device", "cpu", "--quiet"])


def test_vqa_layout_files_resume_and_report_bad_images(photos, tmp_path, tiny_rn_path):
    out = tmp_path / "feats"
    result = invoke("features", photos, "--model", tiny_rn_path, "--out", out, "--json")
    assert result.exit_code == 4
    report = json.loads(result.stdout)
    assert {key: report[key] for key in ("command", "layout", "model", "dtype", "counts")} == {
        "command": "features", "layout": "vqa", "model": str(tiny_rn_path), "dtype": "float16",
        "counts": {"ok": 2, "skipped": 0, "failed": 1},
    }  # fmt: skip
    rows = json_rows(result.stdout)
    assert [row["status"] for row in rows] == ["ok", "ok", "failed"]
    assert rows[0]["outputs"] == [str(out / "a.npy")] and rows[0]["shapes"] == {"grid": [1, 18, 31, 512]}
    assert "broken.jpg" in rows[2]["error"]
    saved = np.load(out / "a.npy")
    assert saved.shape == (1, 18, 31, 512) and saved.dtype == np.float16
    model, _ = load_clip(tiny_rn_path, device="cpu")
    pixels = torch.from_numpy(features_grid.vqa_pixels(load_image(photos / "a.jpg")))[None]
    expected = features_grid.vqa_grid(model, features_grid.normalize(pixels)).half().numpy()
    np.testing.assert_array_equal(saved[0], expected[0])
    assert sorted(p.name for p in out.iterdir()) == ["a.npy", "b.npy"]  # no temp files left behind

    again = invoke("features", photos / "a.jpg", photos / "b.png", "--model", tiny_rn_path, "--out", out, "--json")
    assert again.exit_code == 0
    assert [row["status"] for row in json_rows(again.stdout)] == ["skipped", "skipped"]


def test_caption_layout_writes_the_captioner_files(photos, tmp_path, tiny_rn_path):
    out = tmp_path / "cap"
    result = invoke("features", photos / "a.jpg", "--model", tiny_rn_path, "--layout", "caption", "--out", out)
    assert result.exit_code == 0, result.output
    with np.load(out / "att" / "a.npz") as archive:
        assert list(archive.keys()) == ["feat"]
        att = archive["feat"]
    fc = np.load(out / "fc" / "a.npy")
    assert att.shape == (14, 14, 512) and att.dtype == np.float32
    assert fc.shape == (256,) and fc.dtype == np.float32


def test_pooled_layout_appends_new_images_and_refuses_another_model(photos, tmp_path, tiny_vit_path, tiny_rn_path):
    out = tmp_path / "pooled"
    first = invoke("features", photos / "a.jpg", "--model", tiny_vit_path, "--layout", "pooled", "--out", out)
    assert first.exit_code == 0, first.output
    result = invoke("features", photos, "--model", tiny_vit_path, "--layout", "pooled", "--out", out, "--json")
    assert result.exit_code == 4
    report = json.loads(result.stdout)
    assert [row["status"] for row in json_rows(result.stdout)] == ["skipped", "ok", "failed"]
    assert json_rows(result.stdout)[0] == {"input": str(photos / "a.jpg"), "status": "skipped",
                                           "reason": "already in the index", "row": 0}  # fmt: skip
    assert json_rows(result.stdout)[1]["row"] == 1
    assert {key: report[key] for key in ("layout", "dtype", "rows", "matrix", "index")} == {
        "layout": "pooled", "dtype": "float32", "rows": 2, "matrix": str(out / "pooled.npy"),
        "index": str(out / "pooled.json"),
    }  # fmt: skip
    matrix = np.load(out / "pooled.npy")
    index = json.loads((out / "pooled.json").read_text())
    assert matrix.shape == (2, 32) and index["dim"] == 32
    assert [name.rsplit("/", 1)[-1] for name in index["images"]] == ["a.jpg", "b.png"]
    model, preprocess = load_clip(tiny_vit_path, device="cpu")
    with torch.no_grad():
        batch = torch.stack([preprocess(Image.fromarray(load_image(photos / name))) for name in ("a.jpg", "b.png")])
        expected = model.encode_image(batch).numpy()
    np.testing.assert_allclose(matrix, expected, rtol=1e-4, atol=1e-5)

    other = invoke("features", photos / "a.jpg", "--model", tiny_rn_path, "--layout", "pooled", "--out", out)
    assert other.exit_code == 2 and "use --overwrite" in other.stderr


def test_bad_inputs_and_options_exit_2(photos, tmp_path, tiny_rn_path):
    single = invoke("features", photos / "broken.jpg", "--model", tiny_rn_path, "--out", tmp_path / "x")
    assert single.exit_code == 2
    assert single.stderr.strip().splitlines() == [
        f"error: {photos / 'broken.jpg'}: not an image (or an unsupported image format)"
    ]
    (photos / "sub").mkdir()
    write_image(photos / "sub" / "a.png", draw_shapes_image(64, seed=4))
    clash = invoke("features", photos / "a.jpg", photos / "sub" / "a.png", "--model", tiny_rn_path, "--out", tmp_path)
    assert clash.exit_code == 2 and "would both write a.npy" in clash.stderr
    layout = invoke("features", photos / "a.jpg", "--model", tiny_rn_path, "--layout", "fpn")
    assert layout.exit_code == 2 and "'fpn' is not one of" in layout.stderr
    assert not (tmp_path / "x").exists()


def test_a_write_failing_with_a_full_disk_fails_that_image_only(photos, tmp_path, tiny_rn_path, monkeypatch):
    write = features.GridLayout.write

    def full_disk_for_b(self, arrays, paths):
        if paths[0].stem == "b":
            raise OSError(errno.ENOSPC, "No space left on device", str(paths[0]))
        write(self, arrays, paths)

    monkeypatch.setattr(features.GridLayout, "write", full_disk_for_b)
    out = tmp_path / "feats"
    result = invoke("features", photos / "a.jpg", photos / "b.png", "--model", tiny_rn_path, "--out", out)
    assert result.exit_code == 4, result.output
    assert sorted(p.name for p in out.iterdir()) == ["a.npy"]
    assert result.stderr.splitlines() == [
        f"error: {photos / 'b.png'}: No space left on device ({out / 'b.npy'})",
        "error: 1 of 2 inputs failed",
    ]


def test_a_pooled_save_failing_with_a_full_disk_fails_that_image_and_a_rerun_adds_it(
    photos, tmp_path, tiny_vit_path, monkeypatch
):
    write = features._write_pooled
    failures = []

    def full_disk_once_for_b(out, matrix, names, model_name):
        if names[-1].endswith("b.png") and not failures:
            failures.append(names[-1])
            raise OSError(errno.ENOSPC, "No space left on device", str(out / "pooled.npy"))
        write(out, matrix, names, model_name)

    monkeypatch.setattr(features, "_write_pooled", full_disk_once_for_b)
    monkeypatch.setattr(features, "SAVE_SECONDS", 0.0)  # save after every image
    monkeypatch.setattr(features, "SAVE_COST_RATIO", 0.0)
    out = tmp_path / "pooled"
    images = [photos / "a.jpg", photos / "b.png"]
    first = invoke("features", *images, "--model", tiny_vit_path, "--layout", "pooled", "--out", out, "--json")
    assert first.exit_code == 4, first.output
    assert [(row["status"], row.get("row")) for row in json_rows(first.stdout)] == [("ok", 0), ("failed", None)]
    assert first.stderr.splitlines()[0] == f"error: {images[1]}: No space left on device ({out / 'pooled.npy'})"
    assert [Path(name).name for name in json.loads((out / "pooled.json").read_text())["images"]] == ["a.jpg"]
    assert np.load(out / "pooled.npy").shape == (1, 32)

    again = invoke("features", *images, "--model", tiny_vit_path, "--layout", "pooled", "--out", out, "--json")
    assert again.exit_code == 0, again.output
    assert [(row["status"], row["row"]) for row in json_rows(again.stdout)] == [("skipped", 0), ("ok", 1)]
    assert np.load(out / "pooled.npy").shape == (2, 32)


def test_an_image_named_twice_gets_one_pooled_row(photos, tmp_path, tiny_vit_path, monkeypatch):
    monkeypatch.chdir(photos)
    out = tmp_path / "pooled"
    report = features.run([Path("a.jpg"), photos / "a.jpg"], out=out, layout="pooled",
                          model_name=str(tiny_vit_path), device="cpu")  # fmt: skip
    assert [(result.input, result.status, result.data) for result in report.results] == [
        ("a.jpg", "ok", {"row": 0})
    ] * 2
    assert np.load(out / "pooled.npy").shape == (1, 32) and report.summary["rows"] == 1


def test_extract_with_a_loaded_model_writes_what_run_writes_in_any_batch_size(photos, tmp_path, tiny_rn_path):
    images = [photos / "a.jpg", photos / "b.png"]
    by_run = features.run(images, out=tmp_path / "run", layout="caption", model_name=str(tiny_rn_path),
                          batch_size=2, device="cpu")  # fmt: skip
    model, preprocess = load_clip(tiny_rn_path, device="cpu")
    by_extract = features.extract(model, preprocess, images, out=tmp_path / "extract", model_name="tiny",
                                  layout="caption", batch_size=1, workers=1)  # fmt: skip
    assert by_extract.summary == {"layout": "caption", "model": "tiny", "dtype": "float32"}
    assert by_run.summary["model"] == str(tiny_rn_path)
    assert [r.data["shapes"] for r in by_extract.results] == [{"att": [14, 14, 512], "fc": [256]}] * 2
    for name in ("att/a.npz", "att/b.npz"):
        with np.load(tmp_path / "run" / name) as ran, np.load(tmp_path / "extract" / name) as extracted:
            np.testing.assert_allclose(ran["feat"], extracted["feat"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "run/fc/b.npy"), np.load(tmp_path / "extract/fc/b.npy"), atol=1e-5)


def test_a_features_job_pickles_without_its_model_or_rows(tmp_path, tiny_vit_path):
    job = features.features_job("pooled", out=tmp_path, model_name=str(tiny_vit_path), model_key="tiny",
                                dtype="float32", device="cpu", workers=2)  # fmt: skip
    job.resume(overwrite=False)
    job.setup()
    copy_of_job = pickle.loads(pickle.dumps(job))
    assert copy_of_job == job and copy_of_job.read_workers == 2
    assert not any(name.startswith("_") for name in vars(copy_of_job))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"layout": "fpn"}, "layout: must be one of vqa, caption, pooled, not 'fpn'"),
        ({"dtype": "bfloat16"}, "dtype: must be float16 or float32, not 'bfloat16'"),
        ({"batch_size": 0}, "batch_size: must be at least 1"),
    ],
)
def test_bad_options_name_the_python_parameter_before_the_model_loads(options, message, photos, tmp_path):
    with pytest.raises(ParameterError) as caught:
        features.run([photos / "a.jpg"], out=tmp_path / "x", model_name="no-such-model", **options)
    assert str(caught.value) == message
    assert caught.value.for_flag().startswith("--" + caught.value.parameter.replace("_", "-") + " must be")
