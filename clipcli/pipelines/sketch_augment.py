"""CLIPasso's augmentation, batched: a random perspective, then a fixed-scale random crop.

The official loss (yael-vinker/CLIPasso models/loss.py) draws, per augmented
pair, torchvision's `RandomPerspective(distortion_scale=0.5, p=1, fill=0)` then
`RandomResizedCrop(224, scale=(0.8, 0.8), ratio=(1, 1))`, on the sketch and the
target stacked together, so both get the same parameters. Here the parameters
are drawn for a whole batch at once and applied with two `grid_sample` calls
that reproduce torchvision's sampling: bilinear, the perspective's black fill
blended through a sampled validity mask, and a crop resized with clamped
half-pixel-centre coordinates (`interpolate(align_corners=False)`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

DISTORTION_SCALE = 0.5
CROP_SCALE = 0.8


@dataclass(frozen=True)
class Augmentations:
    """Parameters of `count` augmentations for a `size` x `size` image.

    `corners`: where the image corners (top-left, top-right, bottom-right,
    bottom-left) go, `[count, 4, 2]` pixels (x, y). `crop`: top-left (x, y) of
    the `crop_size` square, `[count, 2]`.
    """

    corners: torch.Tensor
    crop: torch.Tensor
    crop_size: int
    size: int


def random_augmentations(count: int, size: int = 224, generator: torch.Generator | None = None) -> Augmentations:
    """Draw `count` perspective + crop parameters with torchvision's ranges.

    Each corner moves inward by an integer 0..int(0.5 * size / 2) per axis; the
    crop is a square of area 0.8 (side round(sqrt(0.8) * size)) at an integer offset.
    """
    device = generator.device if generator is not None else torch.device("cpu")
    bound = int(DISTORTION_SCALE * (size // 2)) + 1
    inward = torch.randint(0, bound, (count, 4, 2), generator=generator, device=device)
    far = size - 1
    corners = torch.tensor([[0, 0], [far, 0], [far, far], [0, far]], device=device)
    direction = torch.tensor([[1, 1], [-1, 1], [-1, -1], [1, -1]], device=device)
    crop_size = int(round(math.sqrt(size * size * CROP_SCALE)))
    crop = torch.randint(0, size - crop_size + 1, (count, 2), generator=generator, device=device)
    return Augmentations(corners + direction * inward, crop, crop_size, size)


def concatenate(parts: list[Augmentations]) -> Augmentations:
    """One `Augmentations` applying `parts` in turn: the draws of several images, each from its own generator."""
    if len({(part.size, part.crop_size) for part in parts}) != 1:
        raise ValueError("augmentations of different image sizes cannot be concatenated")
    if len(parts) == 1:
        return parts[0]
    corners = torch.cat([part.corners for part in parts])
    crop = torch.cat([part.crop for part in parts])
    return Augmentations(corners, crop, parts[0].crop_size, parts[0].size)


def augment(images: torch.Tensor, params: Augmentations) -> torch.Tensor:
    """Apply augmentation i to `images[i]` (`[count, C, size, size]`, un-normalised): same shape out."""
    count, _, height, width = images.shape
    if height != params.size or width != params.size or count != params.crop.shape[0]:
        raise ValueError(
            f"{count} images of {height}x{width} for {params.crop.shape[0]} augmentations of {params.size}"
        )
    warped = _perspective(images, params.corners)
    return _resized_crop(warped, params.crop.to(images.device), params.crop_size)


def _perspective_coefficients(corners: torch.Tensor, size: int) -> torch.Tensor:
    """`[count, 8]` homographies taking output pixels (the moved corners) to input pixels (the corners).

    x_in = (c0 x + c1 y + c2) / (c6 x + c7 y + 1), y_in = (c3 x + c4 y + c5) / (c6 x + c7 y + 1),
    solved exactly from the four correspondences, in float64.
    """
    far = size - 1
    source = torch.tensor([[0, 0], [far, 0], [far, far], [0, far]], dtype=torch.float64, device=corners.device)
    source = source.expand(corners.shape[0], 4, 2)
    moved = corners.to(torch.float64)
    x, y = moved[..., 0], moved[..., 1]
    u, v = source[..., 0], source[..., 1]
    ones, zeros = torch.ones_like(x), torch.zeros_like(x)
    rows_u = torch.stack([x, y, ones, zeros, zeros, zeros, -u * x, -u * y], dim=-1)
    rows_v = torch.stack([zeros, zeros, zeros, x, y, ones, -v * x, -v * y], dim=-1)
    system = torch.cat([rows_u, rows_v], dim=1)  # [count, 8, 8]
    return torch.linalg.solve(system, torch.cat([u, v], dim=1))


def _perspective(images: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
    """torchvision's `perspective(img, corners_of_image, corners, BILINEAR, fill=0)`, batched."""
    count, _, size, _ = images.shape
    c = _perspective_coefficients(corners.cpu(), size)  # a tiny solve: on the CPU, no device sync
    c = c.to(images.device, images.dtype)[:, :, None, None]
    centres = torch.arange(size, dtype=images.dtype, device=images.device) + 0.5
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    denominator = c[:, 6] * x + c[:, 7] * y + 1
    grid_x = (c[:, 0] * x + c[:, 1] * y + c[:, 2]) / denominator / (size / 2) - 1
    grid_y = (c[:, 3] * x + c[:, 4] * y + c[:, 5]) / denominator / (size / 2) - 1
    grid = torch.stack([grid_x, grid_y], dim=-1)
    with_mask = torch.cat([images, images.new_ones(count, 1, size, size)], dim=1)
    sampled = F.grid_sample(with_mask, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return sampled[:, :-1] * sampled[:, -1:]  # blend toward the black fill where the mask is partial


def _resized_crop(images: torch.Tensor, crop: torch.Tensor, crop_size: int) -> torch.Tensor:
    """Crop `crop_size` squares at `crop` (x, y) and resize them back bilinearly, as torchvision does."""
    size = images.shape[-1]
    steps = torch.arange(size, dtype=images.dtype, device=images.device)
    inside = ((steps + 0.5) * (crop_size / size) - 0.5).clamp(0, crop_size - 1)  # source pixel within the crop
    x = crop[:, :1].to(images.dtype) + inside  # [count, size]
    y = crop[:, 1:].to(images.dtype) + inside
    grid_x, grid_y = (2 * x + 1) / size - 1, (2 * y + 1) / size - 1  # pixel index -> align_corners=False grid
    grid = torch.stack(torch.broadcast_tensors(grid_x[:, None, :], grid_y[:, :, None]), dim=-1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
