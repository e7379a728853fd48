"""DepthCLIP: the formula chain, sizes, backbone checks, metrics, output files, CLI."""

from __future__ import annotations

import json

import clip
import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_RESNET, build_tiny_clip
from makers.images import draw_shapes_image, write_image
from makers.report import json_rows
from typer.testing import CliRunner

from clipcli.cli import app
from clipcli.errors import BadInputError
from clipcli.models import load_clip
from clipcli.pipelines import depth, depth_eval

runner = CliRunner()


@pytest.fixture
def tiny_rn(tiny_rn_path):
    return load_clip(tiny_rn_path, device="cpu")[0]


def official_chain(model, image, bins, words, temperature):
    """DepthCLIP's MonoCLIP.forward, written out step by step from the spec."""
    v = model.visual
    x = v.avgpool(v.relu3(v.bn3(v.conv3(v.relu2(v.bn2(v.conv2(v.relu1(v.bn1(v.conv1(image))))))))))
    x = v.layer4(v.layer3(v.layer2(v.layer1(x))))
    b, c, h, w = x.shape
    img_f = x.reshape(-1, c, h * w).permute(2, 0, 1).permute(1, 0, 2)  # B, HW, C
    img_f = img_f / img_f.norm(dim=-1, keepdim=True)
    img_f = F.interpolate(img_f, scale_factor=0.5)
    columns = []
    for word in words:
        emb = model.encode_text(clip.tokenize([f"This object is {word}"]))
        emb = emb / emb.norm(dim=-1, keepdim=True)
        mean = emb.mean(dim=0)
        columns.append(mean / mean.norm())
    text_f = torch.stack(columns, dim=1)
    logits = 100.0 * img_f @ text_f
    logits = logits.permute(0, 2, 1).reshape(-1, len(bins), h, w) / temperature
    probs = logits.softmax(dim=1)
    return (probs * torch.tensor(bins).view(1, -1, 1, 1)).sum(1, keepdim=True)


@pytest.mark.parametrize("flip", [False, True])
def test_estimate_depth_equals_official_chain(tiny_rn, flip):
    torch.manual_seed(0)
    image = torch.randn(2, 3, 64, 96)
    bins, words = list(depth.DEPTH_BINS), list(depth.DEPTH_WORDS)
    with torch.no_grad():
        expected = official_chain(tiny_rn, image, bins, words, 0.1)
        if flip:
            expected = 0.5 * (expected + official_chain(tiny_rn, image.flip(3), bins, words, 0.1).flip(3))
        expected = F.interpolate(expected, size=(64, 96), mode="bilinear", align_corners=True)
    ours = depth.estimate_depth(tiny_rn, image, flip=flip)
    assert ours.shape == (2, 1, 64, 96)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


def test_depth_stays_within_bins_and_follows_size(tiny_rn):
    image = torch.randn(1, 3, 96, 160) * 3
    out = depth.estimate_depth(tiny_rn, image, bins=[0.5, 4.0], temperature=0.1, words=["near", "far"])
    assert out.shape == (1, 1, 96, 160)
    assert out.min() >= 0.5 - 1e-5 and out.max() <= 4.0 + 1e-5
    with pytest.raises(BadInputError, match="multiples of 32"):
        depth.estimate_depth(tiny_rn, torch.randn(1, 3, 100, 96))


def test_temperature_sharpens_towards_bin_extremes(tiny_rn):
    image = torch.randn(1, 3, 64, 64)
    soft = depth.estimate_depth(tiny_rn, image, temperature=1e5, flip=False)
    sharp = depth.estimate_depth(tiny_rn, image, temperature=1e-4, flip=False)
    # A huge temperature gives the plain mean of the bins; a tiny one picks single bins.
    assert torch.allclose(soft, torch.full_like(soft, float(np.mean(depth.DEPTH_BINS))), atol=1e-3)
    grid = F.interpolate(sharp, size=(2, 2), mode="nearest")
    assert all(any(abs(v - b) < 1e-3 for b in depth.DEPTH_BINS) for v in grid.flatten().tolist())


def test_backbones_without_the_2x_channel_ratio_are_refused(tiny_vit_path, tmp_path):
    vit = load_clip(tiny_vit_path, device="cpu")[0]
    with pytest.raises(BadInputError, match="needs a ResNet CLIP"):
        depth.estimate_depth(vit, torch.randn(1, 3, 64, 64))
    path = tmp_path / "rn_ratio4.pt"
    torch.save(build_tiny_clip({**TINY_RESNET, "embed_dim": 128}, 3).state_dict(), path)
    odd = load_clip(path, device="cpu")[0]
    with pytest.raises(BadInputError, match="2 x 128 channels"):
        depth.estimate_depth(odd, torch.randn(1, 3, 64, 64))


def test_bins_and_words_must_pair():
    with pytest.raises(BadInputError, match="^words: has 7 entries for 3 bins; each bin needs one word$"):
        depth.resolve_bins([1, 2, 3], None)
    with pytest.raises(BadInputError, match="^temperature: must be positive$"):
        depth.DepthSettings.checked(temperature=0)
    with pytest.raises(BadInputError, match="two '\\{\\}' slots"):
        depth.DepthSettings.checked(template="a {} photo")
    assert depth.resolve_bins(None, None) == (list(depth.DEPTH_BINS), list(depth.DEPTH_WORDS))


def test_network_size_rules():
    assert depth.network_size((480, 640), "auto") == (416, 544)
    assert depth.network_size((3000, 4000), "auto") == (416, 544)
    assert depth.network_size((4000, 3000), "auto") == (544, 416)
    assert depth.network_size((100, 70), "native") == (128, 96)
    assert depth.parse_size("416x544") == (416, 544)
    with pytest.raises(BadInputError, match="multiples of 32"):
        depth.parse_size("400x544")


def test_metrics_on_hand_made_pairs():
    gt = np.array([1.0, 2.0, 4.0])
    pred = np.array([1.0, 2.0, 3.0])  # the last ratio is 4/3: above 1.25, below 1.25**2
    metrics = depth_eval.depth_metrics(pred, gt, np.ones(3, bool))
    assert metrics["delta1"] == pytest.approx(2 / 3)
    assert metrics["delta2"] == pytest.approx(1.0)
    assert metrics["delta3"] == pytest.approx(1.0)
    assert metrics["abs_rel"] == pytest.approx((1 / 4) / 3)
    assert metrics["log10"] == pytest.approx(np.log10(4 / 3) / 3)
    assert metrics["rmse"] == pytest.approx(np.sqrt(1 / 3))
    far = depth_eval.depth_metrics(np.array([1.0]), np.array([2.0]), np.ones(1, bool))
    assert (far["delta1"], far["delta2"], far["delta3"]) == (0.0, 0.0, 0.0)  # ratio 2 > 1.25**3
    # Clamping to [1e-3, cap]: a prediction of 20 m counts as 10 m.
    capped = depth_eval.depth_metrics(np.array([20.0]), np.array([5.0]), np.ones(1, bool), cap=10.0)
    assert capped["abs_rel"] == pytest.approx(1.0)


def test_eigen_crop_only_for_nyu_sized_images():
    nyu = depth_eval.evaluation_region(np.ones((480, 640)), np.ones((480, 640)), (480, 640), 10.0)
    assert nyu.sum() == (471 - 45) * (601 - 46) and not nyu[0, 0] and nyu[45, 46]
    other = depth_eval.evaluation_region(np.ones((240, 320)), np.ones((240, 320)), (240, 320), 10.0)
    assert other.all()
    gt = np.array([[0.0, 5.0, 12.0]])
    assert depth_eval.evaluation_region(np.ones_like(gt), gt, (1, 3), 10.0).tolist() == [[False, True, False]]


def test_nyu_prediction_is_pasted_into_the_official_box(tiny_rn):
    rgb = draw_shapes_image((480, 640), seed=1)
    pred = depth_eval.predict_for_evaluation(tiny_rn, rgb, (480, 640), "auto")
    inside = np.zeros((480, 640), bool)
    inside[depth_eval.NYU_CROP] = True
    assert (pred[~inside] == 0).all() and (pred[inside] >= 1.0 - 1e-5).all()


def test_cli_writes_depth_files_that_agree(tiny_rn_path, tmp_path):
    write_image(tmp_path / "room.png", draw_shapes_image((150, 200), seed=2))
    out = tmp_path / "out"
    result = runner.invoke(app, ["depth", str(tmp_path / "room.png"), "--model", str(tiny_rn_path),
                                 "--out", str(out), "--device", "cpu", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    [row] = json_rows(result.stdout)
    metres = np.load(out / "room_depth.npy")
    assert metres.shape == (150, 200) and metres.dtype == np.float32
    millimetres = cv2.imread(str(out / "room_depth.png"), cv2.IMREAD_UNCHANGED)
    assert millimetres.dtype == np.uint16
    assert np.abs(millimetres / 1000.0 - metres).max() <= 0.0005 + 1e-6
    assert row["min"] == pytest.approx(metres.min(), abs=1e-4) and row["max"] <= 3.0
    color = cv2.imread(str(out / "room_depth_color.png"))
    assert color.shape[0] == 150 and color.shape[1] > 200 + 40  # the legend panel
    legend = color[:, 205:]
    assert (legend.std(axis=2) > 20).any() and (legend < 60).all(axis=2).any()  # colour bar and dark tick text
    # A second run skips the existing outputs.
    again = runner.invoke(app, ["depth", str(tmp_path / "room.png"), "--model", str(tiny_rn_path),
                                "--out", str(out), "--device", "cpu", "--json"])  # fmt: skip
    assert json_rows(again.stdout)[0]["status"] == "skipped"


def test_cli_bad_inputs(tiny_rn_path, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    out = tmp_path / "out"
    result = runner.invoke(app, ["depth", str(bad), "--model", str(tiny_rn_path), "--out", str(out)])
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {bad}: not an image (or an unsupported image format)"]
    assert not out.exists() or not any(out.iterdir())
    write_image(tmp_path / "ok.png", draw_shapes_image(64, seed=3))
    result = runner.invoke(app, ["depth", str(bad), str(tmp_path / "ok.png"), "--model", str(tiny_rn_path),
                                 "--out", str(out), "--quiet"])  # fmt: skip
    assert result.exit_code == 4 and (out / "ok_depth.npy").exists()
    result = runner.invoke(app, ["depth", str(tmp_path / "ok.png"), "--bins", "1,2", "--model", str(tiny_rn_path)])
    assert result.exit_code == 2
    assert result.stderr == "error: --words has 7 entries for 2 bins; each bin needs one word\n"
    result = runner.invoke(app, ["depth", str(tmp_path / "ok.png"), "--temperature", "0", "--model", str(tiny_rn_path)])
    assert result.exit_code == 2 and result.stderr == "error: --temperature must be positive\n"


def test_depth_eval_cli_reports_metrics(tiny_rn_path, tmp_path):
    rgb = draw_shapes_image((480, 640), seed=4)
    write_image(tmp_path / "rgb.png", rgb)
    gt_mm = np.full((480, 640), 2000, np.uint16)
    cv2.imwrite(str(tmp_path / "gt.png"), gt_mm)
    result = runner.invoke(app, ["depth-eval", f"{tmp_path / 'rgb.png'},{tmp_path / 'gt.png'}",
                                 "--model", str(tiny_rn_path), "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    model = load_clip(tiny_rn_path, device="cpu")[0]
    pred = depth_eval.predict_for_evaluation(model, rgb, (480, 640), "auto")
    gt = gt_mm / 1000.0
    expected = depth_eval.depth_metrics(pred, gt, depth_eval.evaluation_region(pred, gt, (480, 640), 10.0))
    assert report["images"] == 1
    for name, value in expected.items():
        assert report["mean"][name] == pytest.approx(value, rel=1e-5)
    eight_bit = tmp_path / "gt8.png"
    cv2.imwrite(str(eight_bit), np.full((480, 640), 2, np.uint8))
    result = runner.invoke(app, ["depth-eval", f"{tmp_path / 'rgb.png'},{eight_bit}", "--model", str(tiny_rn_path)])
    assert result.exit_code == 2 and "16-bit" in result.stderr
