"""Batched CLIP preprocessing of video frames agrees with clip's own PIL transform."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from clip.clip import _transform
from PIL import Image

from clipcli.models import load_clip
from clipcli.models.frames import encode_frames, preprocess_frames


def smooth_frame(height: int, width: int, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (9, 9), 3)


@pytest.mark.parametrize("shape", [(360, 640), (640, 360), (224, 224), (100, 150)])
def test_matches_pil_transform_within_a_grey_level(shape):
    frames = np.stack([smooth_frame(*shape, seed) for seed in range(2)])
    ours = preprocess_frames(frames, 224)
    reference = torch.stack([_transform(224)(Image.fromarray(frame)) for frame in frames])
    assert ours.shape == (2, 3, 224, 224)
    # One grey level is 1/255/0.27 ~ 0.0145 after CLIP normalisation.
    assert (ours - reference).abs().max() < 0.03
    assert (ours - reference).abs().mean() < 0.006


def test_encode_frames_equals_encode_image_on_preprocessed(tiny_vit_path):
    model, _ = load_clip(tiny_vit_path, device="cpu")
    frames = np.stack([smooth_frame(120, 160, seed) for seed in range(5)])
    features = encode_frames(model, frames, batch_size=2)
    with torch.no_grad():
        expected = model.encode_image(preprocess_frames(frames, 224))
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-5)
    assert features.shape == (5, 32)
