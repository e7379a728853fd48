"""The files of `clipcli sketch`: an image file (and its mask) into the 224 px target, and the
chosen sketch out as SVG, PNG, mask PNG and animation, under names that cannot collide.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clipcli.batch import OutputNames
from clipcli.errors import BadInputError
from clipcli.media.decoders import Decoder
from clipcli.media.images import IMAGE_EXTENSIONS, load_image
from clipcli.pipelines.sketch_init import grabcut_mask, saliency_map
from clipcli.pipelines.sketch_objective import CANVAS
from clipcli.pipelines.sketch_optimize import SketchResult
from clipcli.render.animation import write_gif, write_mp4, write_png
from clipcli.render.strokes import rasterize
from clipcli.render.svg import write_svg

PAD = 20  # fix_image_scale pads to max(height, width) + 20


def output_names(out: Path) -> OutputNames:
    """Every file a sketch can write in `out`: NAME_sketch.{svg,png,json,gif,mp4} and NAME_mask.png."""
    sketch = ("{}_sketch.svg", "{}_sketch.png", "{}_sketch.json", "{}_sketch.gif", "{}_sketch.mp4")
    return OutputNames(out, (*sketch, "{}_mask.png"))


@dataclass(frozen=True)
class SketchOutputs:
    """Output paths for one input: NAME_sketch.{svg,png,json}, the animation and the auto mask."""

    svg: Path
    png: Path
    json: Path
    animation: Path | None
    mask: Path | None

    @classmethod
    def for_input(cls, image: Path, out: Path, animate: str | None, auto_mask: bool) -> SketchOutputs:
        svg, png, json_file, gif, mp4, mask = output_names(out).for_input(image)
        animation = {"gif": gif, "mp4": mp4}.get(animate) if animate is not None else None
        return cls(svg, png, json_file, animation, mask if auto_mask else None)

    def all_exist(self) -> bool:
        return all(path.exists() for path in (self.svg, self.png, self.json, self.animation, self.mask) if path)


def square_on_white(image: np.ndarray) -> np.ndarray:
    """Pad a non-square RGB image to a centred white square of side max(H, W) + 20 (CLIPasso's fix_scale)."""
    height, width = image.shape[:2]
    if height == width:
        return image
    side = max(height, width) + PAD
    canvas = np.full((side, side, 3), 255, np.uint8)
    top, left = side // 2 - height // 2, side // 2 - width // 2
    canvas[top : top + height, left : left + width] = image
    return canvas


def target_tensor(image: np.ndarray) -> torch.Tensor:
    """RGB uint8 -> `[1, 3, 224, 224]` in [0, 1]: white-square padding, then PIL bicubic, as torchvision's Resize."""
    resized = Image.fromarray(square_on_white(image)).resize((CANVAS, CANVAS), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(resized, np.float32) / 255.0).permute(2, 0, 1)[None].contiguous()


def _user_mask(mask: Path, image_path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Boolean object mask from a file (or from `mask/<input stem>.*` when `mask` is a folder)."""
    if mask.is_dir():
        matches = [p for p in sorted(mask.glob(f"{image_path.stem}.*")) if p.suffix.lower() in IMAGE_EXTENSIONS]
        if not matches:
            raise BadInputError(f"no mask {image_path.stem}.* in {mask}", image_path)
        mask = matches[0]
    pixels = load_image(mask)
    if pixels.shape[:2] != shape:
        raise BadInputError(f"mask is {pixels.shape[1]}x{pixels.shape[0]}, the image {shape[1]}x{shape[0]}", mask)
    return pixels.max(axis=2) > 127


def read_target(path: Path, mask: str | Path = "none", decoder: Decoder | None = None) -> torch.Tensor:
    """The target `[1, 3, 224, 224]` for an image file, its background whitened by a mask file or folder.

    No model runs here, so targets are read ahead while another image is optimised;
    `--mask auto` needs the saliency model and is applied later (`auto_mask`).
    """
    image = load_image(path, decoder=decoder)
    if mask not in ("none", "auto"):
        image = np.where(_user_mask(Path(mask), path, image.shape[:2])[..., None], image, np.uint8(255))
    return target_tensor(image)


def auto_mask(target: torch.Tensor, saliency_model) -> np.ndarray | None:
    """The object's `[224, 224]` mask by GrabCut seeded from the saliency map; None where none stands out."""
    pixels = np.ascontiguousarray((target[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    return grabcut_mask(pixels, saliency_map(target[0], saliency_model))


def whiten_background(target: torch.Tensor, foreground: np.ndarray) -> torch.Tensor:
    """The target with every pixel outside `foreground` white."""
    return torch.where(torch.from_numpy(foreground), target, torch.ones(()))


def render_png(points: torch.Tensor, width: float, size: int) -> np.ndarray:
    """`[F, size, size]` grey images of strokes `[F, N, 4, 2]` given on the 224 canvas, scaled up."""
    scale = size / CANVAS
    frames = []
    with torch.no_grad():
        for chunk in points.split(16):
            frames.append((1.0 - rasterize(chunk.float() * scale, width * scale, size)).numpy())
    return np.concatenate(frames)


def write_outputs(result: SketchResult, outputs: SketchOutputs, width: float, size: int, mask) -> None:
    """The chosen seed's sketch as SVG and PNG, the auto mask, and its evaluated states up to its best, animated."""
    chosen = result.chosen
    points = result.points[chosen]
    write_svg(outputs.svg, points.numpy(), width, CANVAS)
    write_png(outputs.png, render_png(points[None], width, size)[0])
    if outputs.mask is not None and mask is not None:
        write_png(outputs.mask, mask.astype(np.float32))
    if outputs.animation is not None:
        best = result.runs[chosen].best_iteration
        frames = render_png(torch.stack([p[chosen] for i, p in result.snapshots if i <= best]), width, size)
        (write_gif if outputs.animation.suffix == ".gif" else write_mp4)(outputs.animation, list(frames))
