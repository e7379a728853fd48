"""ActionCLIP's text side: label sets, the 16 prompt templates and the class probabilities.

The official test-time rule (test.py `validate`, utils/Text_Prompt.py): every
class is written into 16 templates, each template's prompts get a softmax over
classes at a fixed scale of 100, and the 16 are averaged. Prompt embeddings
are cached per model in memory and, keyed by the weights' digest, on disk.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from clipcli import ui
from clipcli.errors import BadInputError
from clipcli.media.labels import Labels, packaged_lines, read_labels
from clipcli.models.text_encoder import encode_prompts
from clipcli.store.cache import cache_folder, read_cache, write_cache

# utils/Text_Prompt.py, in order; prompts are built template-major: [T0 x C, T1 x C, ...].
TEMPLATES = (
    "a photo of action {}",
    "a picture of action {}",
    "Human action of {}",
    "{}, an action",
    "{} this is an action",
    "{}, a video of action",
    "Playing action of {}",
    "{}",
    "Playing a kind of action, {}",
    "Doing a kind of action, {}",
    "Look, the human is {}",
    "Can you recognize the action of {}?",
    "Video classification of {}",
    "A video of {}",
    "The man is {}",
    "The woman is {}",
)
LOGIT_SCALE = 100.0  # test.py: a fixed 100, not the model's logit_scale
LABEL_SETS = {"kinetics400": "kinetics400_labels.txt", "ucf101": "ucf101_labels.txt", "hmdb51": "hmdb51_labels.txt"}
CAMEL_CASE_SETS = frozenset({"ucf101"})


# ---------------------------------------------------------------- labels


def split_camel_case(name: str) -> str:
    """'ApplyEyeMakeup' -> 'Apply Eye Makeup', 'YoYo' -> 'Yo Yo'; names with spaces are kept."""
    if " " in name:
        return name
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", name)


def load_label_set(name: str) -> list[str]:
    """A shipped label set, in the official order, ready for prompts (UCF101 split into words)."""
    if name not in LABEL_SETS:
        raise BadInputError(f"unknown label set {name!r}; shipped sets are {', '.join(LABEL_SETS)}")
    names = packaged_lines(LABEL_SETS[name])
    return [split_camel_case(n) for n in names] if name in CAMEL_CASE_SETS else list(names)


def parse_labels(spec: str) -> Labels:
    """`--labels`: a shipped set name, a label file (or official `id,name` CSV), or a comma list."""
    return read_labels(spec, {name: functools.partial(load_label_set, name) for name in LABEL_SETS})


def template_prompts(class_names: Sequence[str]) -> list[str]:
    """The 16 x C prompts, template-major, as Text_Prompt.py concatenates them."""
    return [template.format(name) for template in TEMPLATES for name in class_names]


# ---------------------------------------------------------------- text side


_TEXT_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_CACHE_VERSION = 1


def text_cache_dir() -> Path:
    return cache_folder("actionclip-text")


def _encode_templates(model, class_names: Sequence[str]) -> torch.Tensor:
    embeddings = encode_prompts(model, template_prompts(class_names)).float()
    return embeddings / embeddings.norm(dim=-1, keepdim=True)


def text_features(model, class_names: Sequence[str], *, model_id: str | None = None) -> torch.Tensor:
    """`[16*C, D]` L2-normalised fp32 prompt embeddings, template-major, on the model's device.

    Cached per model object in memory (until its weights change in place,
    as in fine-tuning) and, when `model_id` (a digest of the weights file) is
    given, on disk under `$XDG_CACHE_HOME/clipcli/`, keyed by it, the model's
    dtype and the prompts.
    """
    key = tuple(class_names)
    per_model = _TEXT_CACHE.setdefault(model, {})
    weights_version = sum(parameter._version for parameter in model.parameters())
    if key in per_model and per_model[key][0] == weights_version:
        return per_model[key][1]
    device = next(model.parameters()).device
    path = None
    if model_id is not None:
        recipe = {"version": _CACHE_VERSION, "model": model_id, "dtype": str(model.dtype), "prompts": key}
        digest = hashlib.sha256(json.dumps([recipe, TEMPLATES]).encode()).hexdigest()
        path = text_cache_dir() / f"{digest[:40]}.npy"
        shape = (len(TEMPLATES) * len(key), model.text_projection.shape[1])
        cached = read_cache(path, lambda file: _read_prompt_embeddings(file, shape))
        if cached is not None:
            per_model[key] = (weights_version, torch.from_numpy(cached).to(device))
            return per_model[key][1]
    ui.notice(f"encoding {len(TEMPLATES) * len(key)} prompts ({len(key)} labels x {len(TEMPLATES)} templates)")
    features = _encode_templates(model, key)
    if path is not None:
        array = features.cpu().numpy()
        write_cache(path, lambda tmp: np.save(tmp, array))
    per_model[key] = (weights_version, features)
    return features


def _read_prompt_embeddings(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """The cached array; ValueError unless it is finite float32 of this shape."""
    array = np.load(path, allow_pickle=False)
    if array.shape != shape or array.dtype != np.float32 or not np.isfinite(array).all():
        raise ValueError(f"{array.dtype} {array.shape} embeddings, expected finite float32 {shape}")
    return array


@torch.no_grad()
def class_probabilities(
    video_features: torch.Tensor, class_names: Sequence[str], model, *, text: torch.Tensor | None = None
) -> torch.Tensor:
    """`[B,D]` fused video features -> `[B,C]` class probabilities by ActionCLIP's test-time rule.

    `softmax_C(100 * v_hat . t_hat)` for each of the 16 templates, averaged over
    templates. `text` takes precomputed `text_features(model, class_names)`.
    """
    if text is None:
        text = text_features(model, class_names)
    if video_features.ndim != 2 or video_features.shape[1] != text.shape[1]:
        raise BadInputError(f"video features must be [B,{text.shape[1]}], got {list(video_features.shape)}")
    video = video_features.float().to(text.device)
    video = video / video.norm(dim=-1, keepdim=True)
    similarity = LOGIT_SCALE * video @ text.T
    return similarity.view(len(video), len(TEMPLATES), len(class_names)).softmax(dim=-1).mean(dim=1)
