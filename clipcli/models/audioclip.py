"""AudioCLIP (Guzhov et al. 2021): OpenAI CLIP's image and text towers plus an ESResNeXt-fbsp audio tower.

The released checkpoints are one state dict: CLIP RN50 keys, `audio.*` keys and two extra
logit scales. The CLIP part is built by `clip.model.build_model` (so image and text
embeddings are exactly OpenAI's code), the audio part by our `ESResNeXtFBSP`. Unlike the
official `AudioCLIP(pretrained=...)`, which loads with `strict=False` and so accepts any
file silently, loading here refuses missing, unexpected or mis-shaped keys by name.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import clip
import torch
from clip.model import CLIP
from torch import nn

from clipcli.errors import BadInputError
from clipcli.models.audio_tower import ESResNeXtFBSP
from clipcli.models.checkpoint import load_checkpoint
from clipcli.models.clip_loader import clip_from_state_dict
from clipcli.models.device import resolve_device
from clipcli.models.weights import KnownWeights, file_sha256, register, resolve_weights

_RELEASE = "https://github.com/AndreyGuzhov/AudioCLIP/releases/download/v0.1/"
# Sizes and sha256 are the Git-LFS objects of AndreyGuzhov/AudioCLIP:assets (commit 45327aa).
AUDIOCLIP_WEIGHTS = (
    KnownWeights(
        "audioclip-full",
        _RELEASE + "AudioCLIP-Full-Training.pt",
        "2441d35b353352c8b1bbfb8f7c687f46314c3d2909e940eaf763b8c17f632c44",
        537_302_068,
        family="audioclip",
    ),
    KnownWeights(
        "audioclip-partial",
        _RELEASE + "AudioCLIP-Partial-Training.pt",
        "1921885b6c3b5de0619f2ef4a9700ecbade758a398b34eb064230c30baef0c75",
        537_302_068,
        family="audioclip",
    ),
)
for _weights in AUDIOCLIP_WEIGHTS:
    register(_weights)

AUDIO_PREFIX = "audio."
SCALE_KEYS = ("logit_scale_ai", "logit_scale_at")
_SHOWN_KEYS = 5


class AudioCLIP(nn.Module):
    """Audio, image and text encoders sharing CLIP's embedding space.

    `logit_scale_ai` (audio-image) and `logit_scale_at` (audio-text) are the raw log values,
    as in the official model; `scale()` gives `clamp(exp(s), 1, 100)` as it uses them. The CLIP
    towers follow `clip`'s precision (fp16 on CUDA); the audio tower always runs in fp32
    because its filter-bank phases (up to ~3200 rad) do not survive fp16.
    """

    def __init__(self, clip_model: CLIP, audio: ESResNeXtFBSP):
        super().__init__()
        self.clip = clip_model
        self.audio = audio
        self.logit_scale_ai = nn.Parameter(torch.tensor(math.log(100.0)))
        self.logit_scale_at = nn.Parameter(torch.tensor(math.log(100.0)))

    @property
    def device(self) -> torch.device:
        return self.audio.fc.weight.device

    @property
    def visual(self) -> nn.Module:
        return self.clip.visual

    @property
    def logit_scale(self) -> nn.Parameter:
        """The image-text scale inherited from CLIP."""
        return self.clip.logit_scale

    @staticmethod
    def scale(log_scale: torch.Tensor) -> torch.Tensor:
        """How the official code applies every logit scale: `clamp(exp(s), 1, 100)`."""
        return torch.clamp(log_scale.float().exp(), min=1.0, max=100.0)

    def encode_audio(self, waveform: torch.Tensor) -> torch.Tensor:
        """Int16-scale waveform `[B, T]` (or `[B, C, T]`) at 44.1 kHz -> un-normalised `[B, embed_dim]`, fp32."""
        return self.audio(waveform.to(self.device, torch.float32))

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """CLIP-preprocessed images `[B, 3, 224, 224]` -> un-normalised `[B, embed_dim]`."""
        return self.clip.encode_image(image.to(self.device, self.clip.dtype))

    def encode_text(self, texts: list[str] | list[list[str]], template: str = "{}") -> torch.Tensor:
        """Texts -> un-normalised `[B, embed_dim]`; a list of labels is joined with ', ' as officially."""
        joined = [text if isinstance(text, str) else ", ".join(text) for text in texts]
        tokens = clip.tokenize([template.format(text) for text in joined]).to(self.device)
        return self.clip.encode_text(tokens)

    def checkpoint_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict in the released checkpoints' layout (CLIP keys, `audio.*`, the two scales)."""
        state = dict(self.clip.state_dict())
        state.update({AUDIO_PREFIX + key: value for key, value in self.audio.state_dict().items()})
        state.update({key: getattr(self, key).detach() for key in SCALE_KEYS})
        return state


def _name_keys(keys: list[str]) -> str:
    shown = ", ".join(sorted(keys)[:_SHOWN_KEYS])
    return shown + (f" (+{len(keys) - _SHOWN_KEYS} more)" if len(keys) > _SHOWN_KEYS else "")


def _refuse_non_audioclip(state_dict: dict, source) -> None:
    """Explain what a file is when it is not AudioCLIP: a plain CLIP, the bare ESResNeXt-fbsp head, or neither."""
    if not all(isinstance(value, torch.Tensor) for value in state_dict.values()):
        raise BadInputError("not an AudioCLIP checkpoint: expected a flat state dict of tensors", source)
    if any(key.startswith(AUDIO_PREFIX) for key in state_dict):
        return
    if "fbsp.fc" in state_dict and "conv1.weight" in state_dict:
        raise BadInputError(
            "an ESResNeXt-fbsp audio head without CLIP towers (like ESRNXFBSP.pt), not an AudioCLIP checkpoint; "
            "use AudioCLIP-Full-Training.pt or AudioCLIP-Partial-Training.pt",
            source,
        )
    what = "a CLIP checkpoint, not AudioCLIP" if "text_projection" in state_dict else "not an AudioCLIP checkpoint"
    raise BadInputError(
        f"no audio.* keys: {what}; use AudioCLIP-Full-Training.pt, AudioCLIP-Partial-Training.pt "
        "or --checkpoint audioclip-full|audioclip-partial",
        source,
    )


def _check_keys(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], source) -> None:
    """Refuse a state dict that does not match the model key for key and shape, naming the culprits."""
    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    problems = []
    if missing:
        problems.append(f"missing keys {_name_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_name_keys(unexpected)}")
    if problems:
        raise BadInputError(f"not an AudioCLIP checkpoint: {'; '.join(problems)}", source)
    for key, value in expected.items():
        shape, wanted = tuple(found[key].shape), tuple(value.shape)
        if shape != wanted:
            raise BadInputError(f"not an AudioCLIP checkpoint: {key} has shape {shape}, expected {wanted}", source)


def _load_error_detail(cause: BaseException) -> str | None:
    """Key names from `build_model`'s failure (a KeyError, or `load_state_dict`'s multi-line report)."""
    if isinstance(cause, KeyError):
        return f"missing key {cause.args[0]}" if cause.args else None
    text = str(cause)
    problems = []
    for kind in ("Missing", "Unexpected"):
        found = re.search(rf"{kind} key\(s\) in state_dict: (.+)", text)
        if found:
            names = re.findall(r'"([^"]+)"', found.group(1))
            problems.append(f"{kind.lower()} keys {_name_keys(names)}")
    mismatch = re.search(r"size mismatch for ([^:]+): copying a param with shape (.+?) from checkpoint", text)
    if mismatch:
        problems.append(f"{mismatch.group(1)} has shape {mismatch.group(2)}")
    return "; ".join(problems) or None


def _build_clip(clip_part: dict, device: torch.device, source) -> CLIP:
    """The CLIP towers through `clip_from_state_dict` (OpenAI's `build_model`), with key names in errors."""
    try:
        return clip_from_state_dict(clip_part, device, source)
    except BadInputError as err:
        detail = _load_error_detail(err.__cause__) if err.__cause__ is not None else None
        if detail is None:
            raise
        raise BadInputError(f"not an AudioCLIP checkpoint: {detail}", source) from err.__cause__


def audioclip_from_state_dict(
    state_dict: dict, device: str | torch.device = "cpu", source: str | Path = "checkpoint"
) -> AudioCLIP:
    """Build an eval-mode `AudioCLIP` from a released-layout state dict, strictly."""
    device = torch.device(device)
    _refuse_non_audioclip(state_dict, source)
    clip_part = {k: v for k, v in state_dict.items() if not k.startswith(AUDIO_PREFIX) and k not in SCALE_KEYS}
    audio_part = {k[len(AUDIO_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(AUDIO_PREFIX)}
    clip_model = _build_clip(clip_part, device, source)
    embed_dim = clip_model.text_projection.shape[1]
    with torch.device("meta"):  # shapes only: every tensor comes from the checkpoint, so skip random init
        audio = ESResNeXtFBSP(embed_dim=embed_dim)
    model = AudioCLIP(clip_model, audio)
    _check_keys(model.checkpoint_state_dict(), state_dict, source)
    # build_model rounded the CLIP weights through fp16; loading again restores the fp32 values on the CPU.
    clip_model.load_state_dict(clip_part, strict=True)
    audio.to_empty(device=device).load_state_dict(audio_part, strict=True)
    with torch.no_grad():
        for key in SCALE_KEYS:
            getattr(model, key).copy_(state_dict[key].reshape(()))
    return model.to(device).eval()  # moves the audio tower and scales; CLIP keeps clip's dtype


def check_release_copy(path: Path) -> None:
    """A file named like an AudioCLIP release must be that release: right size, right sha256."""
    known = next((k for k in AUDIOCLIP_WEIGHTS if k.filename == path.name), None)
    if known is None:
        return
    size = path.stat().st_size
    if size != known.approx_bytes:
        raise BadInputError(
            f"{size:,} bytes where the {known.name} release has {known.approx_bytes:,} (truncated download?); "
            f"download it again from {known.url}",
            path,
        )
    if file_sha256(path) != known.sha256:
        raise BadInputError(
            f"sha256 differs from the {known.name} release ({known.sha256[:12]}...); download it again "
            f"from {known.url}, or rename the file if it is intentionally a different checkpoint",
            path,
        )


_LOADED: dict[tuple, AudioCLIP] = {}


def load_audioclip(
    path: str | Path, device: str | torch.device = "cpu", *, trust_checkpoint: bool = False
) -> AudioCLIP:
    """An eval-mode AudioCLIP from a checkpoint file or a known name (`audioclip-full`, `audioclip-partial`).

    Missing or unexpected keys are refused by name; a file named like a release is checked
    against its size and sha256. Models are cached per process, file and device; treat them as shared.
    """
    torch_device = resolve_device(device)
    resolved = resolve_weights(path).resolve()
    check_release_copy(resolved)
    key = (str(resolved), resolved.stat().st_mtime_ns, str(torch_device))
    if key not in _LOADED:
        state_dict = load_checkpoint(resolved, trust=trust_checkpoint)
        _LOADED[key] = audioclip_from_state_dict(state_dict, torch_device, resolved)
    return _LOADED[key]


def clear_cache() -> None:
    """Forget loaded models."""
    _LOADED.clear()
