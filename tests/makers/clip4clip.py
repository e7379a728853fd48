"""CLIP4Clip checkpoints in the official key layout, built from a tiny CLIP.

`model.state_dict()` of CLIP4Clip is `clip.*` (OpenAI CLIP keys, linear and
conv weights fp16 after `convert_weights`) plus the head's keys:
`frame_position_embeddings.weight` and `transformerClip.resblocks.N.*`
(seqTransf) or `lstm_visual.*` (seqLSTM); docs/methods/retrieve.md.
"""

from __future__ import annotations

import functools

import torch
from clip.model import convert_weights
from conftest import TINY_VIT, build_tiny_clip

# Text width 128 gives CLIP4Clip's rule heads = 128 // 64 = 2 temporal heads of 32 channels.
C4C_CLIP = dict(TINY_VIT, embed_dim=64, transformer_width=128, transformer_heads=2)
WIDTH, LAYERS, HEADS = 64, 2, 2


@functools.cache
def tiny_clip_state(seed: int) -> dict:
    """The tiny CLIP's weights as CLIP4Clip saves them (`clip.` prefix, fp16 linear/conv via convert_weights)."""
    model = build_tiny_clip(C4C_CLIP, seed)
    convert_weights(model)
    return {f"clip.{key}": value for key, value in model.state_dict().items()}


def clip4clip_state(head: str, seed: int = 0) -> dict:
    """A CLIP4Clip `model.state_dict()`: the `clip.*` tower plus the head's keys."""
    state = dict(tiny_clip_state(seed))
    gen = torch.Generator().manual_seed(seed + 100)

    def rand(*shape, scale=0.1, offset=0.0):
        return torch.randn(*shape, generator=gen) * scale + offset

    w = WIDTH
    if head in ("seqTransf", "seqLSTM"):
        state["frame_position_embeddings.weight"] = rand(77, w)
    if head == "seqTransf":
        for layer in range(LAYERS):
            p = f"transformerClip.resblocks.{layer}."
            state.update({
                p + "attn.in_proj_weight": rand(3 * w, w), p + "attn.in_proj_bias": rand(3 * w),
                p + "attn.out_proj.weight": rand(w, w), p + "attn.out_proj.bias": rand(w),
                p + "ln_1.weight": rand(w, offset=1.0), p + "ln_1.bias": rand(w),
                p + "mlp.c_fc.weight": rand(4 * w, w), p + "mlp.c_fc.bias": rand(4 * w),
                p + "mlp.c_proj.weight": rand(w, 4 * w), p + "mlp.c_proj.bias": rand(w),
                p + "ln_2.weight": rand(w, offset=1.0), p + "ln_2.bias": rand(w),
            })  # fmt: skip
    if head == "seqLSTM":
        state.update({
            "lstm_visual.weight_ih_l0": rand(4 * w, w), "lstm_visual.weight_hh_l0": rand(4 * w, w),
            "lstm_visual.bias_ih_l0": rand(4 * w), "lstm_visual.bias_hh_l0": rand(4 * w),
        })  # fmt: skip
    return state
