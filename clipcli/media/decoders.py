"""Which decoder reads a command's images or videos: the CPU readers always, a GPU decoder where one can run.

A GPU decoder is tried file by file. Whatever it cannot read (another format,
an unsupported codec, a decode error) goes to the CPU reader, so results and
error messages are the CPU reader's for those files. `auto` uses a GPU decoder
where the device is CUDA and the decoder can run here, else the CPU readers,
without a word; `gpu` insists and says what is missing; `cpu` never tries one.

A GPU decoder's `decode` takes what the CPU reader starts from (an image file's
bytes; a probed video and the frame indices wanted) and the device, and returns
what the CPU reader would: HxWx3 uint8 RGB in file order (EXIF orientation is
applied after), or a `video_probe.Decoded`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from clipcli.errors import ParameterError
from clipcli.models.device import resolve_device

MODES = ("auto", "cpu", "gpu")
IMAGE, VIDEO = "image", "video"


def _always() -> bool:
    return True


@dataclass(frozen=True)
class Decoder:
    """One way of decoding `media`; `decode` None is the CPU reader. `name` is recorded with what it made."""

    name: str
    media: str
    decode: Callable[..., Any] | None = None
    available: Callable[[], bool] = _always  # whether it can run on this machine
    needs: str = ""  # what --decode gpu says is missing where it cannot: "torchcodec with CUDA: pip install ..."
    device: str = "cpu"


CPU_DECODERS = {IMAGE: Decoder("cpu", IMAGE), VIDEO: Decoder("cpu", VIDEO)}
GPU_DECODERS: dict[str, list[Decoder]] = {IMAGE: [], VIDEO: []}  # tried in order; see `Decoder.needs`


def select_decoder(mode: str, device: Any = "auto", media: str = IMAGE) -> Decoder:
    """The decoder `mode` (auto, cpu or gpu) picks for `media` on `device` (a --device value or torch.device).

    Raises ParameterError where `gpu` cannot run: no CUDA device, or no GPU
    decoder for `media` that can run on this machine.
    """
    if mode not in MODES:
        raise ParameterError("decode", f"must be one of {', '.join(MODES)}, not {mode!r}")
    if media not in CPU_DECODERS:
        raise ValueError(f"unknown media {media!r}; expected {IMAGE} or {VIDEO}")
    if mode == "cpu":
        return CPU_DECODERS[media]
    torch_device = resolve_device(device, announce=False)
    if torch_device.type != "cuda":
        if mode == "gpu":
            raise ParameterError("decode", f"gpu needs a CUDA device (this run uses {torch_device})")
        return CPU_DECODERS[media]
    for decoder in GPU_DECODERS[media]:
        if decoder.available():
            return replace(decoder, device=str(torch_device))
    if mode == "gpu":
        raise ParameterError("decode", f"gpu needs {_missing(media)}")
    return CPU_DECODERS[media]


def _missing(media: str) -> str:
    """What would let a GPU decoder for `media` run here."""
    needs = [decoder.needs for decoder in GPU_DECODERS[media]]
    return " or ".join(needs) if needs else f"a GPU {media} decoder, and this clipcli has none yet (use --decode cpu)"
