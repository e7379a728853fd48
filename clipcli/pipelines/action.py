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

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from clipcli import ui
from clipcli.batch import OutputNames
from clipcli.errors import ParameterError
from clipcli.media.decoders import CPU_DECODERS, VIDEO, Decoder, select_decoder
from clipcli.media.frame_indices import sample_indices
from clipcli.media.images import write_png
from clipcli.media.labels import Labels
from clipcli.media.sampling import SEGMENT_CENTRE, sample_video
from clipcli.media.video import SampledFrames, read_frames
from clipcli.media.video_probe import VideoInfo, probe_video
from clipcli.models.actionclip import MeanFusion, TransformerFusion
from clipcli.models.clip_loader import load_clip
from clipcli.models.fusion import load_actionclip
from clipcli.models.normalize import clip_normalize
from clipcli.models.weights import file_sha256, resolve_weights
from clipcli.pipelines.action_text import TEMPLATES as TEMPLATES  # the public API names it here
from clipcli.pipelines.action_text import class_probabilities, parse_labels, text_features
from clipcli.render.timeline import timeline_image
from clipcli.runner import Executor, Job, Report, run_job

DEFAULT_FRAMES = 8  # num_segments in every official config
DEFAULT_MODEL = "ViT-B/32"  # zero-shot
SAMPLING = SEGMENT_CENTRE  # test.py: the centre frame of each of the T segments
DECODE_BUDGET_BYTES = 256 * 2**20  # decoded frames held at once when classifying windows
READ_AHEAD_BYTES = 64 * 2**20  # decoded frames of the first windows, per video read ahead
ENCODE_BATCH = 32
VIDEOS_PER_BATCH = 4  # whole videos classified together: 8 frames each fill one ENCODE_BATCH


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
def encode_clips(model, clips: Sequence[np.ndarray]) -> torch.Tensor:
    """CLIP image features `[N,D]` of the frames of several clips, which may differ in frame size.

    Each clip is transformed on its own (the transform needs one frame size),
    then the frames of all clips share the image encoder's batches.
    """
    device = next(model.parameters()).device
    resolution = model.visual.input_resolution
    pixels = torch.cat([preprocess_frames(frames, resolution, device) for frames in clips])
    return torch.cat([model.encode_image(part.to(model.dtype)) for part in pixels.split(ENCODE_BATCH)])


@torch.no_grad()
def classify_frames(model, fusion, frames: np.ndarray, num_frames: int, text: torch.Tensor, class_names) -> np.ndarray:
    """`[B*T,H,W,3]` frames of B clips -> `[B,C]` probabilities (numpy)."""
    return _fused_probabilities(model, fusion, encode_frames(model, frames), num_frames, text, class_names)


def classify_clips(classifier: Classifier, clips: Sequence[np.ndarray]) -> np.ndarray:
    """`[B,C]` probabilities of B clips of `num_frames` frames each, classified in one batch."""
    c = classifier
    return _fused_probabilities(c.model, c.fusion, encode_clips(c.model, clips), c.num_frames, c.text, c.labels)


@torch.no_grad()
def _fused_probabilities(model, fusion, features: torch.Tensor, num_frames: int, text, class_names) -> np.ndarray:
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
    for parameter, seconds in (("window", window), ("stride", stride)):
        if seconds <= 0:
            raise ParameterError(parameter, f"must be positive, got {seconds}")
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
        raise ParameterError("frames", f"must be at least 1, got {requested}")
    if fixed is not None and requested is not None and requested != fixed:
        raise ParameterError("frames", f"{requested}: this {fusion.kind} checkpoint was trained on {fixed} frames")
    if fixed is not None:
        return fixed
    if isinstance(fusion, TransformerFusion):
        positions = fusion.frame_position_embeddings.num_embeddings
        if (requested or DEFAULT_FRAMES) > positions:
            raise ParameterError("frames", f"{requested}: this Transf head has positions for {positions}")
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
        raise ParameterError("checkpoint", "holds its own CLIP: give a model or a checkpoint, not both")
    if checkpoint is not None:
        model, fusion = load_actionclip(checkpoint, device, trust_checkpoint=trust_checkpoint)
        weights = Path(checkpoint)
    else:
        model, _ = load_clip(model_name or DEFAULT_MODEL, device, trust_checkpoint=trust_checkpoint)
        fusion, weights = MeanFusion(), resolve_weights(model_name or DEFAULT_MODEL)
    num_frames = resolve_frames(frames, fusion)
    text = text_features(model, labels, model_id=file_sha256(weights))
    return Classifier(model, fusion, labels, text, num_frames)


def video_result(classifier: Classifier, sampled: SampledFrames, probabilities: np.ndarray, top_k: int) -> dict:
    """The whole-video prediction of one clip's `[C]` probabilities, with how its frames were sampled."""
    return {
        "frames": classifier.num_frames,
        "duration": round(sampled.info.duration, 3),
        "frame_indices": sampled.indices.tolist(),
        "predictions": top_predictions(probabilities, classifier.labels, top_k),
    }


def classify_video(classifier: Classifier, path: Path, top_k: int, sampled: SampledFrames | None = None) -> dict:
    """Whole-video prediction from T segment-centre frames."""
    if sampled is None:
        sampled = sample_video(path, classifier.num_frames, SAMPLING)
    return video_result(classifier, sampled, classify_clips(classifier, [sampled.frames])[0], top_k)


@dataclass
class WindowedVideo:
    """A video's sliding windows and their frame indices, with the first windows' frames decoded ahead."""

    info: VideoInfo
    spans: list[tuple[float, float]]
    indices: np.ndarray  # [W,T] frame indices of each window
    first_frames: np.ndarray  # [K*T,H,W,3] frames of the first K windows
    decoder: Decoder | None = None

    def frame_chunks(self) -> Iterator[np.ndarray]:
        """Frames of consecutive windows: those decoded ahead, then a few windows at a time, within budget."""
        yield self.first_frames
        ahead = len(self.first_frames) // self.indices.shape[1]
        per_chunk = windows_within(self.info, self.indices.shape[1], DECODE_BUDGET_BYTES)
        for start in range(ahead, len(self.spans), per_chunk):
            yield read_frames(self.info, self.indices[start : start + per_chunk].ravel(), decoder=self.decoder).frames


def windows_within(info: VideoInfo, num_frames: int, budget: int) -> int:
    """How many windows' decoded frames fit in `budget` bytes (at least one)."""
    frame_bytes = max(1, info.width * info.height * 3)
    return max(1, budget // (frame_bytes * num_frames))


def read_windows(
    path: Path, window: float, stride: float, num_frames: int, decoder: Decoder | None = None
) -> WindowedVideo:
    """Probe a video, cut it into windows and decode the first windows' frames (up to `READ_AHEAD_BYTES`)."""
    info = probe_video(path)
    spans = window_spans(info.duration, window, stride)
    indices = window_frame_indices(info.frame_count, info.duration, spans, num_frames)
    ahead = windows_within(info, num_frames, READ_AHEAD_BYTES)
    first = read_frames(info, indices[:ahead].ravel(), decoder=decoder).frames
    return WindowedVideo(info, spans, indices, first, decoder)


def classify_windows(classifier: Classifier, video: WindowedVideo) -> np.ndarray:
    """`[W,C]` probabilities of each window, decoding the windows not yet read a few at a time."""
    c = classifier
    chunks = [
        classify_frames(c.model, c.fusion, frames, c.num_frames, c.text, c.labels) for frames in video.frame_chunks()
    ]
    return np.concatenate(chunks)


def output_names(out: Path) -> OutputNames:
    """NAME_actions.png in `out`, the --plot timeline."""
    return OutputNames(out, ("{}_actions.png",))


def write_timeline(path: Path, out: Path, spans, probabilities: np.ndarray, labels, duration: float) -> Path:
    """`out/<stem>_actions.png`, written atomically."""
    picture = timeline_image(spans, probabilities, labels, path.name, duration)
    [target] = output_names(out).for_input(path)
    write_png(target, picture)
    return target


@dataclass
class ClassifierJob(Job):
    """What both kinds of classify-action run share: the classifier's settings, its loading, the label facts."""

    labels: Labels
    top_k: int = 5
    frames: int | None = None
    model_name: str | None = None
    checkpoint: Path | None = None
    device: str = "auto"
    trust_checkpoint: bool = False
    read_workers: int = 0
    decoder: Decoder = CPU_DECODERS[VIDEO]
    name = "classify-action"

    def setup(self) -> None:
        self._classifier = load_classifier(
            self.labels.names,
            model_name=self.model_name,
            checkpoint=self.checkpoint,
            frames=self.frames,
            device=self.device,
            trust_checkpoint=self.trust_checkpoint,
        )

    def labelled(self, data: dict) -> dict:
        """A result's data after the label set's name and size, as every row of the command starts."""
        return {"labels": self.labels.source, "classes": len(self.labels.names), **data}

    def summary(self) -> dict:
        model = str(self.checkpoint) if self.checkpoint is not None else self.model_name or DEFAULT_MODEL
        return {"labels": self.labels.source, "classes": len(self.labels.names), "model": model}


@dataclass
class ActionJob(ClassifierJob):
    """Whole-video predictions: T frames decoded on read-ahead threads, several videos per model batch."""

    batch_size = VIDEOS_PER_BATCH

    def read(self, path: Path) -> SampledFrames:
        return sample_video(path, self._classifier.num_frames, SAMPLING, decoder=self.decoder)

    def compute_batch(self, items: Sequence[tuple[Path, SampledFrames]]) -> list[dict]:
        if not items:
            return []
        probabilities = classify_clips(self._classifier, [sampled.frames for _, sampled in items])
        return [
            video_result(self._classifier, sampled, row, self.top_k)
            for (_, sampled), row in zip(items, probabilities, strict=True)
        ]

    def write(self, path: Path, outcome: dict) -> dict:
        return self.labelled(outcome)


@dataclass
class ActionWindowsJob(ClassifierJob):
    """Sliding-window timelines: windows classified a chunk at a time, the --plot pictures written by the driver."""

    window: float = 1.0
    stride: float = 1.0
    plot: bool = False
    out: Path = Path(".")

    def read(self, path: Path) -> WindowedVideo:
        return read_windows(path, self.window, self.stride, self._classifier.num_frames, self.decoder)

    def compute(self, path: Path, value: WindowedVideo) -> tuple[dict, np.ndarray]:
        """The result's data and the `[W,C]` probabilities the timeline is drawn from."""
        probabilities = classify_windows(self._classifier, value)
        windows = [
            {"start": start, "end": end, "predictions": top_predictions(row, self.labels.names, self.top_k)}
            for (start, end), row in zip(value.spans, probabilities, strict=True)
        ]
        result = {"frames": self._classifier.num_frames, "duration": round(value.info.duration, 3)}
        return {**result, "window": self.window, "stride": self.stride, "windows": windows}, probabilities

    def write(self, path: Path, outcome: tuple[dict, np.ndarray]) -> dict:
        data, probabilities = outcome
        if self.plot:
            spans = [(window["start"], window["end"]) for window in data["windows"]]
            target = write_timeline(path, self.out, spans, probabilities, self.labels.names, data["duration"])
            data = {**data, "plot": str(target)}
        return self.labelled(data)


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
    executor: Executor | None = None,
    decode: str = "auto",
) -> Report:
    """Classify many videos, whole or in sliding windows; one result per input (failures included)."""
    parsed = parse_labels(labels)
    if top_k < 1:
        raise ParameterError("top_k", f"must be at least 1, got {top_k}")
    decoder = select_decoder(decode, device, VIDEO)
    settings: dict[str, Any] = {
        "labels": parsed,
        "top_k": min(top_k, len(parsed.names)),
        "frames": frames,
        "model_name": model_name,
        "checkpoint": checkpoint,
        "device": device,
        "trust_checkpoint": trust_checkpoint,
        "read_workers": decode_workers(len(videos)),
        "decoder": decoder,
    }
    job: ClassifierJob
    if window is None:
        if stride is not None or plot:
            raise ParameterError("window", "is needed for a stride or a plot (they belong to sliding windows)")
        job = ActionJob(**settings)
    else:
        stride = window if stride is None else stride
        window_spans(window * 2, window, stride)  # validates both before any model loads
        if plot:
            output_names(out).check(videos)
        job = ActionWindowsJob(**settings, window=window, stride=stride, plot=plot, out=out)
    return run_job(job, videos, executor=executor)


def decode_workers(count: int) -> int:
    """Threads decoding the next videos while one is classified: none for a single video, at most 4."""
    return min(4, os.cpu_count() or 1) if count > 1 else 0
