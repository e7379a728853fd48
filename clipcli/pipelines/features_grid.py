"""CLIP-ViL's pixels and features: the two grid layouts' resizing and the visual tower's grids.

Pure functions, one image or a batch at a time; clipcli/pipelines/features.py
runs them over files (docs/methods/clip-vil.md has the facts they follow).
"""

from __future__ import annotations

import numpy as np
import torch
from clip.model import ModifiedResNet
from PIL import Image

from clipcli.models.grid import resnet_layer4
from clipcli.models.normalize import clip_normalize
from clipcli.models.spatial import attention_pool, vit_patch_grid, vit_tokens

VQA_SHORT_EDGE, VQA_MAX_SIZE = 600, 1000  # detectron2 INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST
VQA_SIZE = (600, 1000)  # the fixed T.Resize((600, 1000)) after it, (H, W)
CAPTION_SIZE = 448


# ---------------------------------------------------------------- pixels (CPU, one image)


def shortest_edge_size(height: int, width: int, short: int = VQA_SHORT_EDGE, max_size: int = VQA_MAX_SIZE):
    """detectron2's ResizeShortestEdge target `(h, w)`: shorter side to `short`, longer capped at `max_size`."""
    scale = short / min(height, width)
    new_h, new_w = (short, scale * width) if height < width else (scale * height, short)
    if max(new_h, new_w) > max_size:
        scale = max_size / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


def vqa_pixels(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 -> 600x1000x3 uint8, resized twice with PIL bilinear as the official mapper does."""
    image = Image.fromarray(rgb)
    height, width = shortest_edge_size(*rgb.shape[:2])
    image = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.array(image.resize(VQA_SIZE[::-1], Image.Resampling.BILINEAR))


def caption_pixels(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 -> 448x448x3 uint8: Resize((448, 448), BICUBIC); the CenterCrop(448) after it is a no-op."""
    return np.array(Image.fromarray(rgb).resize((CAPTION_SIZE, CAPTION_SIZE), Image.Resampling.BICUBIC))


def normalize(pixels: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """`[B,H,W,3]` uint8 -> `[B,3,H,W]` float32: /255 then CLIP mean/std, on `device`."""
    return clip_normalize(pixels.to(device).permute(0, 3, 1, 2).float() / 255.0)


# ---------------------------------------------------------------- features (batched, any device)


def is_resnet(model) -> bool:
    return isinstance(model.visual, ModifiedResNet)


@torch.no_grad()
def vqa_grid(model, images: torch.Tensor) -> torch.Tensor:
    """`[B,3,H,W]` normalised -> `[B, H/32, W/32, C]` in the model's dtype.

    ResNets: layer4, no attention pool (C = 2048 for RN50/RN101, 2560 for
    RN50x4). ViTs: patch tokens after all but the last block, class token
    dropped (C = width, 768 for ViT-B), `[B, H/patch, W/patch, C]`.
    """
    visual = model.visual
    if is_resnet(model):
        return resnet_layer4(visual, images).permute(0, 2, 3, 1)
    return vit_patch_grid(visual, images, blocks=len(visual.transformer.resblocks) - 1)


@torch.no_grad()
def caption_features(model, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`[B,3,448,448]` normalised -> (`att` `[B,14,14,C]`, `fc` `[B,D]`), as clip_prepro_feats.py makes them.

    ResNets: `att` is layer4, `fc` the attention pool over it with its
    positional embedding resized to 14x14. ViTs: `att` the patch tokens after
    all blocks, `fc` the class token (no ln_post, no projection).
    """
    visual = model.visual
    if is_resnet(model):
        grid = resnet_layer4(visual, images)
        return grid.permute(0, 2, 3, 1), attention_pool(visual.attnpool, grid)
    tokens = vit_tokens(visual, images)
    patch = visual.conv1.kernel_size[0]
    att = tokens[:, 1:].reshape(len(images), images.shape[-2] // patch, images.shape[-1] // patch, -1)
    return att, tokens[:, 0]
