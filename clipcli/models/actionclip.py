"""ActionCLIP's temporal fusion heads ("post-network prompts") and its checkpoints.

Each head maps per-frame CLIP features `[B,T,D]` to one video feature `[B,D]`,
un-normalised, as `visual_prompt.forward` does in sallymmx/ActionCLIP
(modules/Visual_Prompt.py). Parameter names are the official ones, so a
`fusion_model_state_dict` loads strictly once its `module.` prefix (it was
saved from a DataParallel wrapper) is stripped:

- meanP: the mean over frames, no parameters.
- Transf (every official config): learned frame positions, a 6-layer stack of
  CLIP residual attention blocks (no mask), a residual, the mean.
- LSTM: one LSTM layer, a residual, the mean.
- Conv_1D: a depthwise temporal convolution, a residual, the mean.
- Transf_cls: a CLS token through a 6-layer `nn.TransformerEncoder`.

As in the official code, the heads keep fp32 weights (only CLIP is converted
to fp16 on CUDA) and hand back the dtype they were given.
"""

from __future__ import annotations

from pathlib import Path

import torch
from clip.model import CLIP, Transformer
from torch import nn

from clipcli.errors import BadInputError, first_line
from clipcli.models.checkpoint import load_checkpoint
from clipcli.models.clip_loader import clip_from_state_dict
from clipcli.models.device import resolve_device

# Visual_Prompt.py's LayerNorm is the TF-style one with eps inside the square root.
FUSION_LAYER_NORM_EPS = 1e-12
CLS_HEADS = 8  # TAggregate builds nn.TransformerEncoderLayer(nhead=8) whatever the width


class MeanFusion(nn.Module):
    """meanP: the plain mean over frames (ActionCLIP's zero-shot fusion)."""

    kind = "meanP"
    num_frames: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)


class TransformerFusion(nn.Module):
    """Transf: `mean_T(x + Transformer(x + E_pos[:T]))`."""

    kind = "Transf"
    num_frames: int | None = None

    def __init__(self, width: int, layers: int, heads: int, positions: int = 77):
        super().__init__()
        self.frame_position_embeddings = nn.Embedding(positions, width)
        self.transformer = Transformer(width, layers, heads)
        for module in self.transformer.modules():
            if isinstance(module, nn.LayerNorm):
                module.eps = FUSION_LAYER_NORM_EPS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[1]
        positions = self.frame_position_embeddings.num_embeddings
        if frames > positions:
            raise BadInputError(f"this Transf head has positions for at most {positions} frames, got {frames}")
        h = x.float() + self.frame_position_embeddings.weight[:frames]
        h = self.transformer(h.permute(1, 0, 2)).permute(1, 0, 2)  # NLD -> LND -> NLD
        return (h.to(x.dtype) + x).mean(dim=1)


class LSTMFusion(nn.Module):
    """LSTM: `mean_T(x + LSTM(x))`; the position table is created but unused, as officially."""

    kind = "LSTM"
    num_frames: int | None = None

    def __init__(self, width: int, positions: int = 77):
        super().__init__()
        self.frame_position_embeddings = nn.Embedding(positions, width)
        self.lstm_visual = nn.LSTM(input_size=width, hidden_size=width, batch_first=True, num_layers=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm_visual(x.float())
        return (h.to(x.dtype) + x).mean(dim=1)


class Conv1DFusion(nn.Module):
    """Conv_1D: a depthwise kernel-3 temporal convolution plus a residual, then the mean.

    The official code reshapes `[B,T,D]` with `view(-1, D, T)` rather than
    permuting, so the convolution runs over a scrambled layout; kept as is,
    since trained checkpoints expect it.
    """

    kind = "Conv_1D"
    num_frames: int | None = None

    def __init__(self, width: int, positions: int = 77):
        super().__init__()
        self.frame_position_embeddings = nn.Embedding(positions, width)
        self.shift = nn.Conv1d(width, width, 3, padding=1, groups=width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, frames, width = x.shape
        h = self.shift(x.contiguous().view(batch, width, frames).float()).permute(0, 2, 1)
        return (h.to(x.dtype) + x).mean(dim=1)


class _ClsAggregate(nn.Module):
    """The official TAggregate: a CLS token and T+1 learned positions through a post-LN encoder."""

    def __init__(self, width: int, layers: int, frames: int):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d_model=width, nhead=CLS_HEADS)
        self.transformer_enc = nn.TransformerEncoder(layer, num_layers=layers, norm=nn.LayerNorm(width),
                                                     enable_nested_tensor=False)  # fmt: skip
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, frames + 1, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.transformer_enc(tokens.transpose(0, 1))[0]


class ClsTransformerFusion(nn.Module):
    """Transf_cls: the CLS output of a 6-layer encoder; its positions fix the frame count."""

    kind = "Transf_cls"

    def __init__(self, width: int, layers: int, frames: int, positions: int = 77):
        super().__init__()
        self.frame_position_embeddings = nn.Embedding(positions, width)
        self.transformer = _ClsAggregate(width, layers, frames)
        self.num_frames = frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.num_frames:
            raise BadInputError(f"this Transf_cls head was trained on {self.num_frames} frames, got {x.shape[1]}")
        return self.transformer(x.float()).to(x.dtype)


# ---------------------------------------------------------------- checkpoints


def strip_prefix(state_dict: dict, prefix: str = "module.") -> dict:
    """Drop a DataParallel prefix when every key carries it."""
    if state_dict and all(key.startswith(prefix) for key in state_dict):
        return {key[len(prefix) :]: value for key, value in state_dict.items()}
    return dict(state_dict)


def _layer_count(state_dict: dict, prefix: str) -> int:
    indices = {key[len(prefix) :].split(".")[0] for key in state_dict if key.startswith(prefix)}
    return len(indices)


def fusion_from_state_dict(fusion_state: dict, clip_state: dict, source: str | Path = "checkpoint") -> nn.Module:
    """Build the head that `fusion_state`'s keys describe and load it strictly.

    Widths come from the tensors; the Transf head count, like the official
    `visual_prompt`, from CLIP's text width (`ln_final`) / 64.
    """
    state = strip_prefix(fusion_state)
    width = int(clip_state["text_projection"].shape[1])
    table = state.get("frame_position_embeddings.weight")
    positions = int(table.shape[0]) if table is not None else int(clip_state["positional_embedding"].shape[0])
    head: nn.Module
    if not state:
        head = MeanFusion()
    elif "transformer.cls_token" in state:
        frames = int(state["transformer.pos_embed"].shape[1]) - 1
        layers = _layer_count(state, "transformer.transformer_enc.layers.")
        head = ClsTransformerFusion(width, layers, frames, positions)
    elif any(key.startswith("transformer.resblocks.") for key in state):
        heads = max(1, int(clip_state["ln_final.weight"].shape[0]) // 64)
        head = TransformerFusion(width, _layer_count(state, "transformer.resblocks."), heads, positions)
    elif "lstm_visual.weight_ih_l0" in state:
        head = LSTMFusion(width, positions)
    elif "shift.weight" in state:
        head = Conv1DFusion(width, positions)
    else:
        sample = ", ".join(sorted(state)[:3])
        raise BadInputError(f"unknown ActionCLIP fusion head (keys such as {sample})", source)
    try:
        head.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise BadInputError(
            f"fusion_model_state_dict does not fit a {head.kind} head ({first_line(err)})", source
        ) from err
    return head.float().eval()


def load_actionclip(path: str | Path, device: str | torch.device = "cpu", *, trust_checkpoint: bool = False):
    """`(clip_model, fusion)` from an ActionCLIP checkpoint, both in eval mode on `device`.

    The file is a dict with `model_state_dict` (OpenAI CLIP keys) and
    `fusion_model_state_dict` (`module.`-prefixed head keys), as
    utils/saving.py writes it. CLIP follows `clip.load(jit=False)`'s dtype
    policy (fp16 on CUDA); the head stays fp32. `fusion(frame_features [B,T,D])`
    gives `[B,D]` un-normalised; `fusion.kind` names the head and
    `fusion.num_frames` is the frame count it requires (None: any).
    """
    torch_device = resolve_device(device)
    checkpoint = load_checkpoint(path, trust=trust_checkpoint)
    parts = ("model_state_dict", "fusion_model_state_dict")
    missing = [key for key in parts if not isinstance(checkpoint.get(key), dict)]
    if missing:
        raise BadInputError(
            f"not an ActionCLIP checkpoint: no {' or '.join(missing)} (expected the dict ActionCLIP's train.py saves)",
            path,
        )
    clip_state = strip_prefix(checkpoint["model_state_dict"])
    model: CLIP = clip_from_state_dict(clip_state, torch_device, path).eval()
    fusion = fusion_from_state_dict(checkpoint["fusion_model_state_dict"], clip_state, path).to(torch_device)
    return model, fusion
