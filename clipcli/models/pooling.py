"""CLIP4Clip's meanP pooling, the zero-shot fusion every video pipeline shares."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clipcli.errors import BadInputError


def mean_pool(frame_features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`[V,F,D]`, `[V,F]` -> `[V,D]`: normalise frames, masked mean, normalise (CLIP4Clip meanP)."""
    if frame_features.ndim != 3 or mask.shape != frame_features.shape[:2]:
        raise BadInputError(f"expected features [V,F,D] and mask [V,F], got {list(frame_features.shape)}, "
                            f"{list(mask.shape)}")  # fmt: skip
    weights = mask.to(frame_features.dtype).unsqueeze(-1)
    counts = weights.sum(dim=1)
    empty = (counts.squeeze(-1) == 0).nonzero().flatten().tolist()
    if empty:
        raise BadInputError(f"video(s) {empty} have no valid frames (all masked); cannot pool them")
    frames = F.normalize(frame_features, dim=-1)  # zero padding rows stay zero instead of NaN
    pooled = (frames * weights).sum(dim=1) / counts
    return pooled / pooled.norm(dim=-1, keepdim=True)
