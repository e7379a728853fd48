"""DepthCLIP against ground truth: the NYU Depth v2 protocol of the official eval.py.

Adonis-galaxy/DepthCLIP eval.py and calculate_error.py: the 544x416 box of a
480x640 image is predicted without resizing, both maps are clamped to
[1e-3, max depth], and the standard metrics are averaged over images inside
the Eigen crop (docs/methods/depth.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from clipcli.errors import BadInputError
from clipcli.media.images import load_image, load_image_unchanged
from clipcli.pipelines.depth import DepthSettings, depth_for_image, load_depth_model
from clipcli.runner import Executor, Job, Report, run_job

NYU_SIZE = (480, 640)
NYU_CROP = (slice(56, 472), slice(60, 604))  # rows, cols of the 544x416 input box
EIGEN_CROP = (slice(45, 471), slice(46, 601))
PAPER_NYU = {"delta1": 0.394, "delta2": 0.683, "delta3": 0.851, "abs_rel": 0.388, "log10": 0.156, "rmse": 1.167}

METRICS = ("delta1", "delta2", "delta3", "abs_rel", "log10", "rmse")


def depth_metrics(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, cap: float = 10.0) -> dict[str, float]:
    """The standard metrics over `valid` pixels, both maps clamped to [1e-3, cap] (calculate_error.py)."""
    if not valid.any():
        raise BadInputError("no valid ground-truth pixels to evaluate")
    gt_v = np.clip(gt[valid].astype(np.float64), 1e-3, cap)
    pred_v = np.clip(pred[valid].astype(np.float64), 1e-3, cap)
    ratio = np.maximum(gt_v / pred_v, pred_v / gt_v)
    return {
        "delta1": float((ratio < 1.25).mean()),
        "delta2": float((ratio < 1.25**2).mean()),
        "delta3": float((ratio < 1.25**3).mean()),
        "abs_rel": float((np.abs(gt_v - pred_v) / gt_v).mean()),
        "log10": float(np.abs(np.log10(gt_v) - np.log10(pred_v)).mean()),
        "rmse": float(np.sqrt(((gt_v - pred_v) ** 2).mean())),
    }


def load_ground_truth(path: Path) -> np.ndarray:
    """Depth in metres from a 16-bit PNG in millimetres (NYU) or a .npy in metres."""
    if path.suffix.lower() == ".npy":
        try:
            depth = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise BadInputError(f"not a readable .npy depth map ({err})", path) from None
        if depth.ndim == 3 and 1 in (depth.shape[0], depth.shape[-1]):
            depth = depth.squeeze()
        if depth.ndim != 2 or not np.issubdtype(depth.dtype, np.number):
            raise BadInputError(f"ground truth must be a 2-D array of metres, got shape {depth.shape}", path)
        return depth.astype(np.float32)
    pixels = load_image_unchanged(path)
    if pixels.dtype != np.uint16 or pixels.ndim != 2:
        raise BadInputError("ground-truth PNG must be single-channel 16-bit (millimetres)", path)
    return pixels.astype(np.float32) / 1000.0


def evaluation_region(pred: np.ndarray, gt: np.ndarray, rgb_shape: tuple[int, int], cap: float) -> np.ndarray:
    """Valid pixels: 1e-3 < gt < cap and pred > 1e-3, inside the Eigen crop for NYU-sized images."""
    valid = (gt > 1e-3) & (gt < cap) & (pred > 1e-3) & np.isfinite(gt)
    if tuple(rgb_shape) == NYU_SIZE:
        crop = np.zeros_like(valid)
        crop[EIGEN_CROP] = True
        valid &= crop
    return valid


def predict_for_evaluation(
    model, rgb: np.ndarray, gt_shape: tuple[int, int], size, settings: DepthSettings = DepthSettings()
) -> np.ndarray:
    """A prediction aligned with the ground truth.

    NYU-sized images follow the official protocol: the 544x416 box is cropped
    without resizing, predicted, and pasted into a zero 480x640 canvas (the
    border then falls outside the valid mask). Other images are predicted
    whole and resized to the ground truth's size.
    """
    if rgb.shape[:2] == NYU_SIZE and tuple(gt_shape) == NYU_SIZE:
        canvas = np.zeros(NYU_SIZE, np.float32)
        canvas[NYU_CROP] = depth_for_image(model, np.ascontiguousarray(rgb[NYU_CROP]), "native", settings)
        return canvas
    depth = depth_for_image(model, rgb, size, settings)
    if depth.shape != tuple(gt_shape):
        depth = cv2.resize(depth, gt_shape[::-1], interpolation=cv2.INTER_LINEAR)
    return depth


def parse_pairs(items: Sequence[str], list_file: Path | None) -> list[tuple[Path, Path]]:
    """`RGB,GT` arguments and/or a file of `RGB GT` lines."""
    pairs = []
    for item in items:
        parts = item.split(",")
        if len(parts) != 2 or not all(parts):
            raise BadInputError(f"{item!r}: give each pair as RGB,GT (comma-separated)")
        pairs.append((Path(parts[0]), Path(parts[1])))
    if list_file is not None:
        try:
            lines = Path(list_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise BadInputError(f"cannot read the pair list ({err})", list_file) from None
        base = Path(list_file).parent
        for number, line in enumerate(lines, 1):
            fields = line.split()
            if not fields or line.lstrip().startswith("#"):
                continue
            if len(fields) < 2:
                raise BadInputError(f"line {number}: expected 'RGB GT'", list_file)
            pairs.append((base / fields[0], base / fields[1]))
    if not pairs:
        raise BadInputError("no RGB,GT pairs given")
    return pairs


def evaluate(
    pairs: Sequence[tuple[Path, Path]],
    *,
    model_name: str = "RN50",
    settings: DepthSettings = DepthSettings(),
    size: str | tuple[int, int] = "auto",
    max_depth: float = 10.0,
    device: str = "auto",
    trust_checkpoint: bool = False,
    executor: Executor | None = None,
) -> Report:
    """Per-image metrics averaged over images, as the official evaluation reports them.

    A pair naming a file that does not exist stops the run before the model
    loads, as a missing input does in every other command.
    """
    for path in (path for pair in pairs for path in pair):
        if not Path(path).exists():
            raise BadInputError("no such file", path)
    job = DepthEvalJob(
        dict(pairs),
        model_name=model_name,
        settings=settings,
        size=size,
        max_depth=max_depth,
        device=device,
        trust_checkpoint=trust_checkpoint,
    )
    report = run_job(job, [rgb for rgb, _ in pairs], executor=executor)
    scored = [result.data for result in report.ok]
    mean = {name: float(np.mean([row[name] for row in scored])) for name in METRICS} if scored else {}
    report.summary = {"images": len(scored), "mean": mean, "paper_nyu": PAPER_NYU}
    return report


@dataclass
class DepthEvalJob(Job):
    """Metrics of each RGB image's prediction against its ground truth; nothing is written."""

    ground_truth: dict[Path, Path]
    model_name: str = "RN50"
    settings: DepthSettings = DepthSettings()
    size: str | tuple[int, int] = "auto"
    max_depth: float = 10.0
    device: str = "auto"
    trust_checkpoint: bool = False
    name = "depth-eval"
    read_workers = 2

    def setup(self) -> None:
        self._model = load_depth_model(self.model_name, self.device, self.trust_checkpoint)

    def read(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        return load_image(path), load_ground_truth(self.ground_truth[path])

    def compute(self, path: Path, value: tuple[np.ndarray, np.ndarray]) -> dict:
        rgb, gt = value
        pred = predict_for_evaluation(self._model, rgb, gt.shape, self.size, self.settings)
        valid = evaluation_region(pred, gt, rgb.shape[:2], self.max_depth)
        return {"ground_truth": str(self.ground_truth[path]), **depth_metrics(pred, gt, valid, self.max_depth)}
