"""CLIP's visual towers at input sizes they were not trained at, without the final pooling.

CLIP-ViL feeds 600x1000 and 448x448 images to towers trained at 224 px. The
ResNet's layer4 is fully convolutional (see `grid.resnet_layer4`); what needs
care is the learned positional embedding of the ViT tokens and of the ResNet
attention pool, which covers the training grid (7x7 at 224 px). It is
resized the way CLIP-ViL resized it: timm's `resize_pos_embed` of mid 2021,
bilinear with align_corners=False on the grid part, the class token's entry
kept (timm later switched to bicubic; the CLIP-ViL code pins no timm version).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from clip.model import AttentionPool2d, VisionTransformer


def resize_grid_embedding(positional_embedding: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """`[1 + g*g, C]` -> `[1 + h*w, C]`: the first (class or mean) entry kept, the grid resampled to h x w."""
    token, cells = positional_embedding[:1], positional_embedding[1:]
    old = math.isqrt(len(cells))
    if (old, old) == tuple(grid):
        return positional_embedding
    square = cells.float().reshape(1, old, old, -1).permute(0, 3, 1, 2)
    resized = F.interpolate(square, size=tuple(grid), mode="bilinear", align_corners=False)
    resized = resized.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)
    return torch.cat([token.float(), resized]).to(positional_embedding.dtype)


def attention_pool(pool: AttentionPool2d, grid: torch.Tensor) -> torch.Tensor:
    """CLIP's attention pool on a layer4 map `[B,C,h,w]` of any size -> `[B, D]`.

    The same computation as `AttentionPool2d.forward` (mean token as query,
    one multi-head attention over mean + cells), with the positional embedding
    resized to h x w, so the shared model is never modified.
    """
    x = grid.flatten(start_dim=2).permute(2, 0, 1)  # (hw)BC
    x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)
    height, width = grid.shape[-2:]
    positions = resize_grid_embedding(pool.positional_embedding, (height, width))
    x = x + positions[:, None, :].to(x.dtype)
    x, _ = F.multi_head_attention_forward(
        query=x[:1],
        key=x,
        value=x,
        embed_dim_to_check=x.shape[-1],
        num_heads=pool.num_heads,
        q_proj_weight=pool.q_proj.weight,
        k_proj_weight=pool.k_proj.weight,
        v_proj_weight=pool.v_proj.weight,
        in_proj_weight=None,
        in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None,
        bias_v=None,
        add_zero_attn=False,
        dropout_p=0.0,
        out_proj_weight=pool.c_proj.weight,
        out_proj_bias=pool.c_proj.bias,
        use_separate_proj_weight=True,
        training=False,
        need_weights=False,
    )
    return x.squeeze(0)


def vit_tokens(visual: VisionTransformer, images: torch.Tensor, blocks: int | None = None) -> torch.Tensor:
    """`[B,3,H,W]` -> tokens `[B, 1 + h*w, width]` after the first `blocks` blocks (all when None).

    The patch grid is (H // patch, W // patch), as the stride-patch convolution
    gives it; the positional embedding is resized to it. No `ln_post`, no
    projection: these are the raw token states CLIP-ViL reshapes into grids.
    """
    x = visual.conv1(images.type(visual.conv1.weight.dtype))  # [B, width, h, w]
    height, width = x.shape[-2:]
    x = x.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1)
    x = x + resize_grid_embedding(visual.positional_embedding, (height, width)).to(x.dtype)
    x = visual.ln_pre(x).permute(1, 0, 2)  # NLD -> LND
    for block in visual.transformer.resblocks[:blocks]:
        x = block(x)
    return x.permute(1, 0, 2)


def vit_patch_grid(visual: VisionTransformer, images: torch.Tensor, blocks: int | None = None) -> torch.Tensor:
    """Patch tokens as a grid `[B, H // patch, W // patch, width]`, the class token dropped."""
    tokens = vit_tokens(visual, images, blocks)
    patch = visual.conv1.kernel_size[0]
    return tokens[:, 1:].reshape(len(images), images.shape[-2] // patch, images.shape[-1] // patch, -1)
