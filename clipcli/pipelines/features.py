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

import io
import json
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clipcli import ui
from clipcli.batch import OutputNames, check_output_folder
from clipcli.errors import BadInputError, ParameterError
from clipcli.media.decoders import CPU_DECODERS, IMAGE, Decoder, select_decoder
from clipcli.media.images import load_image
from clipcli.models import load_clip
from clipcli.pipelines.features_grid import (
    caption_features,
    caption_pixels,
    is_resnet,
    normalize,
    vqa_grid,
    vqa_pixels,
)
from clipcli.runner import Executor, Job, Report, Result, run_job
from clipcli.store.atomic import atomic_path

LAYOUTS = ("vqa", "caption", "pooled")
DEFAULT_DTYPE = {"vqa": "float16", "caption": "float32", "pooled": "float32"}
VIT_GRID_WARNING = (
    "warning: the CLIP-ViL paper reports grid features of CLIP ViTs much weaker than those of CLIP ResNets "
    "(coarse patches, positional embeddings stretched from 224 px); prefer RN50, RN101 or RN50x4"
)


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

    def shapes(self, arrays: list[np.ndarray]) -> dict[str, list[int]]:
        """Each output's shape, by its folder (`att`, `fc`) or as `grid` where the layout has one file."""
        return {Path(template).parent.name or "grid": list(array.shape)
                for template, array in zip(self.templates, arrays, strict=True)}  # fmt: skip

    def encode(self, arrays: list[np.ndarray]) -> list[bytes]:
        """Each output file's bytes: `.npz` compressed with the key `feat`, as the captioner reads it, else `.npy`."""
        contents = []
        for template, array in zip(self.templates, arrays, strict=True):
            buffer = io.BytesIO()
            if template.endswith(".npz"):
                np.savez_compressed(buffer, feat=array)
            else:
                np.save(buffer, array)
            contents.append(buffer.getvalue())
        return contents

    def write(self, contents: list[bytes], paths: list[Path]) -> None:
        for content, path in zip(contents, paths, strict=True):
            with atomic_path(path) as tmp:
                tmp.write_bytes(content)


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


# ---------------------------------------------------------------- the jobs


@dataclass
class FeaturesJob(Job):
    """What every layout's job shares: the model (`model_name` is loaded, `model_key` reported) and the dtype."""

    out: Path
    layout: str
    model_name: str
    model_key: str
    dtype: str
    device: str = "auto"
    trust_checkpoint: bool = False
    batch_size: int = 8
    read_workers: int = 1
    decoder: Decoder = CPU_DECODERS[IMAGE]
    name = "features"

    def use_model(self, model, preprocess) -> None:
        """Run with an already loaded model (`extract`) instead of loading `model_name` in `setup`."""
        self._model, self._preprocess = model, preprocess

    def setup(self) -> None:
        if not hasattr(self, "_model"):
            loaded = load_clip(self.model_name, self.device, trust_checkpoint=self.trust_checkpoint)
            self._model, self._preprocess = loaded

    def summary(self) -> dict:
        return {"layout": self.layout, "model": self.model_key, "dtype": self.dtype}


@dataclass
class GridFiles:
    """One image's outcome in a per-image layout: its files' bytes, their arrays' shapes, its model seconds."""

    contents: list[bytes]
    shapes: dict[str, list[int]]
    seconds: float


@dataclass
class GridJob(FeaturesJob):
    """The per-image layouts (vqa, caption): batches of images through the tower, each image's files written."""

    @property
    def grid_layout(self) -> GridLayout:
        return GRID_LAYOUTS[self.layout]

    def setup(self) -> None:
        super().setup()
        if not is_resnet(self._model):
            ui.notice(VIT_GRID_WARNING)

    def done(self, path: Path) -> bool:
        return all(output.exists() for output in self.grid_layout.outputs(path, self.out))

    def read(self, path: Path) -> np.ndarray:
        return self.grid_layout.prepare(load_image(path, decoder=self.decoder))

    def compute_batch(self, items: Sequence[tuple[Path, np.ndarray]]) -> list[GridFiles]:
        """Each image's files as bytes, so the driver only stores them.

        Compressing a caption `.npz` takes longer than the model's share of an
        image, so the batch's files are encoded on `read_workers` threads.
        """
        if not items:
            return []
        start = time.perf_counter()
        device = next(self._model.parameters()).device
        pixels = normalize(torch.from_numpy(np.stack([pixels for _, pixels in items])), device)
        tensors = self.grid_layout.compute(self._model, pixels)
        arrays = [tensor.to(getattr(torch, self.dtype)).cpu().numpy() for tensor in tensors]
        seconds = (time.perf_counter() - start) / len(items)
        per_image = [[array[index] for array in arrays] for index in range(len(items))]
        with ThreadPoolExecutor(self.read_workers, thread_name_prefix="clipcli-encode") as pool:
            contents = list(pool.map(self.grid_layout.encode, per_image))
        shapes = [self.grid_layout.shapes(image) for image in per_image]
        return [GridFiles(files, shape, seconds) for files, shape in zip(contents, shapes, strict=True)]

    def write(self, path: Path, outcome: GridFiles) -> dict:
        files = self.grid_layout.outputs(path, self.out)
        self.grid_layout.write(outcome.contents, files)
        return {
            "outputs": [str(file) for file in files],
            "shapes": outcome.shapes,
            "seconds": round(outcome.seconds, 4),
        }


# ---------------------------------------------------------------- pooled: one matrix per folder


POOLED_MATRIX, POOLED_INDEX = "pooled.npy", "pooled.json"
SAVE_SECONDS, SAVE_COST_RATIO = 60.0, 10.0
INDEXED = "already in the index"


def image_key(path: Path) -> str:
    """How `pooled.json` names an image: its resolved path, so one file named two ways is one row."""
    return str(path.resolve())


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
        self.saved = self.kept = len(names)  # kept: the rows from before this run
        self.next_save = time.monotonic() + SAVE_SECONDS

    def add(self, vector: np.ndarray, name: str) -> int:
        """Append one image's row and say its number; a save due now that fails takes the row back out."""
        self.blocks.append(vector[None])
        self.names.append(name)
        if time.monotonic() >= self.next_save:
            try:
                self.save()
            except OSError:
                self.blocks.pop()
                self.names.pop()
                raise
        return len(self.names) - 1

    def in_order(self, keys: Sequence[str]) -> dict[str, int]:
        """Put this run's rows in the order of `keys` (a cluster returns them as they finish); each one's row."""
        added = self.names[self.kept :]
        position = {key: number for number, key in enumerate(keys)}
        order = sorted(range(len(added)), key=lambda row: position[added[row]])
        if order != sorted(order):
            matrix = np.concatenate(self.blocks)
            self.blocks = [np.concatenate([matrix[: self.kept], matrix[self.kept :][order]])]
            self.names = self.names[: self.kept] + [added[row] for row in order]
            self.saved = self.kept  # the next save rewrites them in this order
        return {name: row for row, name in enumerate(self.names) if row >= self.kept}

    def save(self) -> None:
        """Write the rows not yet on disk, if any."""
        if len(self.names) == self.saved:
            return
        start = time.monotonic()
        matrix = np.concatenate(self.blocks)
        _write_pooled(self.out, matrix, self.names, self.model_name)
        self.blocks, self.saved = [matrix], len(self.names)
        finished = time.monotonic()
        self.next_save = finished + max(SAVE_SECONDS, SAVE_COST_RATIO * (finished - start))


@dataclass
class PooledJob(FeaturesJob):
    """`encode_image` rows of one matrix per folder; the driver appends each image's row to `pooled.npy`.

    The rows and the index live in the driver only (`resume`), so workers never receive a large index.
    """

    def resume(self, overwrite: bool) -> None:
        """Before the run, in the driver: the rows already in `out` (none with `overwrite`), to skip and add after."""
        matrix, names = (None, []) if overwrite else _read_pooled(self.out, self.model_key)
        self._rows = PooledRows(self.out, self.model_key, None if matrix is None else matrix.astype(self.dtype), names)
        self._indexed = {name: row for row, name in enumerate(names)}

    def indexed_row(self, path: Path) -> int | None:
        """The row of an image that was in `pooled.npy` before this run, else None."""
        return self._indexed.get(image_key(path))

    def done(self, path: Path) -> bool:
        return self.indexed_row(path) is not None

    def read(self, path: Path) -> torch.Tensor:
        return self._preprocess(Image.fromarray(load_image(path, decoder=self.decoder)))

    @torch.no_grad()
    def compute_batch(self, items: Sequence[tuple[Path, torch.Tensor]]) -> list[np.ndarray]:
        if not items:
            return []
        device = next(self._model.parameters()).device
        vectors = self._model.encode_image(torch.stack([pixels for _, pixels in items]).to(device)).float()
        return list(vectors.cpu().numpy().astype(self.dtype))

    def write(self, path: Path, outcome: np.ndarray) -> dict:
        return {"row": self._rows.add(outcome, image_key(path))}

    def in_order(self, keys: Sequence[str]) -> dict[str, int]:
        """This run's rows in input order, as a local run appends them, wherever they were computed."""
        return self._rows.in_order(keys)

    def save(self) -> None:
        self._rows.save()

    def summary(self) -> dict:
        files = {"matrix": str(self.out / POOLED_MATRIX), "index": str(self.out / POOLED_INDEX)}
        return super().summary() | files | {"rows": len(self._rows.names)}


def _run_pooled(job: PooledJob, images: Sequence[Path], overwrite: bool, executor: Executor | None) -> Report:
    """Rows appended to `out/pooled.npy`; images already in the index are skipped, an image named twice runs once."""
    job.resume(overwrite)
    first: dict[str, Path] = {}  # one run per image, however many times it is named
    for image in images:
        first.setdefault(image_key(image), image)
    try:
        report = run_job(job, list(first.values()), overwrite=overwrite, executor=executor)
        rows = job.in_order(list(first))
    finally:
        job.save()  # also on Ctrl-C or SIGTERM: a rerun resumes after what was computed
    for key, result in zip(first, report.results, strict=True):
        if key in rows:
            result.data["row"] = rows[key]
    by_key = {
        key: Result(result.input, "skipped", {"row": job.indexed_row(image)}, reason=INDEXED)
        if result.status == "skipped"
        else result
        for (key, image), result in zip(first.items(), report.results, strict=True)
    }
    report.results = [by_key[image_key(image)] for image in images]
    return report


# ---------------------------------------------------------------- running a batch of files


def check_options(layout: str, dtype: str | None, batch_size: int) -> str:
    """The output dtype for `layout`, after checking the options."""
    if layout not in LAYOUTS:
        raise ParameterError("layout", f"must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    dtype = dtype or DEFAULT_DTYPE[layout]
    if dtype not in ("float16", "float32"):
        raise ParameterError("dtype", f"must be float16 or float32, not {dtype!r}")
    if batch_size < 1:
        raise ParameterError("batch_size", "must be at least 1")
    return dtype


def features_job(layout: str, *, workers: int | None, **settings) -> FeaturesJob:
    """The job for `layout`, reading on `workers` threads (default: the CPU count, at most 8)."""
    read_workers = max(1, workers or min(8, os.cpu_count() or 1))
    job_class = PooledJob if layout == "pooled" else GridJob
    return job_class(layout=layout, read_workers=read_workers, **settings)


def _run(job: FeaturesJob, images: Sequence[Path], overwrite: bool, executor: Executor | None) -> Report:
    if isinstance(job, PooledJob):
        return _run_pooled(job, images, overwrite, executor)
    return run_job(job, images, overwrite=overwrite, executor=executor)


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
    executor: Executor | None = None,
    decode: str = "auto",
) -> Report:
    """Extract `layout` features for many images; a report with one result per input (failures included)."""
    dtype = check_options(layout, dtype, batch_size)
    decoder = select_decoder(decode, device, IMAGE)
    check_outputs(images, out, layout)  # before the model loads: a bad --out costs nothing
    model_key = str(Path(model_name).resolve()) if Path(model_name).is_file() else model_name
    job = features_job(layout, out=out, model_name=model_name, model_key=model_key, dtype=dtype, device=device,
                       trust_checkpoint=trust_checkpoint, batch_size=batch_size, workers=workers,
                       decoder=decoder)  # fmt: skip
    return _run(job, images, overwrite, executor)


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
) -> Report:
    """`run` with a loaded model; `preprocess` is its CLIP transform (for `pooled`), `model_name` is reported."""
    dtype = check_options(layout, dtype, batch_size)
    check_outputs(images, out, layout)
    job = features_job(layout, out=out, model_name=model_name, model_key=model_name, dtype=dtype,
                       batch_size=batch_size, workers=workers)  # fmt: skip
    job.use_model(model, preprocess)
    return _run(job, images, overwrite, None)
