"""Where CLIPasso's strokes start: ViT saliency x XDoG edges, softmax sampling, a short random walk.

Facts from docs/methods/sketch.md (yael-vinker/CLIPasso models/painter_params.py):
the saliency map is the mean CLS-to-patch attention of CLIP ViT-B/32 over all
layers and heads, bicubic-upsampled and min-max normalised (no relevancy
rollout, no text); XDoG runs on the CLIP-normalised image; start pixels are
drawn without replacement with probabilities softmax(saliency / 0.3) over the
edge pixels; each stroke's control points are a random walk from its pixel.
Low-detail images (flat colour, small icons) have fewer edge pixels than
strokes, where the official code fails; `start_probabilities` then falls back
to the saliency map alone, and to uniform starts where the saliency is flat too.

The background remover for `--mask auto` (OpenCV GrabCut seeded from the
saliency map) also lives here: it replaces CLIPasso's U2Net, whose weights are
not available offline.
"""

from __future__ import annotations

import random

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from clip.model import VisionTransformer
from scipy.ndimage import gaussian_filter

from clipcli.errors import BadInputError
from clipcli.models.normalize import clip_normalize

SOFTMAX_TEMPERATURE = 0.3
WALK_RADIUS = 0.05  # random-walk step range, as a fraction of the canvas (+-5.6 px per step at 224)
XDOG = dict(sigma=0.8, k=10.0, gamma=0.98, phi=200.0, eps=-0.1)
GRAY_WEIGHTS = (0.2125, 0.7154, 0.0721)  # skimage.color.rgb2gray, as CLIPasso uses it
EDGE_STARTS, SALIENCY_STARTS, UNIFORM_STARTS = "saliency-edges", "saliency-only", "uniform"
FALLBACK_NOTICES = {
    SALIENCY_STARTS: "too few edge pixels to start {strokes} strokes from; sampling them from the saliency map alone",
    UNIFORM_STARTS: "too few edge pixels to start {strokes} strokes from; sampling them uniformly over the image",
}


def saliency_map(image: torch.Tensor, model) -> torch.Tensor:
    """`[H, W]` in [0, 1]: mean CLS-to-patch attention of a CLIP ViT over all layers and heads.

    `image` is `[3, H, W]` in [0, 1] at the model's resolution. `clip`'s blocks
    ask `nn.MultiheadAttention` for no weights; hooks ask for them, averaged
    over heads, so the model itself is left untouched.
    """
    visual = model.visual
    if not isinstance(visual, VisionTransformer):
        raise ValueError("saliency_map needs a CLIP ViT (ViT-B/32 in CLIPasso)")
    weight = visual.conv1.weight
    pixels = clip_normalize(image.to(weight.device, torch.float32))[None].to(weight.dtype)
    maps: list[torch.Tensor] = []

    def want_weights(module, args, kwargs):
        return args, {**kwargs, "need_weights": True, "average_attn_weights": True}

    def keep_weights(module, args, output):
        maps.append(output[1].float())  # [1, tokens, tokens], mean over heads

    handles = []
    for block in visual.transformer.resblocks:
        handles.append(block.attn.register_forward_pre_hook(want_weights, with_kwargs=True))
        handles.append(block.attn.register_forward_hook(keep_weights))
    try:
        with torch.no_grad():
            visual(pixels)
    finally:
        for handle in handles:
            handle.remove()
    cls_to_patches = torch.stack(maps)[:, 0, 0, 1:].mean(0)  # layers averaged: [grid * grid]
    if cls_to_patches.min() == cls_to_patches.max():  # nothing salient; upsampling would add rounding noise
        return torch.zeros(image.shape[-2:], device=cls_to_patches.device)
    grid = round(cls_to_patches.numel() ** 0.5)
    upsampled = F.interpolate(cls_to_patches.view(1, 1, grid, grid), size=tuple(image.shape[-2:]), mode="bicubic")
    return _min_max(upsampled[0, 0])


def _min_max(values):
    low, high = values.min(), values.max()
    return (values - low) / (high - low) if high > low else values * 0


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold over a `bins`-bin histogram of `values` (as skimage's threshold_otsu).

    The threshold is the centre of the last bin of the lower class that
    maximises the between-class variance.
    """
    values = np.asarray(values, np.float64).ravel()
    low, high = values.min(), values.max()
    if low == high:
        return float(low)
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    centres = (edges[:-1] + edges[1:]) / 2
    below = np.cumsum(counts)
    above = np.cumsum(counts[::-1])[::-1]
    mean_below = np.cumsum(counts * centres) / below
    mean_above = (np.cumsum((counts * centres)[::-1]) / above[::-1])[::-1]
    between = below[:-1] * above[1:] * (mean_below[:-1] - mean_above[1:]) ** 2
    return float(centres[np.argmax(between)])


def xdog_edges(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """Boolean `[H, W]`, true on the XDoG edges of `[3, H, W]` pixels in [0, 1].

    As CLIPasso: on the CLIP-normalised image's grey level, D = G_0.8 - 0.98 G_8,
    E = 1 where D < -0.1 else 1 + tanh(200 D), min-max, Otsu; the dark side is edge.
    """
    pixels = torch.as_tensor(image, dtype=torch.float64).cpu()
    gray = np.tensordot(GRAY_WEIGHTS, clip_normalize(pixels).numpy(), axes=(0, 0))
    sigma = XDOG["sigma"]
    difference = gaussian_filter(gray, sigma) - XDOG["gamma"] * gaussian_filter(gray, sigma * XDOG["k"])
    response = np.where(difference < XDOG["eps"], 1.0, 1.0 + np.tanh(XDOG["phi"] * difference))
    if response.max() == response.min():
        return np.zeros(gray.shape, bool)  # a flat image has no edges
    response = _min_max(response)
    return response < otsu_threshold(response)


def stroke_start_probabilities(
    saliency: torch.Tensor | np.ndarray, edges: np.ndarray, temperature: float = SOFTMAX_TEMPERATURE
) -> np.ndarray:
    """`[H, W]` float64 summing to 1: softmax(saliency / temperature) over edge pixels with saliency > 0."""
    saliency = _min_max(np.asarray(torch.as_tensor(saliency).cpu(), np.float64))
    masked = saliency * edges
    candidates = masked > 0
    probabilities = np.zeros_like(masked)
    if candidates.any():
        weights = np.exp(masked[candidates] / temperature)
        probabilities[candidates] = weights / weights.sum()
    return probabilities


def start_probabilities(
    saliency: torch.Tensor | np.ndarray, edges: np.ndarray, count: int, temperature: float = SOFTMAX_TEMPERATURE
) -> tuple[np.ndarray, str]:
    """Probabilities with at least `count` possible start pixels, and the rule that gave them.

    CLIPasso's softmax over edge pixels (`EDGE_STARTS`) first. A low-detail image
    has fewer edge pixels than strokes: then the softmax over all salient pixels
    (`SALIENCY_STARTS`), and where the saliency is flat or not finite, every pixel
    alike (`UNIFORM_STARTS`).
    """
    for rule, allowed in ((EDGE_STARTS, edges), (SALIENCY_STARTS, np.ones_like(edges, bool))):
        probabilities = stroke_start_probabilities(saliency, allowed, temperature)
        if np.count_nonzero(probabilities) >= count:
            return probabilities, rule
    return np.full(edges.shape, 1 / edges.size), UNIFORM_STARTS


def sample_start_pixels(probabilities: np.ndarray, count: int, seed: int) -> np.ndarray:
    """`[count, 2]` (row, col) drawn without replacement, with numpy's legacy generator as CLIPasso does."""
    available = int((probabilities > 0).sum())
    if available < count:
        raise BadInputError(f"only {available} start pixels for {count} strokes; use fewer --strokes")
    flat = probabilities.ravel() / probabilities.sum()
    chosen = np.random.RandomState(seed).choice(flat.size, size=count, replace=False, p=flat)
    return np.stack(np.unravel_index(chosen, probabilities.shape), axis=-1)


def initial_strokes(pixels: np.ndarray, seed: int, size: int = 224, radius: float = WALK_RADIUS) -> torch.Tensor:
    """`[N, 4, 2]` float32 control points: P0 = (col, row), then three random-walk steps.

    Each step adds `radius * (U - 0.5)` of the canvas per axis (Python's
    `random`, drawn x then y, stroke by stroke as CLIPasso does), so P3 lies
    within +-1.5 `radius` of P0. Points are not clamped to the canvas.
    """
    rng = random.Random(seed)
    strokes = []
    for row, col in pixels:
        x, y = col / size, row / size
        stroke = [(x, y)]
        for _ in range(3):
            x, y = x + radius * (rng.random() - 0.5), y + radius * (rng.random() - 0.5)
            stroke.append((x, y))
        strokes.append(stroke)
    return torch.tensor(strokes, dtype=torch.float64).mul(size).float().reshape(-1, 4, 2)


def grabcut_mask(image: np.ndarray, saliency: torch.Tensor | np.ndarray, iterations: int = 5) -> np.ndarray | None:
    """Boolean foreground `[H, W]` of an RGB uint8 image, or None when GrabCut finds no object.

    GrabCut is seeded from the saliency map: >= 0.5 probably object, the rest
    probably background, a 2% frame surely background. This stands in for
    CLIPasso's U2Net; it suits an object on a plain or distinct background.
    """
    saliency = np.asarray(torch.as_tensor(saliency).float().cpu())
    height, width = saliency.shape
    seeds = np.where(saliency >= 0.5, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    frame = max(1, round(0.02 * min(height, width)))
    seeds[:frame], seeds[-frame:], seeds[:, :frame], seeds[:, -frame:] = (cv2.GC_BGD,) * 4
    if not (seeds == cv2.GC_PR_FGD).any():
        return None
    models = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        # OpenCV takes None for the rectangle, unused when seeding from a mask; its stubs require one.
        cv2.grabCut(bgr, seeds, None, *models, iterations, cv2.GC_INIT_WITH_MASK)  # type: ignore[call-overload]
    except cv2.error:
        return None
    foreground = (seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)
    return foreground if foreground.any() else None
