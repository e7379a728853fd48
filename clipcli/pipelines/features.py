"""CLIP-ViL features: CLIP's visual tower as the image encoder of other vision-language models.

Three layouts, each the one a CLIP-ViL consumer reads (docs/methods/clip-vil.md;
clip-vil/CLIP-ViL CLIP-ViL-Direct):

- `vqa`: the Pythia/MCAN grid. RGB, detectron2's ResizeShortestEdge(600, 1000)
  then a fixed Resize((600, 1000)) (both PIL bilinear, so the aspect ratio is
  distorted), /255, CLIP mean/std, ResNet stem..layer4 without the attention
  pool: `(1, 18, 31, C)` per image, `NAME.npy`.
- `caption`: the Transformer captioner's features. Resize((448, 448), bicubic),
  layer4 as `att` (14 x 14 x C) and the attention pool, its positional
  embedding resized 7x7 -> 14x14, as `fc`: `att/NAME.npz` (key `feat`) and
  `fc/NAME.npy`, the names and formats the captioner's data loader reads.
- `pooled`: `encode_image` vectors with CLIP's own preprocessing (the VLN
  agents' features), one `pooled.npy` matrix for a whole folder plus
  `pooled.json` naming the image of each row.

ViT towers give grids too (the recipe the CLIP-ViL scripts spell out: patch
tokens after all but the last block for `vqa`, after all blocks with the class
token as `fc` for `caption`), but the CLIP-ViL paper reports them much weaker
than the ResNets' grids (its table is not re-checked here). The released
extraction scripts do not run as published (docs/methods/clip-vil.md), so this
follows what they spell out rather than what they were run as.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from clip.model import ModifiedResNet
from PIL import Image

from clipcli import ui
from clipcli.batch import OutputNames, check_output_folder, failed_row, skipped_row
from clipcli.errors import BadInputError
from clipcli.media.images import load_image
from clipcli.models import load_clip
from clipcli.models.grid import resnet_layer4
from clipcli.models.normalize import clip_normalize
from clipcli.models.spatial import attention_pool, vit_patch_grid, vit_tokens
from clipcli.prefetch import read_ahead
from clipcli.store.atomic import atomic_path

LAYOUTS = ("vqa", "caption", "pooled")
VQA_SHORT_EDGE, VQA_MAX_SIZE = 600, 1000  # detectron2 INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST
VQA_SIZE = (600, 1000)  # the fixed T.Resize((600, 1000)) after it, (H, W)
CAPTION_SIZE = 448
DEFAULT_DTYPE = {"vqa": "float16", "caption": "float32", "pooled": "float32"}
VIT_GRID_WARNING = (
    "warning: the CLIP-ViL paper reports grid features of CLIP ViTs much weaker than those of CLIP ResNets "
    "(coarse patches, positional embeddings stretched from 224 px); prefer RN50, RN101 or RN50x4"
)


# ---------------------------------------------------------------- pixels (CPU, one image)


def shortest_edge_size(height: int, width: int, short: int = VQA_SHORT_EDGE, max_size: int = VQA_MAX_SIZE):
    """detectron2's ResizeShortestEdge target `(h, w)`: shorter side to `short`, longer capped at `max_size`."""
    scale = short / min(height, width)
    new_h, new_w = (short, scale * width) if height < width else (scale * height, short)
    if max(new_h, new_w) > max_size:
        scale = max_size / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


def vqa_pixels(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 -> 600x1000x3 uint8, resized twice with PIL bilinear as the official mapper does."""
    image = Image.fromarray(rgb)
    height, width = shortest_edge_size(*rgb.shape[:2])
    image = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.array(image.resize(VQA_SIZE[::-1], Image.Resampling.BILINEAR))


def caption_pixels(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 -> 448x448x3 uint8: Resize((448, 448), BICUBIC); the CenterCrop(448) after it is a no-op."""
    return np.array(Image.fromarray(rgb).resize((CAPTION_SIZE, CAPTION_SIZE), Image.Resampling.BICUBIC))


def normalize(pixels: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """`[B,H,W,3]` uint8 -> `[B,3,H,W]` float32: /255 then CLIP mean/std, on `device`."""
    return clip_normalize(pixels.to(device).permute(0, 3, 1, 2).float() / 255.0)


# ---------------------------------------------------------------- features (batched, any device)


def is_resnet(model) -> bool:
    return isinstance(model.visual, ModifiedResNet)


@torch.no_grad()
def vqa_grid(model, images: torch.Tensor) -> torch.Tensor:
    """`[B,3,H,W]` normalised -> `[B, H/32, W/32, C]` in the model's dtype.

    ResNets: layer4, no attention pool (C = 2048 for RN50/RN101, 2560 for
    RN50x4). ViTs: patch tokens after all but the last block, class token
    dropped (C = width, 768 for ViT-B), `[B, H/patch, W/patch, C]`.
    """
    visual = model.visual
    if is_resnet(model):
        return resnet_layer4(visual, images).permute(0, 2, 3, 1)
    return vit_patch_grid(visual, images, blocks=len(visual.transformer.resblocks) - 1)


@torch.no_grad()
def caption_features(model, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`[B,3,448,448]` normalised -> (`att` `[B,14,14,C]`, `fc` `[B,D]`), as clip_prepro_feats.py makes them.

    ResNets: `att` is layer4, `fc` the attention pool over it with its
    positional embedding resized to 14x14. ViTs: `att` the patch tokens after
    all blocks, `fc` the class token (no ln_post, no projection).
    """
    visual = model.visual
    if is_resnet(model):
        grid = resnet_layer4(visual, images)
        return grid.permute(0, 2, 3, 1), attention_pool(visual.attnpool, grid)
    tokens = vit_tokens(visual, images)
    patch = visual.conv1.kernel_size[0]
    att = tokens[:, 1:].reshape(len(images), images.shape[-2] // patch, images.shape[-1] // patch, -1)
    return att, tokens[:, 0]


# ---------------------------------------------------------------- layouts: outputs per image


@dataclass(frozen=True)
class GridLayout:
    """Where one image's files go and how they are made, for the per-image layouts."""

    name: str
    prepare: Callable[[np.ndarray], np.ndarray]
    templates: tuple[str, ...]

    def names(self, out: Path) -> OutputNames:
        return OutputNames(out, self.templates)

    def outputs(self, image: Path, out: Path) -> list[Path]:
        return self.names(out).for_input(image)

    def compute(self, model, images: torch.Tensor) -> list[torch.Tensor]:
        if self.name == "vqa":
            return [vqa_grid(model, images).unsqueeze(1)]  # (1, H, W, C) per image, as the Pythia files
        return list(caption_features(model, images))

    def write(self, arrays: list[np.ndarray], paths: list[Path]) -> None:
        for array, path in zip(arrays, paths, strict=True):
            with atomic_path(path) as tmp:
                if path.suffix == ".npz":
                    np.savez_compressed(tmp, feat=array)
                else:
                    np.save(tmp, array)


GRID_LAYOUTS = {
    "vqa": GridLayout("vqa", vqa_pixels, ("{}.npy",)),
    "caption": GridLayout("caption", caption_pixels, ("att/{}.npz", "fc/{}.npy")),
}


def check_outputs(images: Sequence[Path], out: Path, layout: str) -> None:
    """`out` must be a folder; per-image layouts must give each image files of its own."""
    if layout == "pooled":
        check_output_folder(out)
    else:
        GRID_LAYOUTS[layout].names(out).check(images)


# ---------------------------------------------------------------- reading ahead


def batches(paths: Sequence[Path], prepare, batch_size: int, workers: int) -> Iterator[tuple[list, list, list]]:
    """Groups of `(paths, arrays)` of up to `batch_size` readable images, with the failures met on the way."""
    good, arrays, failed = [], [], []
    with contextlib.closing(read_ahead(paths, prepare, workers=max(1, workers), ahead=2 * batch_size)) as images:
        for path, result in images:
            if isinstance(result, BadInputError):
                failed.append((path, result))
            else:
                good.append(path)
                arrays.append(result)
            if len(good) == batch_size or (failed and not good):
                yield good, arrays, failed
                good, arrays, failed = [], [], []
    if good or failed:
        yield good, arrays, failed


# ---------------------------------------------------------------- running a batch of files


def check_options(layout: str, dtype: str | None, batch_size: int) -> str:
    """The output dtype for `layout`, after checking the options."""
    if layout not in LAYOUTS:
        raise BadInputError(f"--layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    dtype = dtype or DEFAULT_DTYPE[layout]
    if dtype not in ("float16", "float32"):
        raise BadInputError(f"--dtype {dtype!r}: choose float16 or float32")
    if batch_size < 1:
        raise BadInputError("--batch-size must be at least 1")
    return dtype


def run(
    images: Sequence[Path],
    *,
    out: Path,
    layout: str = "vqa",
    model_name: str = "RN50",
    batch_size: int = 8,
    dtype: str | None = None,
    overwrite: bool = False,
    device: str = "auto",
    workers: int | None = None,
    trust_checkpoint: bool = False,
) -> dict:
    """Extract `layout` features for many images; a report with one result per input (failures included)."""
    dtype = check_options(layout, dtype, batch_size)
    check_outputs(images, out, layout)  # before the model loads: a bad --out costs nothing
    model, preprocess = load_clip(model_name, device, trust_checkpoint=trust_checkpoint)
    model_key = str(Path(model_name).resolve()) if Path(model_name).is_file() else model_name
    return _extract_checked(model, preprocess, images, out, model_key, layout, batch_size, dtype, overwrite, workers)


def extract(
    model,
    preprocess,
    images: Sequence[Path],
    *,
    out: Path,
    model_name: str,
    layout: str = "vqa",
    batch_size: int = 8,
    dtype: str | None = None,
    overwrite: bool = False,
    workers: int | None = None,
) -> dict:
    """`run` with a loaded model; `preprocess` is its CLIP transform (for `pooled`), `model_name` is reported."""
    dtype = check_options(layout, dtype, batch_size)
    check_outputs(images, out, layout)
    return _extract_checked(model, preprocess, images, out, model_name, layout, batch_size, dtype, overwrite, workers)


def _extract_checked(
    model,
    preprocess,
    images: Sequence[Path],
    out: Path,
    model_name: str,
    layout: str,
    batch_size: int,
    dtype: str,
    overwrite: bool,
    workers: int | None,
) -> dict:
    """`extract` once its options and outputs are checked (`run` checks them before loading the model)."""
    workers = workers or min(8, os.cpu_count() or 1)
    device_of_model = next(model.parameters()).device
    if layout == "pooled":
        rows, files = _run_pooled(images, model, preprocess, model_name, out, batch_size, dtype, overwrite, workers)
        return {"layout": layout, "model": model_name, "dtype": dtype, **files, "per_image": rows}
    if not is_resnet(model):
        ui.notice(VIT_GRID_WARNING)
    grid_layout = GRID_LAYOUTS[layout]
    results: dict[Path, dict] = {}
    todo = []
    for image in images:
        if not overwrite and all(path.exists() for path in grid_layout.outputs(image, out)):
            results[image] = skipped_row(image)
        else:
            todo.append(image)

    def prepare(path: Path) -> np.ndarray:
        return grid_layout.prepare(load_image(path))

    writes: list = []  # the previous batch's files, written by threads while the model runs the next batch
    with ThreadPoolExecutor(max(1, workers)) as writer, ui.progress() as bar:
        task = bar.add_task(f"features ({layout})", total=len(images), completed=len(images) - len(todo))
        for paths, arrays, failed in batches(todo, prepare, batch_size, workers):
            for path, err in failed:
                results[path] = failed_row(path, err)
            if paths:
                start = time.perf_counter()
                pixels = normalize(torch.from_numpy(np.stack(arrays)), device_of_model)
                tensors = grid_layout.compute(model, pixels)
                outputs = [tensor.to(getattr(torch, dtype)).cpu().numpy() for tensor in tensors]
                seconds = (time.perf_counter() - start) / len(paths)
                for future in writes:
                    future.result()
                writes = []
                for index, path in enumerate(paths):
                    files = grid_layout.outputs(path, out)
                    writes.append(writer.submit(grid_layout.write, [array[index] for array in outputs], files))
                    shapes = {file.parent.name if layout == "caption" else "grid": list(array[index].shape)
                              for file, array in zip(files, outputs, strict=True)}  # fmt: skip
                    results[path] = {"input": str(path), "status": "ok", "outputs": [str(f) for f in files],
                                     "shapes": shapes, "seconds": round(seconds, 4)}  # fmt: skip
            bar.advance(task, len(paths) + len(failed))
        for future in writes:
            future.result()
    return {"layout": layout, "model": model_name, "dtype": dtype, "per_image": [results[i] for i in images]}


# ---------------------------------------------------------------- pooled: one matrix per folder


POOLED_MATRIX, POOLED_INDEX = "pooled.npy", "pooled.json"
SAVE_SECONDS, SAVE_COST_RATIO = 60.0, 10.0


def _read_pooled(out: Path, model_name: str) -> tuple[np.ndarray | None, list[str]]:
    """The rows and image names already in `out`, or none; another model's index is an error."""
    index_path, matrix_path = out / POOLED_INDEX, out / POOLED_MATRIX
    if not index_path.exists():
        return None, []
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        matrix = np.load(matrix_path, allow_pickle=False)
        names = list(index["images"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise BadInputError(f"unreadable pooled index ({err}); use --overwrite to start again", index_path) from None
    if index.get("model") != model_name:
        raise BadInputError(
            f"holds {index.get('model')} features, not {model_name}; use --overwrite or another --out", index_path
        )
    if matrix.ndim != 2 or len(matrix) < len(names):
        raise BadInputError(f"{matrix_path.name} has fewer rows than the index lists; use --overwrite", index_path)
    return matrix[: len(names)], names


def _write_pooled(out: Path, matrix: np.ndarray, names: list[str], model_name: str) -> None:
    """Matrix first, then the index (the index never names rows the matrix lacks)."""
    with atomic_path(out / POOLED_MATRIX) as tmp:
        np.save(tmp, matrix)
    index = {"model": model_name, "layout": "pooled", "dim": int(matrix.shape[1]), "dtype": str(matrix.dtype),
             "images": names}  # fmt: skip
    with atomic_path(out / POOLED_INDEX) as tmp:
        tmp.write_text(json.dumps(index, indent=1), encoding="utf-8")


class PooledRows:
    """The rows of `pooled.npy` and their images' names, saved now and then while a run adds to them.

    Each save rewrites the whole matrix, so saves are spaced by SAVE_SECONDS
    and by SAVE_COST_RATIO times the last save's duration: a kill loses at
    most that stretch of work, and saving takes a small share of the run.
    """

    def __init__(self, out: Path, model_name: str, matrix: np.ndarray | None, names: list[str]):
        self.out, self.model_name = out, model_name
        self.blocks = [] if matrix is None else [matrix]
        self.names = names
        self.saved = len(names)
        self.next_save = time.monotonic() + SAVE_SECONDS

    def add(self, vectors: np.ndarray, names: list[str]) -> None:
        self.blocks.append(vectors)
        self.names += names
        if time.monotonic() >= self.next_save:
            self.save()

    def save(self) -> None:
        """Write the rows not yet on disk, if any."""
        if len(self.names) == self.saved:
            return
        start = time.monotonic()
        self.blocks = [np.concatenate(self.blocks)]
        _write_pooled(self.out, self.blocks[0], self.names, self.model_name)
        self.saved = len(self.names)
        finished = time.monotonic()
        self.next_save = finished + max(SAVE_SECONDS, SAVE_COST_RATIO * (finished - start))


def _run_pooled(images, model, preprocess, model_name, out, batch_size, dtype, overwrite, workers):
    """`encode_image` rows appended to `out/pooled.npy`; images already in the index are skipped."""
    matrix, names = (None, []) if overwrite else _read_pooled(out, model_name)
    known = {name: row for row, name in enumerate(names)}
    pooled = PooledRows(out, model_name, None if matrix is None else matrix.astype(dtype), names)
    device = next(model.parameters()).device
    results: dict[str, dict] = {}  # by resolved path, so one image named twice is encoded once
    todo = []
    for image in images:
        key = str(image.resolve())
        if key in known:
            results[key] = {"input": str(image), "status": "skipped", "reason": "already in the index",
                            "row": known[key]}  # fmt: skip
        elif key not in results:
            results[key] = {}
            todo.append(image)

    def prepare(path: Path) -> torch.Tensor:
        return preprocess(Image.fromarray(load_image(path)))

    try:
        with ui.progress() as bar:
            task = bar.add_task("features (pooled)", total=len(images), completed=len(images) - len(todo))
            for paths, tensors, failed in batches(todo, prepare, batch_size, workers):
                for path, err in failed:
                    results[str(path.resolve())] = failed_row(path, err)
                if paths:
                    with torch.no_grad():
                        vectors = model.encode_image(torch.stack(tensors).to(device)).float()
                    keys = [str(path.resolve()) for path in paths]
                    for row, (path, key) in enumerate(zip(paths, keys, strict=True), len(pooled.names)):
                        results[key] = {"input": str(path), "status": "ok", "row": row}
                    pooled.add(vectors.cpu().numpy().astype(dtype), keys)
                bar.advance(task, len(paths) + len(failed))
    finally:
        pooled.save()  # also on Ctrl-C or SIGTERM: a rerun resumes after what was computed
    files = {"matrix": str(out / POOLED_MATRIX), "index": str(out / POOLED_INDEX), "rows": len(pooled.names)}
    return [results[str(image.resolve())] for image in images], files
