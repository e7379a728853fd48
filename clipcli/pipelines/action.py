"""ActionCLIP action recognition (Wang et al. 2021, sallymmx/ActionCLIP), zero-shot or from a checkpoint.

The official test path (test.py `validate`): T segment-centre frames, each
resized so its short side is 256 (for 224-pixel models) and centre-cropped,
CLIP image features, a fusion head over frames, then against 16 prompt
templates x C classes: `softmax(100 * v.t)` over classes within each template,
averaged over templates. Zero-shot uses meanP fusion (a plain mean: CLIP
with no trained head); `--checkpoint` loads ActionCLIP's own CLIP and head.

Deliberate differences from the official code, documented in --help/README:
videos are decoded directly (the official code reads pre-extracted JPEGs);
UCF101's CamelCase names are split into words for the prompts; probabilities
are computed in fp32 (the official code stays in fp16 on GPU). Sliding
windows (`--window`) are an addition.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from clipcli import ui
from clipcli.batch import OutputNames, run_batch
from clipcli.errors import BadInputError
from clipcli.media.frame_indices import sample_indices
from clipcli.media.images import write_png
from clipcli.media.labels import Labels, packaged_lines, read_labels
from clipcli.media.sampling import SEGMENT_CENTRE, sample_video
from clipcli.media.video import read_frames
from clipcli.media.video_probe import probe_video
from clipcli.models.actionclip import MeanFusion, TransformerFusion
from clipcli.models.clip_loader import load_clip
from clipcli.models.fusion import load_actionclip
from clipcli.models.normalize import clip_normalize
from clipcli.models.text_encoder import encode_prompts
from clipcli.models.weights import file_sha256, resolve_weights
from clipcli.render.timeline import timeline_image
from clipcli.store.cache import cache_folder, read_cache, write_cache

# utils/Text_Prompt.py, in order; prompts are built template-major: [T0 x C, T1 x C, ...].
TEMPLATES = (
    "a photo of action {}",
    "a picture of action {}",
    "Human action of {}",
    "{}, an action",
    "{} this is an action",
    "{}, a video of action",
    "Playing action of {}",
    "{}",
    "Playing a kind of action, {}",
    "Doing a kind of action, {}",
    "Look, the human is {}",
    "Can you recognize the action of {}?",
    "Video classification of {}",
    "A video of {}",
    "The man is {}",
    "The woman is {}",
)
LOGIT_SCALE = 100.0  # test.py: a fixed 100, not the model's logit_scale
DEFAULT_FRAMES = 8  # num_segments in every official config
SAMPLING = SEGMENT_CENTRE  # test.py: the centre frame of each of the T segments
# lists/*.csv of the official repository, one name per line in the official order.
LABEL_SETS = {"kinetics400": "kinetics400_labels.txt", "ucf101": "ucf101_labels.txt", "hmdb51": "hmdb51_labels.txt"}
CAMEL_CASE_SETS = frozenset({"ucf101"})
DECODE_BUDGET_BYTES = 256 * 2**20  # decoded frames held at once when classifying windows
ENCODE_BATCH = 32


# ---------------------------------------------------------------- labels


def split_camel_case(name: str) -> str:
    """'ApplyEyeMakeup' -> 'Apply Eye Makeup', 'YoYo' -> 'Yo Yo'; names with spaces are kept."""
    if " " in name:
        return name
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", name)


def load_label_set(name: str) -> list[str]:
    """A shipped label set, in the official order, ready for prompts (UCF101 split into words)."""
    if name not in LABEL_SETS:
        raise BadInputError(f"unknown label set {name!r}; shipped sets are {', '.join(LABEL_SETS)}")
    names = packaged_lines(LABEL_SETS[name])
    return [split_camel_case(n) for n in names] if name in CAMEL_CASE_SETS else list(names)


def parse_labels(spec: str) -> Labels:
    """`--labels`: a shipped set name, a label file (or official `id,name` CSV), or a comma list."""
    return read_labels(spec, {name: functools.partial(load_label_set, name) for name in LABEL_SETS})


def template_prompts(class_names: Sequence[str]) -> list[str]:
    """The 16 x C prompts, template-major, as Text_Prompt.py concatenates them."""
    return [template.format(name) for template in TEMPLATES for name in class_names]


# ---------------------------------------------------------------- text side


_TEXT_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_CACHE_VERSION = 1


def text_cache_dir() -> Path:
    return cache_folder("actionclip-text")


def _encode_templates(model, class_names: Sequence[str]) -> torch.Tensor:
    embeddings = encode_prompts(model, template_prompts(class_names)).float()
    return embeddings / embeddings.norm(dim=-1, keepdim=True)


def text_features(model, class_names: Sequence[str], *, model_id: str | None = None) -> torch.Tensor:
    """`[16*C, D]` L2-normalised fp32 prompt embeddings, template-major, on the model's device.

    Cached per model object in memory (until its weights change in place,
    as in fine-tuning) and, when `model_id` (a digest of the weights file) is
    given, on disk under `$XDG_CACHE_HOME/clipcli/`, keyed by it, the model's
    dtype and the prompts.
    """
    key = tuple(class_names)
    per_model = _TEXT_CACHE.setdefault(model, {})
    weights_version = sum(parameter._version for parameter in model.parameters())
    if key in per_model and per_model[key][0] == weights_version:
        return per_model[key][1]
    device = next(model.parameters()).device
    path = None
    if model_id is not None:
        recipe = {"version": _CACHE_VERSION, "model": model_id, "dtype": str(model.dtype), "prompts": key}
        digest = hashlib.sha256(json.dumps([recipe, TEMPLATES]).encode()).hexdigest()
        path = text_cache_dir() / f"{digest[:40]}.npy"
        shape = (len(TEMPLATES) * len(key), model.text_projection.shape[1])
        cached = read_cache(path, lambda file: _read_prompt_embeddings(file, shape))
        if cached is not None:
            per_model[key] = (weights_version, torch.from_numpy(cached).to(device))
            return per_model[key][1]
    ui.notice(f"encoding {len(TEMPLATES) * len(key)} prompts ({len(key)} labels x {len(TEMPLATES)} templates)")
    features = _encode_templates(model, key)
    if path is not None:
        array = features.cpu().numpy()
        write_cache(path, lambda tmp: np.save(tmp, array))
    per_model[key] = (weights_version, features)
    return features


def _read_prompt_embeddings(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """The cached array; ValueError unless it is finite float32 of this shape."""
    array = np.load(path, allow_pickle=False)
    if array.shape != shape or array.dtype != np.float32 or not np.isfinite(array).all():
        raise ValueError(f"{array.dtype} {array.shape} embeddings, expected finite float32 {shape}")
    return array


@torch.no_grad()
def class_probabilities(
    video_features: torch.Tensor, class_names: Sequence[str], model, *, text: torch.Tensor | None = None
) -> torch.Tensor:
    """`[B,D]` fused video features -> `[B,C]` class probabilities by ActionCLIP's test-time rule.

    `softmax_C(100 * v_hat . t_hat)` for each of the 16 templates, averaged over
    templates. `text` takes precomputed `text_features(model, class_names)`.
    """
    if text is None:
        text = text_features(model, class_names)
    if video_features.ndim != 2 or video_features.shape[1] != text.shape[1]:
        raise BadInputError(f"video features must be [B,{text.shape[1]}], got {list(video_features.shape)}")
    video = video_features.float().to(text.device)
    video = video / video.norm(dim=-1, keepdim=True)
    similarity = LOGIT_SCALE * video @ text.T
    return similarity.view(len(video), len(TEMPLATES), len(class_names)).softmax(dim=-1).mean(dim=1)


# ---------------------------------------------------------------- video side


def preprocess_frames(frames: np.ndarray | torch.Tensor, resolution: int, device: torch.device | str = "cpu"):
    """ActionCLIP's test transform on `[N,H,W,3]` uint8 RGB -> `[N,3,R,R]`, CLIP-normalised.

    GroupScale(R*256//224, bicubic) on the short side (the long side truncated
    as torchvision does), GroupCenterCrop(R), /255, CLIP mean/std. Resampling
    is torch's antialiased bicubic, rounded to 8 bits like the PIL images.
    """
    pixels = torch.as_tensor(frames).to(device).permute(0, 3, 1, 2).float()
    height, width = pixels.shape[-2:]
    scale = resolution * 256 // 224
    size = (scale, int(scale * width / height)) if height <= width else (int(scale * height / width), scale)
    if (height, width) != size:
        pixels = _resize(pixels, size)
    top = int(round((size[0] - resolution) / 2.0))
    left = int(round((size[1] - resolution) / 2.0))
    return clip_normalize(pixels[..., top : top + resolution, left : left + resolution] / 255.0)


def _resize(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    resized = F.interpolate(pixels, size=size, mode="bicubic", antialias=True, align_corners=False)
    return resized.clamp(0, 255).round()


@torch.no_grad()
def encode_frames(model, frames: np.ndarray, batch_size: int = ENCODE_BATCH) -> torch.Tensor:
    """CLIP image features `[N,D]` (model dtype) of uint8 frames after the ActionCLIP transform."""
    device = next(model.parameters()).device
    resolution = model.visual.input_resolution
    chunks = []
    for start in range(0, len(frames), batch_size):
        batch = preprocess_frames(frames[start : start + batch_size], resolution, device)
        chunks.append(model.encode_image(batch.to(model.dtype)))
    return torch.cat(chunks)


@torch.no_grad()
def classify_frames(model, fusion, frames: np.ndarray, num_frames: int, text: torch.Tensor, class_names) -> np.ndarray:
    """`[B*T,H,W,3]` frames of B clips -> `[B,C]` probabilities (numpy)."""
    features = encode_frames(model, frames)
    video = fusion(features.view(-1, num_frames, features.shape[-1]))
    return class_probabilities(video, class_names, model, text=text).cpu().numpy()


def top_predictions(probabilities: np.ndarray, labels: Sequence[str], k: int) -> list[dict]:
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [{"label": labels[i], "probability": round(float(probabilities[i]), 6)} for i in order]


# ---------------------------------------------------------------- sliding windows


def window_spans(duration: float, window: float, stride: float) -> list[tuple[float, float]]:
    """Windows of `window` seconds every `stride` seconds, covering [0, duration].

    When the last regular window stops short of the end, one more window ends
    exactly at the end; a video shorter than one window is one window.
    """
    if window <= 0 or stride <= 0:
        raise BadInputError(f"--window and --stride must be positive, got {window} and {stride}")
    if duration <= window:
        return [(0.0, float(duration))]
    count = int(math.floor((duration - window) / stride + 1e-9)) + 1
    spans = [(i * stride, i * stride + window) for i in range(count)]
    if spans[-1][1] < duration - 1e-9:
        spans.append((duration - window, duration))
    return [(round(start, 6), round(end, 6)) for start, end in spans]


def window_frame_indices(frame_count: int, duration: float, spans, num_frames: int) -> np.ndarray:
    """`[W,T]` frame indices: segment-centre sampling inside each window's frames."""
    rate = frame_count / duration if duration > 0 else 1.0
    rows = []
    for start, end in spans:
        first = min(frame_count - 1, int(round(start * rate)))
        last = min(frame_count, max(first + 1, int(round(end * rate))))
        rows.append(first + sample_indices(last - first, num_frames, SAMPLING))
    return np.stack(rows)


# ---------------------------------------------------------------- runs


def resolve_frames(requested: int | None, fusion) -> int:
    """The frame count: the checkpoint's when it records one (a different --frames is an error)."""
    fixed = getattr(fusion, "num_frames", None)
    if requested is not None and requested < 1:
        raise BadInputError(f"--frames must be at least 1, got {requested}")
    if fixed is not None and requested is not None and requested != fixed:
        raise BadInputError(f"--frames {requested}: this {fusion.kind} checkpoint was trained on {fixed} frames")
    if fixed is not None:
        return fixed
    if isinstance(fusion, TransformerFusion):
        positions = fusion.frame_position_embeddings.num_embeddings
        if (requested or DEFAULT_FRAMES) > positions:
            raise BadInputError(f"--frames {requested}: this Transf head has positions for {positions}")
    if requested is None and not isinstance(fusion, MeanFusion):
        ui.notice(
            f"the checkpoint does not record its frame count; using {DEFAULT_FRAMES} "
            "(pass --frames N with the number it was trained on: 8, 16 or 32 for the released models)"
        )
    return requested or DEFAULT_FRAMES


@dataclass
class Classifier:
    """What classifying one video needs: models, labels, their text features, the frame count."""

    model: object
    fusion: torch.nn.Module
    labels: list[str]
    text: torch.Tensor
    num_frames: int


def load_classifier(
    labels: list[str],
    *,
    model_name: str | None = None,
    checkpoint: Path | None = None,
    frames: int | None = None,
    device: str = "auto",
    trust_checkpoint: bool = False,
) -> Classifier:
    """Load CLIP (and a head), check the frame count, and get the labels' text features (cached)."""
    if checkpoint is not None and model_name is not None:
        raise BadInputError("give --model or --checkpoint, not both: an ActionCLIP checkpoint holds its own CLIP")
    if checkpoint is not None:
        model, fusion = load_actionclip(checkpoint, device, trust_checkpoint=trust_checkpoint)
        weights = Path(checkpoint)
    else:
        model, _ = load_clip(model_name or "ViT-B/32", device, trust_checkpoint=trust_checkpoint)
        fusion, weights = MeanFusion(), resolve_weights(model_name or "ViT-B/32")
    num_frames = resolve_frames(frames, fusion)
    text = text_features(model, labels, model_id=file_sha256(weights))
    return Classifier(model, fusion, labels, text, num_frames)


def classify_video(classifier: Classifier, path: Path, top_k: int, sampled=None) -> dict:
    """Whole-video prediction from T segment-centre frames."""
    if sampled is None:
        sampled = sample_video(path, classifier.num_frames, SAMPLING)
    c = classifier
    probabilities = classify_frames(c.model, c.fusion, sampled.frames, c.num_frames, c.text, c.labels)[0]
    return {
        "frames": c.num_frames,
        "duration": round(sampled.info.duration, 3),
        "frame_indices": sampled.indices.tolist(),
        "predictions": top_predictions(probabilities, c.labels, top_k),
    }


def classify_windows(classifier: Classifier, path: Path, window: float, stride: float, top_k: int):
    """Per-window predictions and the full `[W,C]` probabilities, decoding a few windows at a time."""
    info = probe_video(path)
    spans = window_spans(info.duration, window, stride)
    indices = window_frame_indices(info.frame_count, info.duration, spans, classifier.num_frames)
    frame_bytes = max(1, info.width * info.height * 3)
    per_chunk = max(1, DECODE_BUDGET_BYTES // (frame_bytes * classifier.num_frames))
    c = classifier
    chunks = []
    for start in range(0, len(spans), per_chunk):
        frames = read_frames(info, indices[start : start + per_chunk].ravel()).frames
        chunks.append(classify_frames(c.model, c.fusion, frames, c.num_frames, c.text, c.labels))
    probabilities = np.concatenate(chunks)
    windows = [
        {"start": start, "end": end, "predictions": top_predictions(row, c.labels, top_k)}
        for (start, end), row in zip(spans, probabilities, strict=True)
    ]
    result = {"frames": c.num_frames, "duration": round(info.duration, 3), "window": window, "stride": stride}
    return {**result, "windows": windows}, spans, probabilities


def output_names(out: Path) -> OutputNames:
    """NAME_actions.png in `out`, the --plot timeline."""
    return OutputNames(out, ("{}_actions.png",))


def write_timeline(path: Path, out: Path, spans, probabilities: np.ndarray, labels, duration: float) -> Path:
    """`out/<stem>_actions.png`, written atomically."""
    picture = timeline_image(spans, probabilities, labels, path.name, duration)
    [target] = output_names(out).for_input(path)
    write_png(target, picture)
    return target


def run(
    videos: Sequence[Path],
    *,
    labels: str = "kinetics400",
    frames: int | None = None,
    top_k: int = 5,
    model_name: str | None = None,
    checkpoint: Path | None = None,
    window: float | None = None,
    stride: float | None = None,
    plot: bool = False,
    out: Path = Path("."),
    device: str = "auto",
    trust_checkpoint: bool = False,
) -> list[dict]:
    """Classify many videos; one result per input (failures included)."""
    source, names = parse_labels(labels)
    if top_k < 1:
        raise BadInputError(f"--top-k must be at least 1, got {top_k}")
    if window is None and (stride is not None or plot):
        raise BadInputError("--stride and --plot need --window SECONDS")
    if window is not None:
        window_spans(window * 2, window, stride or window)  # validates both before any model loads
    if plot:
        output_names(out).check(videos)
    classifier = load_classifier(names, model_name=model_name, checkpoint=checkpoint, frames=frames,
                                 device=device, trust_checkpoint=trust_checkpoint)  # fmt: skip
    top_k = min(top_k, len(names))
    labels_info = {"labels": source, "classes": len(names)}

    if window is not None:

        def process_windows(path: Path) -> dict:
            result, spans, probabilities = classify_windows(classifier, path, window, stride or window, top_k)
            if plot:
                target = write_timeline(path, out, spans, probabilities, names, result["duration"])
                result["plot"] = str(target)
            return {**labels_info, **result}

        return run_batch(videos, process_windows, description="classify-action")

    def load(path: Path):
        return sample_video(path, classifier.num_frames, SAMPLING)

    return run_batch(
        videos,
        lambda path, clip: {**labels_info, **classify_video(classifier, path, top_k, clip)},
        description="classify-action",
        read=load,
        workers=decode_workers(len(videos)),
    )


def decode_workers(count: int) -> int:
    """Threads decoding the next videos while one is classified: none for a single video, at most 4."""
    return min(4, os.cpu_count() or 1) if count > 1 else 0
