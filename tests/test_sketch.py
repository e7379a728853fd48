"""`clipcli sketch` (CLIPasso): loss, augmentation, saliency, initialisation, stopping, the command."""

from __future__ import annotations

import errno
import json
import math
import re
import xml.etree.ElementTree as ElementTree
from dataclasses import asdict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from clip.model import CLIP
from conftest import TINY_RESNET, TINY_VIT, build_tiny_clip
from makers.images import draw_shapes_image, write_image
from makers.report import json_rows
from PIL import Image
from rich.progress import Progress
from torchvision.transforms import InterpolationMode
from typer.testing import CliRunner

from clipcli import ui
from clipcli.cli import app
from clipcli.errors import BadInputError, ParameterError
from clipcli.pipelines import sketch, sketch_files
from clipcli.pipelines.sketch import saliency_map, sketch_loss
from clipcli.pipelines.sketch_augment import augment, random_augmentations
from clipcli.pipelines.sketch_files import read_target, target_tensor
from clipcli.pipelines.sketch_init import (
    grabcut_mask,
    initial_strokes,
    otsu_threshold,
    sample_start_pixels,
    start_probabilities,
    stroke_start_probabilities,
    xdog_edges,
)
from clipcli.pipelines.sketch_objective import ClipassoLoss, render_sketch, resnet_features
from clipcli.pipelines.sketch_optimize import SeedRun, initial_points, optimize_strokes
from clipcli.render.svg import read_svg

MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
# Narrower than conftest's tiny ResNet (fast enough for 30 steps in a test), with He-initialised
# convolutions so features keep their scale through the network: with clip's default init the loss
# is ~1e-5, below CLIPasso's 1e-5 improvement threshold, and every run would stop at once.
SKETCH_RESNET = dict(TINY_RESNET, vision_width=8, embed_dim=64)
runner = CliRunner()


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The optimisation tests run hundreds of small ops; on a shared, busy CPU two OpenMP threads
    wait on each other at every op (seconds per step), one thread does not."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sketch_resnet(seed: int = 0) -> CLIP:
    model = build_tiny_clip(SKETCH_RESNET, seed)
    generator = torch.Generator().manual_seed(seed)
    for module in model.visual.modules():
        if isinstance(module, torch.nn.Conv2d):
            fan_in = module.weight[0].numel()
            module.weight.data = torch.randn(module.weight.shape, generator=generator) * math.sqrt(2 / fan_in)
    return model.eval()


@pytest.fixture(scope="module")
def resnet() -> CLIP:
    return sketch_resnet()


@pytest.fixture(scope="module")
def sketch_rn_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("sketch_models") / "sketch-rn.pt"
    torch.save(sketch_resnet().state_dict(), path)
    return path


def shapes_target(seed: int = 3) -> torch.Tensor:
    return target_tensor(draw_shapes_image(224, seed=seed))


def stages_by_name(visual, images: torch.Tensor):
    """layer2, layer3 and the attention pool, run stage by stage here, independently of the pipeline."""
    x = ((images - MEAN) / STD).type(visual.conv1.weight.dtype)
    x = visual.relu1(visual.bn1(visual.conv1(x)))
    x = visual.relu2(visual.bn2(visual.conv2(x)))
    x = visual.avgpool(visual.relu3(visual.bn3(visual.conv3(x))))
    layer2 = visual.layer2(visual.layer1(x))
    layer3 = visual.layer3(layer2)
    return layer2, layer3, visual.attnpool(visual.layer4(layer3))


def expected_loss(visual, sketch: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE(layer2) + MSE(layer3) + 0.1 (1 - cos(attnpool)) per sketch, written from the spec."""
    with torch.no_grad():
        s2, s3, sg = stages_by_name(visual, sketch)
        t2, t3, tg = stages_by_name(visual, target)
    mse = [((s - t) ** 2).flatten(1).mean(1) for s, t in ((s2, t2), (s3, t3))]
    cosine = (sg * tg).sum(1) / (sg.norm(dim=1) * tg.norm(dim=1))
    return mse[0] + mse[1] + 0.1 * (1 - cosine)


# ---------------------------------------------------------------- loss


def test_unaugmented_loss_is_layer2_layer3_mse_plus_cosine(resnet):
    target = shapes_target()
    sketches = torch.stack([torch.ones(3, 224, 224), shapes_target(seed=9)[0]])
    ours = sketch_loss(sketches, target, resnet, augmentations=0)
    assert ours.shape == (2,)
    assert torch.allclose(ours, expected_loss(resnet.visual, sketches, target), rtol=1e-4, atol=1e-7)
    assert ours[0] > 0.05 and ours[1] > 0.05


@pytest.mark.parametrize("augmentations", [0, 1, 3])
def test_the_target_as_its_own_sketch_costs_nothing_under_joint_augmentation(resnet, augmentations):
    target = shapes_target()
    generator = torch.Generator().manual_seed(augmentations)
    loss = sketch_loss(target.expand(2, -1, -1, -1), target, resnet, augmentations, generator)
    assert loss.abs().max().item() < 1e-5
    other = sketch_loss(torch.ones(1, 3, 224, 224), target, resnet, augmentations, generator)
    assert other.item() > 0.05


def test_augmented_loss_is_the_mean_over_the_plain_and_augmented_pairs(resnet):
    target, sketch = shapes_target(), shapes_target(seed=5)
    loss = sketch_loss(sketch, target, resnet, augmentations=2, generator=torch.Generator().manual_seed(7))
    params = random_augmentations(2, 224, torch.Generator().manual_seed(7))
    views = augment(torch.cat([sketch.expand(2, -1, -1, -1), target.expand(2, -1, -1, -1)], 1), params)
    pairs = [expected_loss(resnet.visual, sketch, target)]
    pairs += [expected_loss(resnet.visual, views[i : i + 1, :3], views[i : i + 1, 3:]) for i in range(2)]
    assert loss.item() == pytest.approx(torch.cat(pairs).mean().item(), rel=1e-4)
    assert not torch.allclose(pairs[1], pairs[2])  # the two augmentations differ


def test_loss_gradient_reaches_the_sketch_but_not_the_weights(resnet):
    sketch = shapes_target(seed=5).requires_grad_(True)
    sketch_loss(sketch, shapes_target(), resnet, augmentations=1).sum().backward()
    assert sketch.grad.abs().sum() > 0
    assert all(p.grad is None and p.requires_grad for p in resnet.parameters())


def test_where_cuda_graphs_cannot_be_captured_the_loss_runs_eagerly_after_one_notice(resnet, monkeypatch):
    target, sketch = shapes_target(), shapes_target(seed=5)
    eager = ClipassoLoss(resnet, target)(sketch, 2, torch.Generator().manual_seed(4))
    notices = []
    monkeypatch.setattr(ui, "notice", notices.append)
    asked = ClipassoLoss(resnet, target)
    asked.cuda_graphs = True  # as on CUDA; here the capture fails (no GPU)
    first = asked(sketch, 2, torch.Generator().manual_seed(4))
    again = asked(sketch, 2, torch.Generator().manual_seed(4))
    assert len(notices) == 1 and notices[0].startswith("CUDA graphs unavailable here") and not asked.cuda_graphs
    for result in (first, again):
        assert torch.equal(result[0], eager[0]) and torch.equal(result[1], eager[1])


def test_rn101_stage_shapes():
    with torch.device("meta"):
        model = CLIP(512, 224, (3, 4, 23, 3), 64, None, 77, 49408, 512, 8, 12)
        layer2, layer3, pooled = resnet_features(model.visual, torch.empty(1, 3, 224, 224))
    assert layer2.shape == (1, 512, 28, 28) and layer3.shape == (1, 1024, 14, 14) and pooled.shape == (1, 512)


def test_loss_wants_a_resnet(tiny_vit_path):
    with pytest.raises(ValueError, match="ResNet"):
        sketch_loss(torch.ones(1, 3, 224, 224), torch.ones(1, 3, 224, 224), build_tiny_clip(TINY_VIT, 0))


def test_augmentation_is_torchvisions_perspective_then_resized_crop():
    images = torch.rand(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    params = random_augmentations(3, 224, torch.Generator().manual_seed(1))
    ours = augment(images, params)
    corners = [[0, 0], [223, 0], [223, 223], [0, 223]]
    for index in range(3):
        warped = TF.perspective(
            images[index], corners, params.corners[index].tolist(), InterpolationMode.BILINEAR, [0.0]
        )
        left, top = params.crop[index].tolist()
        side = params.crop_size
        theirs = TF.resized_crop(warped, top, left, side, side, [224, 224], InterpolationMode.BILINEAR, antialias=True)
        assert (ours[index] - theirs).abs().max().item() < 1e-3


def test_augmentation_parameter_ranges():
    params = random_augmentations(500, 224, torch.Generator().manual_seed(2))
    corners = torch.tensor([[0, 0], [223, 0], [223, 223], [0, 223]])
    inward = (params.corners - corners).abs()
    assert inward.min() == 0 and inward.max() == 56 and params.crop_size == 200
    assert params.crop.min() == 0 and params.crop.max() == 24


# ---------------------------------------------------------------- saliency and initialisation


def manual_cls_attention(model: CLIP, image: torch.Tensor) -> torch.Tensor:
    """Softmax(q k^T / sqrt(d)) of every head and layer, computed from the weights, CLS row, averaged."""
    visual = model.visual
    x = visual.conv1((image[None] - MEAN) / STD).flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.expand(1, 1, -1), x], 1) + visual.positional_embedding
    x = visual.ln_pre(x).transpose(0, 1)  # [tokens, 1, width]
    rows = []
    for block in visual.transformer.resblocks:
        heads, width = block.attn.num_heads, x.shape[-1]
        q, k, _ = F.linear(block.ln_1(x), block.attn.in_proj_weight, block.attn.in_proj_bias).chunk(3, dim=-1)
        q = q[:, 0].reshape(-1, heads, width // heads).transpose(0, 1)
        k = k[:, 0].reshape(-1, heads, width // heads).transpose(0, 1)
        attention = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(width // heads), dim=-1)
        rows.append(attention.mean(0)[0, 1:])
        x = block(x)
    grid = F.interpolate(torch.stack(rows).mean(0).view(1, 1, 7, 7), size=224, mode="bicubic", align_corners=False)
    grid = grid[0, 0]
    return (grid - grid.min()) / (grid.max() - grid.min())


def test_saliency_is_mean_cls_attention_over_layers_and_heads():
    torch.manual_seed(0)
    model = CLIP(32, 224, 2, 128, 32, 77, 49408, 64, 1, 1).eval()  # two heads per layer
    image = shapes_target()[0]
    ours = saliency_map(image, model)
    with torch.no_grad():
        expected = manual_cls_attention(model, image)
    assert ours.shape == (224, 224) and ours.min() == 0 and ours.max() == 1
    assert torch.allclose(ours, expected, atol=1e-5)
    with pytest.raises(ValueError, match="ViT"):
        saliency_map(image, sketch_resnet())


def test_otsu_threshold():
    assert otsu_threshold(np.array([0.0, 0.0, 0.0, 1.0, 1.0]), bins=2) == pytest.approx(0.25)
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.uniform(0.1, 0.2, 300), rng.uniform(0.7, 0.9, 100)])
    assert 0.19 < otsu_threshold(values) < 0.7  # the centre of the lower class's top bin, as skimage


def test_xdog_edges_hug_the_dark_side_of_outlines():
    rows, cols = np.mgrid[0:224, 0:224]
    inside = (rows >= 60) & (rows < 160) & (cols >= 60) & (cols < 160)
    depth = np.minimum.reduce([rows - 60, 159 - rows, cols - 60, 159 - cols])  # pixels from the outline, inside
    for grey, ring_only in ((0.6, True), (0.1, False)):
        image = torch.ones(3, 224, 224)
        image[:, inside] = grey
        edges = xdog_edges(image)
        assert not edges[~inside].any() and edges[inside & (depth < 4)].all()
        # On CLIP-normalised pixels (as CLIPasso runs it) a dark area is ink throughout; a light one only near its edge.
        assert edges[inside & (depth > 30)].any() != ring_only
    assert not xdog_edges(torch.ones(3, 32, 32)).any()


def test_start_probabilities_are_a_softmax_over_edge_pixels():
    saliency = torch.linspace(0, 1, 64 * 64).view(64, 64)
    edges = np.zeros((64, 64), bool)
    edges[10:20, 5:50] = True
    edges[0, 0] = True  # saliency 0 there: never a start
    p = stroke_start_probabilities(saliency, edges, temperature=0.3)
    assert p.sum() == pytest.approx(1.0) and (p[~edges] == 0).all() and p[0, 0] == 0
    s = saliency.double().numpy()
    assert p[15, 40] / p[12, 7] == pytest.approx(math.exp((s[15, 40] - s[12, 7]) / 0.3))


def test_sampled_start_pixels_are_distinct_edge_pixels():
    p = np.zeros((30, 30))
    p[5, 5:25] = 1.0
    pixels = sample_start_pixels(p / p.sum(), 16, seed=4)
    assert len({tuple(x) for x in pixels}) == 16 and (pixels[:, 0] == 5).all()
    assert np.array_equal(pixels, sample_start_pixels(p / p.sum(), 16, seed=4))
    with pytest.raises(BadInputError, match="only 20 start pixels for 21 strokes"):
        sample_start_pixels(p / p.sum(), 21, seed=0)


def test_start_probabilities_fall_back_from_edges_to_saliency_alone_to_uniform():
    saliency = torch.linspace(0, 1, 64 * 64).view(64, 64)
    edges = np.zeros((64, 64), bool)
    edges[10, 5:25] = True  # 20 edge pixels
    p, init = start_probabilities(saliency, edges, 20)
    assert init == "saliency-edges" and np.array_equal(p, stroke_start_probabilities(saliency, edges))
    p, init = start_probabilities(saliency, edges, 21)
    assert init == "saliency-only" and np.array_equal(p, stroke_start_probabilities(saliency, np.ones_like(edges)))
    assert np.count_nonzero(p) == 64 * 64 - 1  # every pixel but the least salient one
    for flat in (torch.zeros(64, 64), torch.full((64, 64), 0.5), torch.full((64, 64), math.nan)):
        p, init = start_probabilities(flat, edges, 16)
        assert init == "uniform" and (p == 1 / 64**2).all()


def flat_attention_vit() -> CLIP:
    """The tiny ViT with every query and key zeroed: each token attends equally to all, so nothing is salient."""
    model = build_tiny_clip(TINY_VIT, 1)
    with torch.no_grad():
        for block in model.visual.transformer.resblocks:
            block.attn.in_proj_weight[: 2 * block.attn.embed_dim] = 0
            block.attn.in_proj_bias[: 2 * block.attn.embed_dim] = 0
    return model


def test_equal_attention_everywhere_gives_a_zero_saliency_map_not_rounding_noise():
    assert torch.equal(saliency_map(shapes_target()[0], flat_attention_vit()), torch.zeros(224, 224))


def test_a_detailed_image_starts_from_saliency_weighted_edges_as_clipasso():
    vit = build_tiny_clip(TINY_VIT, 1)
    image = shapes_target()[0]
    points, init = initial_points(image[None], vit, 16, [0, 1000])
    official = stroke_start_probabilities(saliency_map(image, vit), xdog_edges(image))
    expected = [initial_strokes(sample_start_pixels(official, 16, seed), seed) for seed in (0, 1000)]
    assert init == "saliency-edges" and torch.equal(points, torch.stack(expected))


def test_initial_strokes_are_a_short_random_walk_from_their_pixel():
    pixels = np.array([[10, 200], [120, 3], [223, 223]])
    strokes = initial_strokes(pixels, seed=7)
    assert strokes.shape == (3, 4, 2) and strokes.dtype == torch.float32
    assert torch.equal(strokes[:, 0], torch.tensor([[200.0, 10.0], [3.0, 120.0], [223.0, 223.0]]))
    steps = (strokes[:, 1:] - strokes[:, :-1]).abs()
    assert steps.max() <= 5.6 + 1e-4 and (strokes[:, 1:] - strokes[:, :1]).abs().max() <= 16.8 + 1e-4
    assert torch.equal(strokes, initial_strokes(pixels, seed=7))
    assert not torch.equal(strokes, initial_strokes(pixels, seed=8))


def test_grabcut_separates_an_object_seeded_by_saliency():
    image = np.zeros((224, 224, 3), np.uint8)
    image[:] = (40, 90, 200)
    rows, cols = np.mgrid[0:224, 0:224]
    disk = (rows - 120) ** 2 + (cols - 100) ** 2 < 50**2
    image[disk] = (220, 60, 30)
    saliency = np.exp(-((rows - 115) ** 2 + (cols - 105) ** 2) / (2 * 35.0**2))
    foreground = grabcut_mask(image, saliency)
    assert (foreground & disk).sum() / (foreground | disk).sum() > 0.9
    assert grabcut_mask(image, np.zeros((224, 224))) is None


def test_targets_keep_their_aspect_and_masks_whiten_the_background(tmp_path):
    image = np.zeros((100, 200, 3), np.uint8)  # black, wide
    target = target_tensor(image)
    assert target.shape == (1, 3, 224, 224)
    assert target[0, :, :40].min() == pytest.approx(1.0) and target[0, :, 112, 30:190].max() < 0.05
    write_image(tmp_path / "wide.png", image)
    mask = np.zeros((100, 200), np.uint8)
    mask[:, :100] = 255
    write_image(tmp_path / "mask.png", mask)
    masked = read_target(tmp_path / "wide.png", tmp_path / "mask.png")
    assert masked[0, :, 112, 30:100].max() < 0.05 and masked[0, :, 112, 125:190].min() > 0.95
    write_image(tmp_path / "small.png", mask[:50])
    with pytest.raises(BadInputError, match="small.png: mask is 200x50, the image 200x100"):
        read_target(tmp_path / "wide.png", tmp_path / "small.png")


# ---------------------------------------------------------------- optimisation


def test_official_stopping_rule_and_patience():
    run = SeedRun(seed=0)
    for index, loss in enumerate([1.0, 0.5, 0.5 + 5e-6, 0.4, 0.4 + 2e-6, 0.9, 0.4 - 3e-6]):
        run.record(index * 10, loss)
        if run.stopped_at is not None:
            break
    assert (run.best_loss, run.best_iteration, run.stopped_at) == (0.4, 30, 60)
    patient = SeedRun(seed=0)
    for index, loss in enumerate([1.0, 0.9, 0.95, 0.97, 0.5]):
        patient.record(index * 10, loss, patience=2)
        if patient.stopped_at is not None:
            break
    assert (patient.best_loss, patient.stopped_at) == (0.9, 30)


def test_without_early_stop_only_patience_stops_a_seed():
    flat = [1.0, 1.0 + 2e-6, 1.0 - 3e-6, 1.0, 1.0 + 1e-6]  # would stop at the third evaluation
    run, patient = SeedRun(seed=0), SeedRun(seed=0)
    for index, loss in enumerate(flat):
        run.record(index * 10, loss, early_stop=False)
        if patient.stopped_at is None:
            patient.record(index * 10, loss, patience=3, early_stop=False)
    assert run.stopped_at is None and run.eval_iterations == [0, 10, 20, 30, 40] and run.best_loss == 1.0
    assert patient.stopped_at == 30


def test_no_early_stop_runs_every_iteration(resnet):
    target = shapes_target()
    init = initial_strokes(np.array([[60, 50], [90, 120]]), 0)[None]
    # A learning rate this small leaves the evaluation loss flat: the official rule stops at the third evaluation.
    options = dict(seeds=[0], iterations=30, augmentations=1, lr=1e-9)
    stopped = optimize_strokes(target, init, resnet, generator=torch.Generator().manual_seed(0), **options)
    full = optimize_strokes(target, init, resnet, generator=torch.Generator().manual_seed(0), early_stop=False,
                            **options)  # fmt: skip
    assert stopped.iterations == 20 and stopped.runs[0].stopped_at == 20
    assert full.iterations == 30 and full.runs[0].stopped_at is None
    assert full.runs[0].eval_iterations == [0, 10, 20, 30]


def test_optimisation_keeps_each_seeds_best_evaluated_sketch(resnet):
    target = shapes_target()
    init = torch.stack([initial_strokes(np.array([[60 + 9 * i, 50 + 11 * i] for i in range(4)]), s) for s in (0, 1)])
    result = optimize_strokes(target, init, resnet, seeds=[0, 1], iterations=11, augmentations=1,
                              generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert result.iterations == 11 and [i for i, _ in result.snapshots] == [0, 10, 11]
    for index, run in enumerate(result.runs):
        assert run.eval_iterations == [0, 10, 11] and run.best_loss == min(run.eval_losses)
        snapshot = dict(result.snapshots)[run.best_iteration]
        assert torch.equal(result.points[index], snapshot[index])
        # The kept sketch is the one the evaluation loss was measured on.
        kept = sketch_loss(render_sketch(result.points[index : index + 1]), target, resnet, augmentations=0)
        assert kept.item() == pytest.approx(run.best_loss, rel=1e-4)
    assert not torch.equal(result.points[0], init[0])


# ---------------------------------------------------------------- the command


def sketch_cli(*args):
    return runner.invoke(app, ["sketch", *map(str, args)])


@pytest.fixture
def shapes_png(tmp_path):
    path = tmp_path / "shapes.png"
    write_image(path, draw_shapes_image((180, 240), seed=3))
    return path


def test_sketch_end_to_end(tmp_path, shapes_png, sketch_rn_path, tiny_vit_path):
    out = tmp_path / "out"
    result = sketch_cli(shapes_png, "--model", sketch_rn_path, "--saliency-model", tiny_vit_path, "--strokes", 5,
                        "--iterations", 30, "--seeds", 2, "--augmentations", 1, "--animate", "gif", "--size", 96,
                        "--out", out, "--device", "cpu", "--json", "--no-early-stop")  # fmt: skip
    assert result.exit_code == 0, result.output
    (row,) = json_rows(result.stdout)
    assert row["status"] == "ok" and row["chosen_seed"] in (0, 1000) and row["iterations"] == 30
    details = json.loads((out / "shapes_sketch.json").read_text())
    seeds = details["seeds"]
    assert details["settings"]["early_stop"] is False and details["settings"]["cuda_graphs"] is True
    assert [s["seed"] for s in seeds] == [0, 1000]
    for seed in seeds:
        assert seed["eval_iterations"] == [0, 10, 20, 30]
        assert seed["eval_losses"][-1] < seed["eval_losses"][0]  # 30 steps lower the loss
    chosen = min(seeds, key=lambda s: s["best_loss"])
    assert row["chosen_seed"] == chosen["seed"] and row["loss"] == chosen["best_loss"]

    root = ElementTree.parse(out / "shapes_sketch.svg").getroot()
    assert root.get("viewBox") == "0 0 224 224" and len(root.findall("{http://www.w3.org/2000/svg}path")) == 5
    points, half_width, _ = read_svg(out / "shapes_sketch.svg")
    assert half_width == 1.5 and np.allclose(points, np.array(details["strokes"]), atol=1e-4)
    with Image.open(out / "shapes_sketch.png") as png:
        assert png.size == (96, 96) and png.getextrema()[0] < 60 and png.getextrema()[1] == 255
    with Image.open(out / "shapes_sketch.gif") as gif:
        assert gif.n_frames == chosen["best_iteration"] // 10 + 1
    assert sorted(p.name for p in out.iterdir()) == [
        "shapes_sketch.gif",
        "shapes_sketch.json",
        "shapes_sketch.png",
        "shapes_sketch.svg",
    ]


def test_same_seed_same_svg_and_existing_outputs_are_skipped(tmp_path, shapes_png, sketch_rn_path, tiny_vit_path):
    common = ["--model", sketch_rn_path, "--saliency-model", tiny_vit_path, "--strokes", 4, "--iterations", 2,
              "--seeds", 1, "--augmentations", 1, "--device", "cpu", "--json"]  # fmt: skip
    for folder in ("a", "b"):
        assert sketch_cli(shapes_png, *common, "--seed", 5, "--out", tmp_path / folder).exit_code == 0
    svg = {folder: (tmp_path / folder / "shapes_sketch.svg").read_bytes() for folder in "ab"}
    assert svg["a"] == svg["b"] and svg["a"].count(b"<path ") == 4
    again = sketch_cli(shapes_png, *common, "--seed", 5, "--out", tmp_path / "a")
    assert again.exit_code == 0 and json_rows(again.stdout)[0]["status"] == "skipped"


@pytest.mark.parametrize("kind", ["not an image", "empty", "missing"])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, kind, sketch_rn_path, tiny_vit_path):
    path = tmp_path / "bad.png"
    if kind == "not an image":
        path.write_text("hello")
    elif kind == "empty":
        path.write_bytes(b"")
    out = tmp_path / "out"
    result = sketch_cli(path, "--model", sketch_rn_path, "--saliency-model", tiny_vit_path, "--out", out,
                        "--iterations", 1, "--device", "cpu")  # fmt: skip
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "bad.png" in lines[0]
    assert not out.exists() or not any(out.iterdir())


def test_a_bad_input_in_a_batch_exits_4_after_the_others(tmp_path, shapes_png, sketch_rn_path, tiny_vit_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not a picture")
    out = tmp_path / "out"
    models = ["--model", sketch_rn_path, "--saliency-model", tiny_vit_path]
    result = sketch_cli(bad, shapes_png, *models, "--out", out, "--iterations", 1, "--seeds", 1, "--strokes", 3,
                        "--augmentations", 0, "--device", "cpu")  # fmt: skip
    assert result.exit_code == 4
    assert (out / "shapes_sketch.svg").exists() and not (out / "bad_sketch.svg").exists()


@pytest.fixture(scope="module")
def flat_vit_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("sketch_models") / "flat-vit.pt"
    torch.save(flat_attention_vit().state_dict(), path)
    return path


def low_detail_image(kind: str, path) -> None:
    if kind == "transparent":
        write_image(path, np.zeros((32, 32, 4), np.uint8))
        return
    pixels = {
        "flat colour": np.full((48, 48, 3), (200, 80, 40), np.uint8),
        "one pixel": np.full((1, 1, 3), 90, np.uint8),
        "16x16 icon": np.full((16, 16, 3), 255, np.uint8),
    }[kind]
    if kind == "16x16 icon":
        pixels[0, 0] = 250  # one faint mark: 7 XDoG edge pixels once upscaled, fewer than the strokes
    write_image(path, pixels)


@pytest.mark.parametrize(
    ("kind", "init", "notice"),
    [
        ("flat colour", "saliency-only", "sampling them from the saliency map alone"),
        ("16x16 icon", "saliency-only", "sampling them from the saliency map alone"),
        ("one pixel", "saliency-only", "sampling them from the saliency map alone"),
        ("transparent", "saliency-only", "sampling them from the saliency map alone"),
        ("flat saliency", "uniform", "sampling them uniformly over the image"),
    ],
)
def test_low_detail_images_still_get_a_sketch_with_a_notice(
    tmp_path, kind, init, notice, sketch_rn_path, tiny_vit_path, flat_vit_path
):
    path = tmp_path / "low.png"
    low_detail_image("flat colour" if kind == "flat saliency" else kind, path)
    saliency = flat_vit_path if kind == "flat saliency" else tiny_vit_path
    out = tmp_path / "out"
    result = sketch_cli(path, "--model", sketch_rn_path, "--saliency-model", saliency, "--strokes", 8,
                        "--iterations", 2, "--seeds", 1, "--augmentations", 1, "--out", out,
                        "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [f"{path}: too few edge pixels to start 8 strokes from; {notice}"]
    points, _, _ = read_svg(out / "low_sketch.svg")
    assert points.shape == (8, 4, 2) and np.isfinite(points).all()
    assert json.loads((out / "low_sketch.json").read_text())["init"] == init


def test_models_of_the_wrong_kind_are_refused_naming_their_flag(shapes_png, sketch_rn_path, tiny_vit_path, tmp_path):
    result = sketch_cli(shapes_png, "--model", tiny_vit_path, "--saliency-model", tiny_vit_path,
                        "--out", tmp_path / "out", "--device", "cpu")  # fmt: skip
    needs = "the CLIPasso loss needs a CLIP ResNet (RN50, RN101, ...)"
    assert result.exit_code == 2 and result.stderr == f"error: --model {tiny_vit_path}: {needs}\n"
    result = sketch_cli(shapes_png, "--model", sketch_rn_path, "--saliency-model", sketch_rn_path,
                        "--out", tmp_path / "out", "--device", "cpu")  # fmt: skip
    needs = "the saliency map needs a CLIP ViT (ViT-B/32, ...)"
    assert result.exit_code == 2 and result.stderr == f"error: --saliency-model {sketch_rn_path}: {needs}\n"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("arguments", "line"),
    [
        (["--strokes", 0], "--strokes must be at least 1"),
        (["--strokes", 224 * 224 + 1], "--strokes must be at most 50176, one per pixel of the canvas"),
        (["--iterations", -1], "--iterations must be at least 0"),
        (["--seeds", 0], "--seeds must be at least 1"),
        (["--augmentations", -1], "--augmentations must be at least 0"),
        (["--width", 0], "--width must be positive"),
        (["--lr", -1], "--lr must be positive"),
        (["--patience", 0], "--patience must be at least 1"),
        (["--size", 8], "--size must be at least 16"),
    ],
)
def test_a_bad_argument_is_one_line_naming_its_flag(shapes_png, arguments, line):
    result = sketch_cli(shapes_png, *arguments, "--device", "cpu")
    assert result.exit_code == 2 and result.stderr == f"error: {line}\n"


def test_python_callers_see_the_parameter_not_the_flag(shapes_png, tiny_vit_path, tmp_path):
    with pytest.raises(ParameterError, match="^lr: must be positive$"):
        sketch.SketchSettings(lr=0).check()
    with pytest.raises(ParameterError, match="^model_name: .*needs a CLIP ResNet"):
        sketch.run([shapes_png], out=tmp_path, model_name=str(tiny_vit_path), device="cpu")
    with pytest.raises(ParameterError, match="^animate: webm: expected gif or mp4$"):
        sketch.run([shapes_png], out=tmp_path, animate="webm")


class RecordingProgress(Progress):
    """A silent progress display that keeps every description its tasks were given."""

    def __init__(self):
        super().__init__(disable=True)
        self.descriptions: list[str] = []

    def update(self, task_id, **changes):
        if changes.get("description") is not None:
            self.descriptions.append(changes["description"])
        super().update(task_id, **changes)


def test_one_progress_bar_counts_images_and_shows_each_step_and_loss(
    tmp_path, shapes_png, sketch_rn_path, tiny_vit_path, monkeypatch
):
    second = tmp_path / "second.png"
    write_image(second, draw_shapes_image((64, 64), seed=4))
    bars = []
    monkeypatch.setattr(ui, "progress", lambda: bars.append(RecordingProgress()) or bars[-1])
    settings = sketch.SketchSettings(strokes=3, iterations=2, seeds=1, augmentations=0, early_stop=False)
    models = dict(model_name=str(sketch_rn_path), saliency_model_name=str(tiny_vit_path))
    report = sketch.run([shapes_png, second], out=tmp_path / "out", settings=settings, device="cpu", **models)
    [bar] = bars
    [task] = bar.tasks
    assert (task.description, task.completed, task.total) == ("sketch", 2, 2)
    steps = [re.sub(r"loss \d\.\d{4}$", "loss L", text) for text in bar.descriptions]
    assert steps == [
        *(f"sketch shapes.png step {i}/2 loss L" for i in range(3)), "sketch",
        *(f"sketch second.png step {i}/2 loss L" for i in range(3)), "sketch",
    ]  # fmt: skip
    assert report.command == "sketch" and report.counts() == {"ok": 2, "skipped": 0, "failed": 0}
    assert report.summary["settings"] == asdict(settings) and report.summary["model"] == str(sketch_rn_path)


def test_a_write_failing_for_one_image_fails_that_image_only(
    tmp_path, shapes_png, sketch_rn_path, tiny_vit_path, monkeypatch
):
    second = tmp_path / "second.png"
    write_image(second, draw_shapes_image((64, 64), seed=4))
    out = tmp_path / "out"
    real_write_svg = sketch_files.write_svg

    def disk_full_for_shapes(path, *args):
        if path.name == "shapes_sketch.svg":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write_svg(path, *args)

    monkeypatch.setattr(sketch_files, "write_svg", disk_full_for_shapes)
    result = sketch_cli(shapes_png, second, "--model", sketch_rn_path, "--saliency-model", tiny_vit_path,
                        "--strokes", 3, "--iterations", 1, "--seeds", 1, "--augmentations", 0,
                        "--out", out, "--device", "cpu", "--json")  # fmt: skip
    assert result.exit_code == 4
    assert [row["status"] for row in json_rows(result.stdout)] == ["failed", "ok"]
    assert sorted(p.name for p in out.iterdir()) == ["second_sketch.json", "second_sketch.png", "second_sketch.svg"]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: {shapes_png}: No space left on device ({out / 'shapes_sketch.svg'})",
        "error: 1 of 2 inputs failed",
    ]
