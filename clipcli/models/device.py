"""Device policy: `auto` picks CUDA when present; explicit devices are validated.

Precision follows `clip`: fp16 weights on CUDA, fp32 on the CPU.
"""

from __future__ import annotations

import re

import torch

from clipcli import ui
from clipcli.errors import BadInputError

_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
_announced: set[str] = set()


def check_device_spec(spec: str) -> str:
    """Validate the spelling of a --device value without touching CUDA."""
    if not _DEVICE_PATTERN.match(spec.strip().lower()):
        raise BadInputError(f"--device {spec!r}: expected auto, cpu, cuda or cuda:N")
    return spec.strip().lower()


def resolve_device(spec: str | torch.device = "auto", *, announce: bool = True) -> torch.device:
    """Turn `auto|cpu|cuda|cuda:N` into a usable `torch.device`, or explain why not.

    `auto` prints one notice line on stderr (once per process, not with
    --quiet) naming the device it chose, so a slow CPU run is no surprise.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = check_device_spec(spec)
    if spec == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if announce and spec not in _announced:
            _announced.add(spec)
            name = torch.cuda.get_device_name(device) if device.type == "cuda" else "no CUDA device found"
            ui.notice(f"clipcli: using {device} ({name})")
        return device
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise BadInputError(f"--device {spec}: CUDA is not available on this machine (use --device cpu)")
    device = torch.device(spec)
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise BadInputError(f"--device {spec}: only {count} CUDA device(s) present (cuda:0..cuda:{count - 1})")
    return device
