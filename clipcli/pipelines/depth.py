"""DepthCLIP: zero-shot monocular depth from CLIP's ResNet layer4 grid.

Each layer4 cell (no attention pool) is L2-normalised over all channels, every
other channel is kept to match the text width, and compared with seven
"This object is <word>" prompts; a softmax at temperature 0.1 (on top of
CLIP's x100) weights seven depth bins, 1-3 m. Facts: docs/methods/depth.md
(Adonis-galaxy/DepthCLIP monoclip.py, eval.py, calculate_error.py).

The output is coarse (one value per 32x32 cell, bilinearly upsampled),
bounded by the bin range, and has no scale recovery.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from clipcli.batch import OutputNames
from clipcli.errors import BadInputError, ParameterError
from clipcli.media.decoders import CPU_DECODERS, IMAGE, Decoder, select_decoder
from clipcli.media.images import encode_png, load_image
from clipcli.models import load_clip
from clipcli.models.grid import layer4_channels, require_resnet, resnet_layer4
from clipcli.models.prompts import text_classifier
from clipcli.render.colormap import add_legend, colorize
from clipcli.runner import Executor, Job, Report, run_job
from clipcli.store.atomic import atomic_write

DEPTH_TEMPLATE = "This {} is {}"
DEPTH_OBJECT = "object"
DEPTH_WORDS = ("giant", "extremely close", "close", "not in distance", "a little remote", "far", "unseen")
DEPTH_BINS = (1.00, 1.50, 2.00, 2.25, 2.50, 2.75, 3.00)
BIN_PRESETS = {
    "default": DEPTH_BINS,
    # The per-scene set from the DepthCLIP slides (bathroom: delta1 0.425 vs 0.333).
    "bathroom": (1.00, 1.25, 1.50, 1.75, 2.00, 2.25, 2.50),
}
TEMPERATURE = 0.1
CLIP_SCALE = 100.0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OFFICIAL_SIZE = (416, 544)  # the NYU crop DepthCLIP was run on (H, W)


def resolve_bins(bins: Sequence[float] | None, words: Sequence[str] | None) -> tuple[list[float], list[str]]:
    """Default to the paper's bins and words; any override must keep them paired."""
    bins = list(DEPTH_BINS if bins is None else bins)
    words = list(DEPTH_WORDS if words is None else words)
    if len(bins) != len(words):
        raise ParameterError("words", f"has {len(words)} entries for {len(bins)} bins; each bin needs one word")
    if len(bins) < 2:
        raise ParameterError("bins", "needs at least two depth bins")
    if any(b <= 0 for b in bins):
        raise ParameterError("bins", "must be positive distances in metres")
    return bins, words


def depth_prompts(words: Sequence[str], template: str = DEPTH_TEMPLATE) -> list[list[str]]:
    """One prompt per bin: 'This object is giant', ... (no trailing period, as the official code)."""
    if template.count("{}") != 2:
        raise ParameterError("template", f"{template!r} needs two '{{}}' slots: object, then depth word")
    return [[template.format(DEPTH_OBJECT, word)] for word in words]


@dataclass(frozen=True)
class DepthSettings:
    """The method's knobs, validated once: paired bins and words, template, temperature, flip."""

    bins: tuple[float, ...] = DEPTH_BINS
    words: tuple[str, ...] = DEPTH_WORDS
    template: str = DEPTH_TEMPLATE
    temperature: float = TEMPERATURE
    flip: bool = True

    @classmethod
    def checked(cls, bins=None, words=None, template=DEPTH_TEMPLATE, temperature=TEMPERATURE, flip=True):
        bins, words = resolve_bins(bins, words)
        depth_prompts(words, template)
        if temperature <= 0:
            raise ParameterError("temperature", "must be positive")
        return cls(tuple(bins), tuple(words), template, temperature, flip)

    def options(self) -> dict:
        """Keyword arguments for `estimate_depth`."""
        return dict(bins=self.bins, words=self.words, template=self.template, temperature=self.temperature,
                    flip=self.flip)  # fmt: skip


def load_depth_model(model_name: str, device: str, trust_checkpoint: bool = False):
    """A CLIP checked to suit DepthCLIP (ResNet, layer4 = 2 x embedding width)."""
    model, _ = load_clip(model_name, device, trust_checkpoint=trust_checkpoint)
    _check_backbone(model)
    return model


def _check_backbone(model) -> None:
    visual = require_resnet(model, "DepthCLIP")
    embed = model.text_projection.shape[1]
    if layer4_channels(visual) != 2 * embed:
        raise BadInputError(
            f"DepthCLIP keeps every other layer4 channel to match the text width, so layer4 must have "
            f"2 x {embed} channels (RN50 has 2048 = 2 x 1024); this model has {layer4_channels(visual)}"
        )


def depth_grid(
    model, image: torch.Tensor, bins: Sequence[float], words: Sequence[str], temperature: float, template: str
) -> torch.Tensor:
    """`[B,3,H,W]` -> per-cell depth `[B,1,H/32,W/32]` (the official MonoCLIP.forward)."""
    features = resnet_layer4(model.visual, image).float()
    batch, _, height, width = features.shape
    cells = features.flatten(2).transpose(1, 2)  # [B, hw, C]
    cells = cells / cells.norm(dim=-1, keepdim=True)
    cells = cells[..., ::2]  # F.interpolate(scale_factor=0.5) on the channel axis keeps 0, 2, 4, ...
    text = text_classifier(model, depth_prompts(words, template)).float()  # [C/2, K]
    probabilities = (CLIP_SCALE * cells @ text / temperature).softmax(dim=-1)
    depth = probabilities @ torch.tensor(bins, dtype=torch.float32, device=features.device)
    return depth.view(batch, 1, height, width)


@torch.no_grad()
def estimate_depth(
    model,
    image: torch.Tensor,
    bins: Sequence[float] | None = None,
    temperature: float = TEMPERATURE,
    flip: bool = True,
    *,
    words: Sequence[str] | None = None,
    template: str = DEPTH_TEMPLATE,
) -> torch.Tensor:
    """DepthCLIP depth in metres, `[B,1,H,W]`, for ImageNet-normalised `[B,3,H,W]` images.

    H and W must be multiples of 32. With `flip`, the horizontally flipped image
    is run in the same batch and its (flipped back) grid averaged in, as the
    official evaluation does; the grid is then upsampled bilinearly with
    aligned corners to H x W.
    """
    _check_backbone(model)
    if image.ndim != 4 or image.shape[1] != 3:
        raise BadInputError(f"image must be [B,3,H,W], got {list(image.shape)}")
    height, width = image.shape[-2:]
    if height % 32 or width % 32:
        raise BadInputError(f"image height and width must be multiples of 32, got {height}x{width}")
    bins, words = resolve_bins(bins, words)
    image = image.to(next(model.parameters()).device)
    if flip:
        grids = depth_grid(model, torch.cat([image, image.flip(3)]), bins, words, temperature, template)
        grid = 0.5 * (grids[: len(image)] + grids[len(image) :].flip(3))
    else:
        grid = depth_grid(model, image, bins, words, temperature, template)
    return F.interpolate(grid, size=(height, width), mode="bilinear", align_corners=True)


# ---------------------------------------------------------------- images in, files out


def parse_size(text: str) -> str | tuple[int, int]:
    """`auto`, `native` or `HxW` (multiples of 32)."""
    text = text.strip().lower()
    if text in ("auto", "native"):
        return text
    try:
        height, width = (int(part) for part in text.split("x"))
    except ValueError:
        raise ParameterError("size", f"{text!r}: expected auto, native or HxW such as 416x544") from None
    if height <= 0 or width <= 0 or height % 32 or width % 32:
        raise ParameterError("size", f"{text}: height and width must be positive multiples of 32")
    return height, width


def network_size(shape: tuple[int, int], size: str | tuple[int, int]) -> tuple[int, int]:
    """The multiple-of-32 size an image of `shape` is run at.

    `auto` keeps the aspect ratio at about the official 416x544 pixel count
    (a 480x640 photo runs at 416x544); `native` rounds each side up (the
    image is edge-padded, not resized); `HxW` is taken as given.
    """
    height, width = shape
    if isinstance(size, tuple):
        return size
    if size == "native":
        return -(-height // 32) * 32, -(-width // 32) * 32
    scale = (OFFICIAL_SIZE[0] * OFFICIAL_SIZE[1] / (height * width)) ** 0.5
    return max(32, round(height * scale / 32) * 32), max(32, round(width * scale / 32) * 32)


def to_network_input(rgb: np.ndarray, size: str | tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
    """RGB uint8 -> ImageNet-normalised `[1,3,h,w]` and the region of it that holds the image."""
    height, width = rgb.shape[:2]
    target = network_size((height, width), size)
    if size == "native":
        pad = ((0, target[0] - height), (0, target[1] - width), (0, 0))
        pixels, region = np.pad(rgb, pad, mode="edge"), (height, width)
    else:
        shrinking = target[0] * target[1] < height * width
        pixels = cv2.resize(rgb, target[::-1], interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
        region = target
    tensor = torch.from_numpy(pixels).permute(2, 0, 1).float().div(255)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((tensor - mean) / std).unsqueeze(0), region


def depth_for_image(model, rgb: np.ndarray, size, settings: DepthSettings = DepthSettings()) -> np.ndarray:
    """Depth in metres at the image's own resolution, `[H,W]` float32."""
    height, width = rgb.shape[:2]
    tensor, region = to_network_input(rgb, size)
    depth = estimate_depth(model, tensor, **settings.options())[:, :, : region[0], : region[1]]
    if region != (height, width):
        depth = F.interpolate(depth, size=(height, width), mode="bilinear", align_corners=True)
    return depth[0, 0].cpu().numpy().astype(np.float32)


def output_names(out: Path) -> OutputNames:
    """NAME_depth.npy, NAME_depth.png and NAME_depth_color.png in `out`."""
    return OutputNames(out, ("{}_depth.npy", "{}_depth.png", "{}_depth_color.png"))


@dataclass(frozen=True)
class DepthOutputs:
    npy: Path
    png: Path
    color: Path

    @classmethod
    def for_input(cls, image: Path, out: Path) -> DepthOutputs:
        return cls(*output_names(out).for_input(image))

    def all_exist(self) -> bool:
        return self.npy.exists() and self.png.exists() and self.color.exists()


@dataclass(frozen=True)
class DepthOutcome:
    """One image's depth figures and its three files, encoded where the map was computed.

    Encoding the PNGs costs more than computing a map on a GPU, so it happens
    in the worker (a thread or a Ray actor) and the driver only writes bytes.
    """

    stats: dict
    npy: bytes
    png: bytes
    color: bytes
    seconds: float


def encode_outcome(depth: np.ndarray, bins: Sequence[float], colormap: str, seconds: float) -> DepthOutcome:
    """The .npy (metres), 16-bit PNG (millimetres) and the colour picture with its legend, as bytes."""
    vmin, vmax = min(bins), max(bins)
    picture = add_legend(colorize(depth, vmin, vmax, colormap), vmin, vmax, colormap)
    millimetres = np.clip(np.round(depth * 1000.0), 0, 65535).astype(np.uint16)
    metres = io.BytesIO()
    np.save(metres, depth)
    stats = {
        "height": int(depth.shape[0]),
        "width": int(depth.shape[1]),
        "min": round(float(depth.min()), 4),
        "max": round(float(depth.max()), 4),
        "mean": round(float(depth.mean()), 4),
    }
    return DepthOutcome(stats, metres.getvalue(), encode_png(millimetres), encode_png(picture), seconds)


def write_outputs(outcome: DepthOutcome, outputs: DepthOutputs) -> None:
    """The three files, each atomically."""
    for path, data in ((outputs.npy, outcome.npy), (outputs.png, outcome.png), (outputs.color, outcome.color)):
        with atomic_write(path) as handle:
            handle.write(data)


@dataclass
class DepthJob(Job):
    """Depth maps for images: decoded on read-ahead threads, written by the driver."""

    out: Path
    model_name: str = "RN50"
    settings: DepthSettings = DepthSettings()
    size: str | tuple[int, int] = "auto"
    colormap: str = "magma"
    device: str = "auto"
    trust_checkpoint: bool = False
    decoder: Decoder = CPU_DECODERS[IMAGE]
    name = "depth"
    read_workers = 2
    write_workers = 4  # three fsynced files an image: the driver's writes overlap (1.6x on a 2-vCPU VM)

    def setup(self) -> None:
        self._model = load_depth_model(self.model_name, self.device, self.trust_checkpoint)

    def done(self, path: Path) -> bool:
        return DepthOutputs.for_input(path, self.out).all_exist()

    def read(self, path: Path) -> np.ndarray:
        return load_image(path, decoder=self.decoder)

    def compute(self, path: Path, value: np.ndarray) -> DepthOutcome:
        start = time.perf_counter()
        depth = depth_for_image(self._model, value, self.size, self.settings)
        return encode_outcome(depth, self.settings.bins, self.colormap, time.perf_counter() - start)

    def write(self, path: Path, outcome: DepthOutcome) -> dict:
        outputs = DepthOutputs.for_input(path, self.out)
        write_outputs(outcome, outputs)
        files = {"npy": str(outputs.npy), "png": str(outputs.png), "color": str(outputs.color)}
        return outcome.stats | files | {"seconds": round(outcome.seconds, 3)}

    def summary(self) -> dict:
        return {"model": self.model_name, "bins": list(self.settings.bins), "colormap": self.colormap}


def run(
    images: Sequence[Path],
    *,
    out: Path,
    model_name: str = "RN50",
    settings: DepthSettings = DepthSettings(),
    size: str | tuple[int, int] = "auto",
    colormap: str = "magma",
    overwrite: bool = False,
    device: str = "auto",
    trust_checkpoint: bool = False,
    executor: Executor | None = None,
    decode: str = "auto",
) -> Report:
    """Estimate depth for many images; one result per input (failures included)."""
    colorize(np.zeros((1, 1)), 0, 1, colormap)  # an unknown colormap fails before the model loads
    decoder = select_decoder(decode, device, IMAGE)
    output_names(out).check(images)
    job = DepthJob(
        out=out,
        model_name=model_name,
        settings=settings,
        size=size,
        colormap=colormap,
        device=device,
        trust_checkpoint=trust_checkpoint,
        decoder=decoder,
    )
    return run_job(job, images, overwrite=overwrite, executor=executor)
