"""`clipcli models`: list, verify and import weights, as plain results for the CLI."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from clipcli.errors import WeightsUnavailableError
from clipcli.models import weights
from clipcli.models.audioclip import audioclip_from_state_dict  # also registers the AudioCLIP releases
from clipcli.models.checkpoint import load_checkpoint
from clipcli.models.clip_loader import clip_from_state_dict


def list_models() -> list[dict]:
    """Every known and imported model: present or not, where, size, checksum verdict."""
    return [status.as_dict() for status in weights.list_weights()]


def verify_models(name_or_path: str | None = None) -> list[dict]:
    """Verify one model (absent known weights raise the offline message) or every present one."""
    if name_or_path is None:
        return [s.as_dict() for s in weights.list_weights() if s.path is not None]
    status = weights.verify(name_or_path)
    if status.path is None and status.known:
        known = weights.KNOWN[status.name]
        folders = " or ".join(str(f) for f in weights.search_folders())
        raise WeightsUnavailableError(weights.offline_message(known, [f"not found in {folders}"]))
    return [status.as_dict()]


def _check_clip_checkpoint(path: Path, trust: bool) -> dict | None:
    """Refuse to import a file that would not load as a CLIP model (or as AudioCLIP, given audio.* keys).

    A file that needed `trust` to load (TorchScript, a pickle with code) gives
    back its tensors, to be stored as a plain state dict in its place.
    """
    state_dict = load_checkpoint(path, trust=trust)
    if any(key.startswith("audio.") for key in state_dict):
        audioclip_from_state_dict(state_dict, device="cpu", source=path)
    else:
        clip_from_state_dict(state_dict, device="cpu", source=path)
    if not trust:
        return None
    return {key: value for key, value in state_dict.items() if isinstance(value, torch.Tensor)}


def import_model(file: str | Path, name: str | None = None, trust: bool = False, overwrite: bool = False) -> dict:
    check = functools.partial(_check_clip_checkpoint, trust=trust)
    status = weights.import_weights(file, name, check=check, overwrite=overwrite)
    return status.as_dict()
