"""CLIP4Clip's similarity heads (meanP, seqLSTM, seqTransf) and its checkpoint loader.

Facts: docs/methods/retrieve.md (ArrowLuo/CLIP4Clip modules/modeling.py
`_loose_similarity`, modules/module_cross.py). Every head maps raw frame
features `f` (`encode_image` output, not normalised) to per-frame outputs `g`
and then shares meanP's tail: normalise each frame, masked mean, normalise.

- meanP: `g = f`.
- seqLSTM: `g = LSTM(f) + f`, the LSTM run on each video's first `sum(mask)`
  frames; positions past the longest video keep `f` before the residual, as
  `pad_packed_sequence` + `cat` leave them (masked out by the pooling anyway).
- seqTransf: `g = Transf(f + P[:F]) + f`, 4 pre-LN blocks with QuickGELU and
  BERT-style LayerNorm (eps 1e-12), an additive key mask of -1e6, no causal mask.

tightTransf scores each (text, video) pair jointly, so it cannot be indexed and
is refused; so is `--linear_patch 3d` (a Conv3d patch embedding clipcli lacks).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from clip.model import CLIP, QuickGELU
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from clipcli.errors import BadInputError
from clipcli.models.checkpoint import load_checkpoint
from clipcli.models.clip_loader import clip_from_state_dict
from clipcli.models.device import resolve_device
from clipcli.models.pooling import mean_pool

MASK_FILL = -1000000.0  # CLIP4Clip's additive attention mask for padded frames
LAYER_NORM_EPS = 1e-12  # module_cross uses until_module.LayerNorm (TF style), not CLIP's 1e-5
HEAD_PREFIXES = ("frame_position_embeddings.", "transformerClip.", "lstm_visual.")
TIGHT_PREFIXES = ("cross.", "similarity_dense.")


def _check_frames(frame_features: torch.Tensor, mask: torch.Tensor, width: int | None = None) -> None:
    """Shapes agree and every video has a frame; never let an empty video become NaN."""
    if frame_features.ndim != 3 or mask.shape != frame_features.shape[:2]:
        raise BadInputError(
            f"expected features [V,F,D] and mask [V,F], got {list(frame_features.shape)}, {list(mask.shape)}"
        )
    if width is not None and frame_features.shape[-1] != width:
        raise BadInputError(f"this head takes {width}-d frame features, got {frame_features.shape[-1]}-d")
    empty = (mask.sum(dim=1) == 0).nonzero().flatten().tolist()
    if empty:
        raise BadInputError(f"video(s) {empty} have no valid frames (all masked); cannot pool them")


class MeanPHead(nn.Module):
    """meanP: no parameters; the video embedding is the normalised mean of normalised frames."""

    kind = "meanP"

    def frame_outputs(self, frame_features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-frame outputs `g` `[V,F,D]` (before normalisation) that the pooling averages."""
        _check_frames(frame_features, mask)
        return frame_features.float()

    def forward(self, frame_features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`[V,F,D]`, `[V,F]` -> L2-normalised video embeddings `[V,D]`."""
        return mean_pool(self.frame_outputs(frame_features, mask), mask.to(frame_features.device))


class TemporalBlock(nn.Module):
    """module_cross.ResidualAttentionBlock: pre-LN attention and MLP, the mask given per call."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.mlp = nn.Sequential(
            OrderedDict(
                [("c_fc", nn.Linear(width, width * 4)), ("gelu", QuickGELU()), ("c_proj", nn.Linear(width * 4, width))]
            )
        )
        self.ln_2 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        """`x` `[F,V,D]`; `attn_mask` additive `[V*heads, F, F]`."""
        hidden = self.ln_1(x)
        x = x + self.attn(hidden, hidden, hidden, need_weights=False, attn_mask=attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class TemporalTransformer(nn.Module):
    """The `transformerClip` stack: blocks named `resblocks.N` as in the checkpoint."""

    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.ModuleList(TemporalBlock(width, heads) for _ in range(layers))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, attn_mask)
        return x


class SeqTransfHead(MeanPHead):
    """seqTransf: frame position embeddings, a temporal Transformer, a residual, then meanP."""

    kind = "seqTransf"

    def __init__(self, width: int, layers: int, heads: int, positions: int = 77):
        super().__init__()
        if width % heads:
            raise BadInputError(f"seqTransf width {width} is not divisible by {heads} attention heads")
        self.width, self.heads = width, heads
        self.frame_position_embeddings = nn.Embedding(positions, width)
        self.transformerClip = TemporalTransformer(width, layers, heads)

    def frame_outputs(self, frame_features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        _check_frames(frame_features, mask, self.width)
        frames = frame_features.shape[1]
        if frames > self.frame_position_embeddings.num_embeddings:
            raise BadInputError(
                f"seqTransf has {self.frame_position_embeddings.num_embeddings} frame positions; got {frames} frames"
            )
        original = frame_features.float()
        mask = mask.to(original.device, original.dtype)
        x = original + self.frame_position_embeddings.weight[:frames].unsqueeze(0)
        additive = ((1.0 - mask.unsqueeze(1)) * MASK_FILL).expand(-1, frames, -1)
        additive = additive.repeat_interleave(self.heads, dim=0)  # [V*heads, F, F], video-major as MHA expects
        x = self.transformerClip(x.permute(1, 0, 2), additive).permute(1, 0, 2)
        return x + original


class SeqLSTMHead(MeanPHead):
    """seqLSTM: a one-layer LSTM over each video's valid frames, a residual, then meanP.

    `frame_position_embeddings` exists in seqLSTM checkpoints but the official
    forward never uses it; it is loaded (so the key layout is checked) and ignored.
    """

    kind = "seqLSTM"

    def __init__(self, width: int, positions: int = 77):
        super().__init__()
        self.width = width
        self.frame_position_embeddings = nn.Embedding(positions, width)
        self.lstm_visual = nn.LSTM(input_size=width, hidden_size=width, batch_first=True, num_layers=1)

    def frame_outputs(self, frame_features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        _check_frames(frame_features, mask, self.width)
        original = frame_features.float()
        lengths = mask.sum(dim=-1).long().cpu()
        packed = pack_padded_sequence(original, lengths, batch_first=True, enforce_sorted=False)
        output, _ = pad_packed_sequence(self.lstm_visual(packed)[0], batch_first=True)
        output = torch.cat((output, original[:, output.shape[1] :]), dim=1)
        return output + original


def _layer_count(state_dict: dict, prefix: str) -> int:
    numbers = {int(key[len(prefix) :].split(".")[0]) for key in state_dict if key.startswith(prefix)}
    return max(numbers) + 1 if numbers else 0


def build_head(head_state: dict, text_width: int, source: str | Path) -> MeanPHead:
    """The head whose keys are present, built to their shapes; strict about missing and stray keys."""
    has_transf = any(key.startswith("transformerClip.") for key in head_state)
    has_lstm = any(key.startswith("lstm_visual.") for key in head_state)
    if has_transf and has_lstm:
        raise BadInputError("holds both seqTransf (transformerClip.*) and seqLSTM (lstm_visual.*) keys", source)
    if not head_state:
        return MeanPHead()
    positions = head_state.get("frame_position_embeddings.weight")
    if positions is None:
        raise BadInputError("is missing frame_position_embeddings.weight, which seqTransf/seqLSTM heads need", source)
    if not (has_transf or has_lstm):
        raise BadInputError(
            "has frame_position_embeddings but neither transformerClip.* (seqTransf) nor lstm_visual.* (seqLSTM) keys",
            source,
        )
    count, width = positions.shape
    head: MeanPHead
    if has_transf:
        # CLIP4Clip: heads = text transformer width // 64, layers from the checkpoint (--cross_num_hidden_layers).
        head = SeqTransfHead(
            width, _layer_count(head_state, "transformerClip.resblocks."), max(1, text_width // 64), count
        )
    else:
        head = SeqLSTMHead(width, count)
    expected = head.state_dict()
    missing = sorted(set(expected) - set(head_state))
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise BadInputError(f"{head.kind} head is missing {', '.join(missing[:3])}{more}", source)
    for key, tensor in expected.items():
        if head_state[key].shape != tensor.shape:
            raise BadInputError(f"{key} has shape {list(head_state[key].shape)}, expected {list(tensor.shape)}", source)
    head.load_state_dict({key: value.float() for key, value in head_state.items()})
    return head


def split_clip4clip_state(state_dict: dict, source: str | Path) -> tuple[dict, dict]:
    """(CLIP tower keys without `clip.`, head keys), refusing what clipcli cannot run."""
    state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
    if any(key.startswith(TIGHT_PREFIXES) for key in state_dict):
        raise BadInputError(
            "is a tightTransf (cross-encoder) CLIP4Clip checkpoint: it scores every text-video pair "
            "jointly, so videos cannot be indexed; use a meanP, seqLSTM or seqTransf one",
            source,
        )
    if "clip.visual.conv2.weight" in state_dict:
        raise BadInputError(
            "was trained with --linear_patch 3d (clip.visual.conv2.weight), which clipcli does not "
            "implement; use a 2d-patch checkpoint",
            source,
        )
    clip_state = {key[len("clip.") :]: value for key, value in state_dict.items() if key.startswith("clip.")}
    if not clip_state:
        raise BadInputError("has no clip.* keys: not a CLIP4Clip checkpoint (pytorch_model.bin.N)", source)
    head_state = {key: value for key, value in state_dict.items() if key.startswith(HEAD_PREFIXES)}
    stray = sorted(set(state_dict) - set(head_state) - {f"clip.{key}" for key in clip_state})
    if stray:
        raise BadInputError(f"has keys CLIP4Clip does not define: {', '.join(stray[:3])}", source)
    return clip_state, head_state


def load_clip4clip(
    path: str | Path, device: str | torch.device = "cpu", *, trust_checkpoint: bool = False
) -> tuple[CLIP, MeanPHead]:
    """`(clip_model, head)` from a CLIP4Clip `pytorch_model.bin.N` (a plain state dict).

    The CLIP tower is built from the `clip.*` keys exactly as `clip.load` builds
    a model (fp16 on CUDA, fp32 on the CPU); the head (meanP, seqLSTM or
    seqTransf, from the keys present) runs in fp32, as in CLIP4Clip.
    `head(frame_features [V,F,D], mask [V,F])` returns normalised `[V,D]`.
    """
    torch_device = resolve_device(device)
    state_dict = load_checkpoint(path, trust=trust_checkpoint)
    clip_state, head_state = split_clip4clip_state(state_dict, path)
    if "ln_final.weight" not in clip_state:
        raise BadInputError("has no clip.ln_final.weight: not a CLIP4Clip checkpoint", path)
    head = build_head(head_state, int(clip_state["ln_final.weight"].shape[0]), path)  # cheap checks first
    model = clip_from_state_dict(clip_state, torch_device, path)
    return model.eval(), head.to(torch_device).eval()
