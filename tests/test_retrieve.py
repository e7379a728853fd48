"""CLIP4Clip heads, checkpoint loading, tokenisation, metrics and segments, against the spec's formulas.

The references here are written from docs/methods/retrieve.md with plain tensor
operations (no nn.MultiheadAttention, no nn.LSTM), in float64.
"""

from __future__ import annotations

import clip
import numpy as np
import pytest
import torch
from clip.model import convert_weights
from conftest import build_tiny_clip
from makers.clip4clip import C4C_CLIP, HEADS, LAYERS, WIDTH, clip4clip_state

from clipcli.errors import EXIT_BAD_INPUT, BadInputError
from clipcli.models.clip4clip import load_clip4clip
from clipcli.models.fusion import load_clip4clip as exported_loader
from clipcli.models.fusion import mean_pool
from clipcli.pipelines.retrieve import best_segment, retrieval_metrics, tokenize


def save(state: dict, tmp_path, name="pytorch_model.bin.2"):
    path = tmp_path / name
    torch.save(state, path)
    return path


def frames_and_mask(videos=3, frames=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(videos, frames, WIDTH, generator=gen) * 2
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]][:videos], dtype=torch.float32)
    return features, mask


# ---------------------------------------------------------------- references (spec A2), float64


def reference_pool(g: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Normalise every frame, masked mean (sum of mask, at least 1), normalise."""
    g = g.double()
    g_hat = g / g.norm(dim=-1, keepdim=True)
    m = mask.double().unsqueeze(-1)
    v = (g_hat * m).sum(1) / m.sum(1).clamp_min(1)
    return v / v.norm(dim=-1, keepdim=True)


def layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight.double() + bias.double()


def reference_seq_transf(state: dict, f: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """g = Transf(f + P[0..n-1]) + f; pre-LN blocks, QuickGELU, LN eps 1e-12, additive key mask -1e6."""
    sd = {key: value.double() for key, value in state.items()}
    f = f.double()
    videos, frames, width = f.shape
    head_dim = width // HEADS
    x = f + sd["frame_position_embeddings.weight"][:frames]
    key_mask = ((1.0 - mask.double()) * -1e6)[:, None, None, :]  # over keys, every query row and head
    for layer in range(LAYERS):
        p = f"transformerClip.resblocks.{layer}."
        h = layer_norm(x, sd[p + "ln_1.weight"], sd[p + "ln_1.bias"], 1e-12)
        q, k, v = (h @ sd[p + "attn.in_proj_weight"].T + sd[p + "attn.in_proj_bias"]).split(width, dim=-1)
        q, k, v = (t.reshape(videos, frames, HEADS, head_dim).transpose(1, 2) for t in (q, k, v))
        weights = torch.softmax(q @ k.transpose(-1, -2) / head_dim**0.5 + key_mask, dim=-1)
        attended = (weights @ v).transpose(1, 2).reshape(videos, frames, width)
        x = x + attended @ sd[p + "attn.out_proj.weight"].T + sd[p + "attn.out_proj.bias"]
        h = layer_norm(x, sd[p + "ln_2.weight"], sd[p + "ln_2.bias"], 1e-12)
        h = h @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"]
        h = h * torch.sigmoid(1.702 * h)
        x = x + h @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"]
    return reference_pool(x + f, mask)


def reference_seq_lstm(state: dict, f: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """g_t = h_t + f_t over each video's first sum(mask) frames (gate order i, f, g, o), then meanP."""
    sd = {key: value.double() for key, value in state.items()}
    f = f.double()
    g = f.clone()
    for video in range(len(f)):
        h = torch.zeros(f.shape[-1], dtype=torch.float64)
        c = torch.zeros_like(h)
        for t in range(int(mask[video].sum())):
            gates = sd["lstm_visual.weight_ih_l0"] @ f[video, t] + sd["lstm_visual.bias_ih_l0"]
            gates = gates + sd["lstm_visual.weight_hh_l0"] @ h + sd["lstm_visual.bias_hh_l0"]
            i, forget, cell, o = gates.chunk(4)
            c = torch.sigmoid(forget) * c + torch.sigmoid(i) * torch.tanh(cell)
            h = torch.sigmoid(o) * torch.tanh(c)
            g[video, t] = h + f[video, t]
    return reference_pool(g, mask)


# ---------------------------------------------------------------- meanP


def test_mean_pool_matches_the_spec_with_padded_frames():
    features, mask = frames_and_mask()
    features[0, 4] = 0  # a zero-padded frame must not turn into NaN
    pooled = mean_pool(features, mask)
    torch.testing.assert_close(pooled.double(), reference_pool(features + (mask == 0)[..., None], mask))
    torch.testing.assert_close(pooled.norm(dim=-1), torch.ones(3))
    # Padding content is irrelevant: change it and nothing moves.
    changed = features.clone()
    changed[1, 2:] = 99.0
    torch.testing.assert_close(mean_pool(changed, mask), pooled)


def test_mean_pool_refuses_an_all_masked_video():
    features, mask = frames_and_mask()
    mask[1] = 0
    with pytest.raises(BadInputError, match=r"video\(s\) \[1\] have no valid frames"):
        mean_pool(features, mask)


# ---------------------------------------------------------------- checkpoints and heads


def test_seq_transf_checkpoint_loads_and_matches_the_formula(tmp_path):
    state = clip4clip_state("seqTransf")
    model, head = load_clip4clip(save(state, tmp_path), device="cpu")
    assert head.kind == "seqTransf" and not head.training
    features, mask = frames_and_mask()
    with torch.no_grad():
        video = head(features, mask)
    assert video.shape == (3, WIDTH) and video.dtype == torch.float32
    torch.testing.assert_close(video.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(video.double(), reference_seq_transf(state, features, mask), atol=2e-5, rtol=0)
    # The mask really masks: padded frames do not change the embedding.
    changed = features.clone()
    changed[0, 4] += 50
    torch.testing.assert_close(head(changed, mask), video)
    # The CLIP tower is the checkpoint's clip.* weights, built as clip.load builds them (fp32 on the CPU).
    reference = build_tiny_clip(C4C_CLIP, 0)
    convert_weights(reference)
    reference.float()
    image = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    assert model.visual.conv1.weight.dtype == torch.float32
    torch.testing.assert_close(model.encode_image(image), reference.encode_image(image))


def test_seq_lstm_checkpoint_matches_the_formula(tmp_path):
    state = clip4clip_state("seqLSTM", seed=1)
    _, head = load_clip4clip(save(state, tmp_path), device="cpu")
    assert head.kind == "seqLSTM"
    features, mask = frames_and_mask(seed=1)
    with torch.no_grad():
        video = head(features, mask)
    torch.testing.assert_close(video.double(), reference_seq_lstm(state, features, mask), atol=2e-5, rtol=0)


def test_meanp_checkpoint_is_pure_pooling_and_reexported(tmp_path):
    assert exported_loader is load_clip4clip
    _, head = exported_loader(save(clip4clip_state("meanP"), tmp_path))
    features, mask = frames_and_mask()
    assert head.kind == "meanP"
    torch.testing.assert_close(head(features, mask).double(), reference_pool(features, mask))


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda s: s.pop("transformerClip.resblocks.1.ln_2.bias"), "missing transformerClip.resblocks.1.ln_2.bias"),
        (lambda s: s.pop("frame_position_embeddings.weight"), "missing frame_position_embeddings.weight"),
        (lambda s: s.update({"cross.pooler.dense.weight": torch.zeros(2, 2)}), "tightTransf"),
        (lambda s: s.update({"clip.visual.conv2.weight": torch.zeros(2)}), "linear_patch 3d"),
        (lambda s: s.update({"lstm_visual.weight_ih_l0": torch.zeros(2)}), "both seqTransf"),
        (lambda s: s.update({"pooler.weight": torch.zeros(2)}), "keys CLIP4Clip does not define: pooler.weight"),
        (
            lambda s: s.update({"frame_position_embeddings.weight": torch.zeros(77, 8)}),
            "in_proj_weight has shape [192, 64], expected [24, 8]",
        ),
    ],
)
def test_bad_checkpoints_fail_clearly(tmp_path, edit, words):
    state = clip4clip_state("seqTransf")
    edit(state)
    path = save(state, tmp_path)
    with pytest.raises(BadInputError) as caught:
        load_clip4clip(path)
    assert str(caught.value).startswith(f"{path}: ") and words in str(caught.value)
    assert caught.value.exit_code == EXIT_BAD_INPUT


def test_plain_clip_file_is_not_a_clip4clip_checkpoint(tiny_vit_path):
    with pytest.raises(BadInputError, match="no clip.. keys"):
        load_clip4clip(tiny_vit_path)


def test_heads_refuse_empty_videos_and_too_many_frames(tmp_path):
    _, head = load_clip4clip(save(clip4clip_state("seqTransf"), tmp_path))
    features, mask = frames_and_mask()
    mask[2] = 0
    with pytest.raises(BadInputError, match="no valid frames"):
        head(features, mask)
    with pytest.raises(BadInputError, match="77 frame positions"):
        head(torch.randn(1, 78, WIDTH), torch.ones(1, 78))


# ---------------------------------------------------------------- text, metrics, segments


def test_tokenize_is_clip_tokenize_for_short_queries_and_cuts_at_32():
    short = ["a man is sitting down", "two dogs play in the snow"]
    assert torch.equal(tokenize(short), clip.tokenize(short))
    long = tokenize([" ".join(["word"] * 60)])[0]
    reference = clip.tokenize([" ".join(["word"] * 60)], truncate=True)[0]
    assert long.argmax().item() == 31  # EOT at position 31: SOT + 30 BPE tokens + EOT = max_words 32
    assert torch.equal(long[:31], reference[:31]) and long[32:].eq(0).all()


def test_retrieval_metrics_on_hand_made_ranks():
    # Row i's own video is column targets[i]; its 0-based rank is the count of strictly higher scores.
    similarity = np.array(
        [
            [0.9, 0.1, 0.2, 0.0, 0.3, 0.4],  # own (col 0) first: rank 0
            [0.5, 0.4, 0.6, 0.1, 0.0, 0.2],  # own (col 1) 0.4 < 0.5, 0.6: rank 2
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # own (col 2) 0.3: rank 3
            [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],  # own (col 5) 0.4: rank 5
        ]
    )
    metrics = retrieval_metrics(similarity, np.array([0, 1, 2, 5]))
    assert metrics["R@1"] == pytest.approx(25.0)
    assert metrics["R@5"] == pytest.approx(75.0)
    assert metrics["R@10"] == pytest.approx(100.0)
    assert metrics["MdR"] == pytest.approx(3.5)  # median of ranks 1, 3, 4, 6
    assert metrics["MnR"] == pytest.approx(3.5)
    assert metrics["queries"] == 4


def test_best_segment_spans_the_run_around_the_peak():
    times = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    scores = np.array([0.1, 0.1, 0.8, 0.9, 0.7, 0.1])  # mean 0.45: threshold 0.675
    segment = best_segment(scores, times, duration=6.0)
    assert segment == {"start": 1.5, "end": 4.5, "peak": 3.0, "peak_score": 0.9}
    at_start = best_segment(np.array([0.9, 0.2, 0.1]), np.array([0.0, 1.0, 2.0]), duration=3.0)
    assert (at_start["start"], at_start["end"]) == (0.0, 0.5)
    at_end = best_segment(np.array([0.1, 0.2, 0.9]), np.array([0.0, 1.0, 2.0]), duration=3.0)
    assert (at_end["start"], at_end["end"]) == (1.5, 3.0)
