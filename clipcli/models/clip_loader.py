"""`load_clip`: CLIP models by name or path, once per process.

The model and transform are exactly what `clip.load(path, jit=False)` returns:
the same `build_model`, fp16 on CUDA, `.float()` on the CPU, and the same
`_transform`. We read the file ourselves first so untrusted pickles are refused.
"""

from __future__ import annotations

from pathlib import Path

import torch
from clip.clip import _transform
from clip.model import CLIP, build_model

from clipcli.errors import BadInputError, first_line
from clipcli.models.checkpoint import load_checkpoint
from clipcli.models.device import resolve_device
from clipcli.models.weights import resolve_weights

_LOADED: dict[tuple, tuple[CLIP, object]] = {}


def clip_from_state_dict(state_dict: dict, device: str | torch.device, source: str | Path = "checkpoint") -> CLIP:
    """Build a CLIP model from an OpenAI-layout state dict, as `clip.load(jit=False)` does."""
    has_visual = "visual.proj" in state_dict or "visual.attnpool.c_proj.weight" in state_dict
    if "text_projection" not in state_dict or not has_visual:
        raise BadInputError("not a CLIP checkpoint (no OpenAI CLIP keys such as text_projection, visual.*)", source)
    try:
        model = build_model(dict(state_dict)).to(device)
    except (KeyError, RuntimeError, ValueError, IndexError) as err:
        raise BadInputError(f"not a loadable CLIP checkpoint ({first_line(err)})", source) from err
    if str(device) == "cpu":
        model.float()
    return model


def load_clip(name_or_path: str | Path, device: str | torch.device = "auto", *, trust_checkpoint: bool = False):
    """`(model, preprocess)` for a CLIP name (`ViT-B/32`, `RN50`, an imported name) or file.

    Loaded models are cached per process and device, so pipelines that share a
    backbone pay for it once. The model is in eval mode; treat it as shared.
    """
    torch_device = resolve_device(device)
    path = resolve_weights(name_or_path).resolve()
    key = (str(path), path.stat().st_mtime_ns, str(torch_device))
    if key not in _LOADED:
        state_dict = load_checkpoint(path, trust=trust_checkpoint)
        model = clip_from_state_dict(state_dict, torch_device, path)
        _LOADED[key] = (model, _transform(model.visual.input_resolution))
    return _LOADED[key]


def clear_cache() -> None:
    """Forget loaded models (frees their memory once no caller holds them)."""
    _LOADED.clear()
