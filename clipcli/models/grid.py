"""Spatial feature maps from CLIP's visual towers, before any pooling.

DepthCLIP and CLIP-ViL read the ResNet's layer4 grid directly and never call
the attention pool; this is that path, written once.
"""

from __future__ import annotations

import torch
from clip.model import ModifiedResNet

from clipcli.errors import BadInputError


def require_resnet(model, method: str) -> ModifiedResNet:
    """The model's ResNet tower, or a clear error naming the method that needs one."""
    if not isinstance(model.visual, ModifiedResNet):
        raise BadInputError(f"{method} needs a ResNet CLIP (RN50, RN101, RN50x4, ...), not a ViT")
    return model.visual


def resnet_layer4(visual: ModifiedResNet, images: torch.Tensor) -> torch.Tensor:
    """`[B,3,H,W]` -> layer4 map `[B,C,H/32,W/32]`: the three-conv stem, avgpool, layer1-4."""
    x = images.type(visual.conv1.weight.dtype)
    x = visual.relu1(visual.bn1(visual.conv1(x)))
    x = visual.relu2(visual.bn2(visual.conv2(x)))
    x = visual.relu3(visual.bn3(visual.conv3(x)))
    x = visual.avgpool(x)
    return visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))


def layer4_channels(visual: ModifiedResNet) -> int:
    """Output channels of layer4 (2048 for RN50/RN101, 2560 for RN50x4)."""
    return visual.layer4[-1].conv3.out_channels
