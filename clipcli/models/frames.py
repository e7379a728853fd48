"""CLIP's image transform for whole batches of decoded frames, on any device.

`clip`'s own `preprocess` works on one PIL image at a time. Video pipelines
push dozens of frames per clip, so this applies the same steps (shorter side
to the model's resolution with bicubic filtering, centre crop, /255, CLIP
mean/std) to a `[N,H,W,3]` uint8 batch in one call, on the GPU when the model
is there. torch's antialiased bicubic differs from PIL's by about one grey
level (tests/test_frames.py bounds it).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from clipcli.models.normalize import clip_normalize


def preprocess_frames(frames: np.ndarray | torch.Tensor, resolution: int, device: torch.device | str = "cpu"):
    """`[N,H,W,3]` uint8 RGB -> `[N,3,R,R]` float32, CLIP-normalised, on `device`."""
    pixels = torch.as_tensor(frames).to(device).permute(0, 3, 1, 2).float()
    height, width = pixels.shape[-2:]
    scale = resolution / min(height, width)
    size = (max(resolution, round(height * scale)), max(resolution, round(width * scale)))
    if (height, width) != size:
        pixels = F.interpolate(pixels, size=size, mode="bicubic", antialias=True, align_corners=False)
    top, left = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    return clip_normalize(pixels[..., top : top + resolution, left : left + resolution].clamp(0, 255) / 255.0)


@torch.no_grad()
def encode_frames(model, frames: np.ndarray | torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """CLIP image embeddings `[N, D]` (un-normalised, float32) for a batch of uint8 frames."""
    device = next(model.parameters()).device
    resolution = model.visual.input_resolution
    chunks = []
    for start in range(0, len(frames), batch_size):
        batch = preprocess_frames(frames[start : start + batch_size], resolution, device)
        chunks.append(model.encode_image(batch).float())
    return torch.cat(chunks)
