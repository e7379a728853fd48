"""Text classifiers from prompt templates, with the CLIP zero-shot ensembling rule.

Each class's prompts are encoded, L2-normalised, averaged and renormalised
(CLIP's `zeroshot_classifier`, which DepthCLIP and PointCLIP reuse). Results
are cached per model (weakly, so a freed model frees its cache) and prompt set.
"""

from __future__ import annotations

import weakref

import torch

from clipcli.models.text_encoder import encode_prompts

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@torch.no_grad()
def text_classifier(model, class_prompts: list[list[str]]) -> torch.Tensor:
    """`[D, C]` normalised text embeddings, one column per class, in the model's dtype."""
    per_model = _CACHE.setdefault(model, {})
    key = tuple(tuple(prompts) for prompts in class_prompts)
    if key not in per_model:
        flat = [prompt for prompts in class_prompts for prompt in prompts]
        embeddings = encode_prompts(model, flat)
        embeddings = embeddings / embeddings.norm(dim=-1, keepdim=True)
        groups = embeddings.split([len(prompts) for prompts in class_prompts])
        columns = [group.mean(dim=0) for group in groups]
        per_model[key] = torch.stack([column / column.norm() for column in columns], dim=1)
    return per_model[key]
