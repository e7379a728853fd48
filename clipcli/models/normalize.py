"""CLIP's per-channel image standardisation, the last step of every CLIP preprocess.

The mean and std are those of `clip.clip._transform` (its `Normalize`).
"""

from __future__ import annotations

import torch

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_stats(dtype: torch.dtype, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP's per-channel mean and std as `[3,1,1]` tensors."""
    mean = torch.tensor(CLIP_MEAN, dtype=dtype, device=device).view(3, 1, 1)
    return mean, torch.tensor(CLIP_STD, dtype=dtype, device=device).view(3, 1, 1)


def clip_normalize(images: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """`[..., 3, H, W]` in [0, 1] -> `(images - mean) / std` per channel, in the images' dtype.

    `stats` are `clip_stats` made ahead on the images' device, as a CUDA graph
    capture needs: it allows no host-to-device copy.
    """
    mean, std = clip_stats(images.dtype, images.device) if stats is None else stats
    return (images - mean) / std
