"""The one CLIP normaliser matches clip's own preprocess and serves every image path."""

from __future__ import annotations

import numpy as np
import torch
from clip.clip import _transform
from PIL import Image

from clipcli.models.frames import preprocess_frames
from clipcli.models.normalize import clip_normalize, clip_stats
from clipcli.pipelines import features_grid


def test_clip_normalize_equals_clips_own_normalize_step():
    rgb = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    expected = _transform(224)(Image.fromarray(rgb))
    ours = clip_normalize(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)


def test_precomputed_stats_give_the_same_result_in_the_images_dtype():
    images = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    ours = clip_normalize(images, clip_stats(torch.float64, "cpu"))
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, clip_normalize(images), rtol=0, atol=0)
    torch.testing.assert_close(ours[:, 0], (images[:, 0] - 0.48145466) / 0.26862954)


def test_frames_and_features_use_the_same_normaliser():
    pixels = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8))
    expected = clip_normalize(pixels.permute(0, 3, 1, 2).float() / 255.0)
    torch.testing.assert_close(features_grid.normalize(pixels), expected, rtol=0, atol=0)
    torch.testing.assert_close(preprocess_frames(pixels, 32), expected, rtol=0, atol=0)
