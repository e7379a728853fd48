"""AudioCLIP audio tagging: zero-shot labels for sound files, and audio-to-image/text search.

The official input contract (docs/methods/audio.md): mono at 44.1 kHz on the int16
scale (the ESC-50 loader's `librosa.load(...) * 32768`). Clips are cut into windows
(5 s by default, as ESC-50 clips are); a clip shorter than a window is centre-padded
with its edge values like the official `RandomPadding(train=False)`. Zero-shot scoring
is the official protocol: bare label text through the template `'{}'`, then
`softmax(clamp(exp(logit_scale_at), 1, 100) * cos)`, or `sigmoid(cos - 0.5)` per label
for multi-label tagging. The clip-level tag scores the renormalised mean of the
windows' normalised embeddings; each window is also scored on its own (the timeline).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from clip.clip import _transform
from PIL import Image

from clipcli import ui
from clipcli.batch import expand_inputs
from clipcli.defaults import AUDIOCLIP_CHECKPOINT
from clipcli.errors import BadInputError, ParameterError
from clipcli.media.audio import load_audio
from clipcli.media.images import IMAGE_EXTENSIONS, load_image
from clipcli.media.labels import Labels, packaged_lines, read_labels, read_lines
from clipcli.models.audio_tower import SAMPLE_RATE
from clipcli.models.audioclip import AudioCLIP, load_audioclip
from clipcli.models.prompts import text_classifier
from clipcli.models.weights import file_sha256, resolve_weights
from clipcli.runner import Executor, Job, Report, Result, run_job
from clipcli.store.cache import cache_folder, read_cache, write_cache

__all__ = ["AudioCLIP", "load_audioclip", "run", "zero_shot_scores", "split_windows", "pad_to_window"]

LABEL_SETS = {"esc50": "esc50_labels.txt", "us8k": "us8k_labels.txt"}
DEFAULT_CHECKPOINT = AUDIOCLIP_CHECKPOINT
DEFAULT_TEMPLATE = "{}"  # the official zero-shot text: the bare label
WINDOW_SECONDS = 5.0  # ESC-50 clip length, the official evaluation's 220500 samples
INT16_SCALE = 32768.0  # the ESC-50 loader's factor from librosa's [-1, 1]
MULTILABEL_THRESHOLD = 0.5  # official multi-label rule: sigmoid(cos - 0.5)
MIN_WINDOW_SECONDS = 0.1


# ---------------------------------------------------------------- labels and texts


def builtin_labels(name: str) -> list[str]:
    """A shipped label set in class-index order, underscores already turned into spaces as officially."""
    return list(packaged_lines(LABEL_SETS[name]))


def parse_labels(spec: str) -> Labels:
    """`esc50`, `us8k`, a label file, `"a,b,c"`, or one bare label (for --multilabel)."""
    return read_labels(spec, {name: functools.partial(builtin_labels, name) for name in LABEL_SETS}, minimum=1)


def check_template(template: str) -> str:
    if template.count("{}") != 1:
        raise ParameterError("template", f"{template!r}: needs exactly one {{}} for the label")
    return template


def encode_texts(model: AudioCLIP, texts: Sequence[str], source: str) -> torch.Tensor:
    """Normalised text embeddings `[N, D]` (fp32, on the CPU with the audio features), cached per model and texts.

    A text too long for CLIP is a bad input of `source`, the file that holds it.
    """
    try:
        return _text_features(model, texts)
    except BadInputError as err:
        raise BadInputError(str(err), source) from None


def label_features(model: AudioCLIP, labels: Sequence[str], template: str) -> torch.Tensor:
    """The labels' embeddings through `template`, as `encode_texts`; a label too long for CLIP is a bad `labels`."""
    try:
        return _text_features(model, [template.format(label) for label in labels])
    except BadInputError as err:
        raise ParameterError("labels", f"has a {err}") from None


def _text_features(model: AudioCLIP, texts: Sequence[str]) -> torch.Tensor:
    return text_classifier(model.clip, [[text] for text in texts]).T.float().cpu()


# ---------------------------------------------------------------- audio


def load_waveform(path: Path, raw_scale: bool = False) -> np.ndarray:
    """Mono float32 at 44.1 kHz on the int16 scale (or in [-1, 1] with `raw_scale`)."""
    wave = load_audio(path, SAMPLE_RATE)
    return wave if raw_scale else wave * np.float32(INT16_SCALE)


def window_length(seconds: float) -> int:
    if not seconds >= MIN_WINDOW_SECONDS:
        raise ParameterError("window", f"{seconds}: must be at least {MIN_WINDOW_SECONDS} s")
    return round(seconds * SAMPLE_RATE)


def pad_to_window(wave: np.ndarray, length: int) -> np.ndarray:
    """Centre a short clip in `length` samples, filled with its first/last sample (RandomPadding, train=False)."""
    if wave.shape[-1] >= length:
        return wave
    left = int(round(0.5 * (length - wave.shape[-1])))  # Python rounding, half to even, as officially
    right = length - left - wave.shape[-1]
    return np.concatenate([np.full(left, wave[0], wave.dtype), wave, np.full(right, wave[-1], wave.dtype)])


def window_starts(num_samples: int, length: int) -> list[int]:
    """Starts of the fewest full windows that cover the clip, spread evenly from its start to its end."""
    if num_samples <= length:
        return [0]
    count = -(-num_samples // length)
    return [round(start) for start in np.linspace(0, num_samples - length, count)]


def split_windows(wave: np.ndarray, length: int) -> tuple[np.ndarray, list[int]]:
    """`[T]` -> windows `[n, length]` and their start samples (short clips centre-padded first)."""
    wave = pad_to_window(wave, length)
    starts = window_starts(wave.shape[-1], length)
    return np.stack([wave[start : start + length] for start in starts]), starts


# ---------------------------------------------------------------- scoring


def zero_shot_scores(
    audio_features: torch.Tensor, text_features: torch.Tensor, logit_scale_at: torch.Tensor, multilabel: bool = False
) -> torch.Tensor:
    """`[N, D]` x `[C, D]` -> `[N, C]` per the official protocol (features need not be normalised).

    Single-label: softmax over labels of `clamp(exp(logit_scale_at), 1, 100) * cos`.
    Multi-label: `sigmoid(cos - 0.5)`, independent per label.
    """
    cos = F.normalize(audio_features.float(), dim=-1) @ F.normalize(text_features.float(), dim=-1).T
    if multilabel:
        return torch.sigmoid(cos - MULTILABEL_THRESHOLD)
    return torch.softmax(AudioCLIP.scale(logit_scale_at) * cos, dim=-1)


def clip_embedding(window_features: torch.Tensor) -> torch.Tensor:
    """The clip's direction: mean of the normalised window embeddings, renormalised."""
    return F.normalize(F.normalize(window_features.float(), dim=-1).mean(dim=0), dim=-1)


def top_entries(scores: torch.Tensor, names: Sequence[str], k: int, key: str = "label") -> list[dict]:
    """The `k` best `{key: name, "score": value}`, best first."""
    values, indices = scores.topk(min(k, scores.shape[-1]))
    return [
        {key: names[i], "score": round(float(v), 6)} for v, i in zip(values.tolist(), indices.tolist(), strict=True)
    ]


def top_matches(
    query: torch.Tensor, candidates: torch.Tensor, log_scale: torch.Tensor, names: Sequence[str], k: int, key: str
) -> list[dict]:
    """Candidates ranked by `clamp(exp(s), 1, 100) * cos` with the query, as the official logits."""
    cos = F.normalize(candidates.float(), dim=-1) @ F.normalize(query.float(), dim=-1)
    values, indices = (AudioCLIP.scale(log_scale) * cos).topk(min(k, len(names)))
    return [
        {key: names[i], "score": round(float(v), 6), "cosine": round(float(cos[i]), 6)}
        for v, i in zip(values.tolist(), indices.tolist(), strict=True)
    ]


# ---------------------------------------------------------------- images


def _cache_file(model_path: Path, model: AudioCLIP) -> Path:
    dtype = str(model.clip.dtype).removeprefix("torch.")
    return cache_folder("audio-tag") / f"images-{file_sha256(model_path)[:16]}-{dtype}.npz"


class ImageFeatureCache:
    """Image embeddings on disk, keyed by absolute path, size and mtime, per checkpoint and dtype.

    A damaged file is recomputed (with a notice); a read-only one only costs recomputing.
    """

    def __init__(self, file: Path):
        self.file = file
        self.entries: dict[str, tuple[int, int, np.ndarray]] = read_cache(file, _read_image_entries) or {}
        self.changed = False

    @staticmethod
    def _key(path: Path) -> tuple[str, int, int]:
        stat = path.stat()
        return str(path.resolve()), stat.st_size, stat.st_mtime_ns

    def get(self, path: Path) -> np.ndarray | None:
        key, size, mtime = self._key(path)
        entry = self.entries.get(key)
        return entry[2] if entry and entry[:2] == (size, mtime) else None

    def put(self, path: Path, features: np.ndarray) -> None:
        key, size, mtime = self._key(path)
        self.entries[key] = (size, mtime, features.astype(np.float32))
        self.changed = True

    def save(self) -> None:
        if not self.changed:
            return
        paths = np.array(list(self.entries), dtype=str)
        stamps = np.array([entry[:2] for entry in self.entries.values()], dtype=np.int64)
        features = np.stack([entry[2] for entry in self.entries.values()])
        write_cache(self.file, lambda tmp: np.savez(tmp, paths=paths, stamps=stamps, features=features))


def _read_image_entries(file: Path) -> dict[str, tuple[int, int, np.ndarray]]:
    """Path -> (size, mtime, embedding) from a cache file; ValueError unless its arrays agree."""
    with np.load(file, allow_pickle=False) as data:
        paths, stamps, features = data["paths"], data["stamps"], data["features"]
    if paths.ndim != 1 or stamps.shape != (len(paths), 2) or features.ndim != 2 or len(features) != len(paths):
        raise ValueError(f"{paths.shape} paths, {stamps.shape} stamps and {features.shape} embeddings do not agree")
    return {
        str(path): (int(size), int(mtime), row)
        for path, (size, mtime), row in zip(paths, stamps, features, strict=True)
    }


@torch.inference_mode()
def image_features(
    model: AudioCLIP, paths: Sequence[Path], cache: ImageFeatureCache, batch_size: int = 32
) -> tuple[list[Path], torch.Tensor, list[Result]]:
    """Embeddings of the readable images (cached on disk), and a failure record per unreadable one."""
    preprocess = _transform(model.visual.input_resolution)
    rows: dict[Path, np.ndarray] = {}
    failed: list[Result] = []
    todo: list[tuple[Path, torch.Tensor]] = []
    for path in paths:
        cached = cache.get(path)
        if cached is not None:
            rows[path] = cached
            continue
        try:
            todo.append((path, preprocess(Image.fromarray(load_image(path)))))
        except BadInputError as err:
            failed.append(Result.failed(path, err))
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        embedded = model.encode_image(torch.stack([pixels for _, pixels in chunk])).float().cpu().numpy()
        for (path, _), row in zip(chunk, embedded, strict=True):
            rows[path] = row
            cache.put(path, row)
    cache.save()
    kept = [path for path in paths if path in rows]
    features = torch.from_numpy(np.stack([rows[path] for path in kept])) if kept else torch.empty(0)
    return kept, features, failed


# ---------------------------------------------------------------- the batch


@dataclass
class DecodedClip:
    """One input, decoded: its (centre-padded) waveform and where its windows start."""

    wave: np.ndarray
    starts: list[int]
    length: int
    num_samples: int
    silent: bool

    def windows(self) -> list[np.ndarray]:
        return [self.wave[start : start + self.length] for start in self.starts]


def decode_clip(path: Path, length: int, raw_scale: bool = False) -> DecodedClip:
    """The file as the model reads it: padded to one window at least, with the starts of its windows."""
    wave = load_waveform(path, raw_scale)
    padded = pad_to_window(wave, length)
    starts = window_starts(padded.shape[-1], length)
    return DecodedClip(padded, starts, length, wave.shape[-1], not bool(np.any(wave)))


@torch.inference_mode()
def embed_clips(model: AudioCLIP, clips: Sequence[DecodedClip], batch_size: int) -> list[torch.Tensor]:
    """Audio embeddings `[n_windows, D]` per clip, with windows of several clips batched together."""
    views = [window for clip in clips for window in clip.windows()]
    outputs = []
    for start in range(0, len(views), batch_size):
        batch = torch.from_numpy(np.stack(views[start : start + batch_size]))
        outputs.append(model.encode_audio(batch).float().cpu())
    features = torch.cat(outputs)
    return list(features.split([len(clip.starts) for clip in clips]))


@dataclass
class Targets:
    """What every clip is scored against."""

    labels: list[str]
    label_features: torch.Tensor
    multilabel: bool
    top_k: int
    images: list[Path]
    image_features: torch.Tensor | None
    texts: list[str]
    text_features: torch.Tensor | None


def describe_clip(model: AudioCLIP, clip: DecodedClip, features: torch.Tensor, targets: Targets) -> dict:
    """The result record of one clip: tags, per-window timeline, ranked images and texts."""
    scale_at, scale_ai = model.logit_scale_at.detach().cpu(), model.logit_scale_ai.detach().cpu()
    overall = clip_embedding(features)
    per_window = zero_shot_scores(features, targets.label_features, scale_at, targets.multilabel)
    result = {
        "duration_s": round(clip.num_samples / SAMPLE_RATE, 4),
        "silent": clip.silent,
        "tags": top_entries(
            zero_shot_scores(overall[None], targets.label_features, scale_at, targets.multilabel)[0],
            targets.labels,
            targets.top_k,
        ),
        "windows": [
            {
                "start_s": round(start / SAMPLE_RATE, 4),
                "end_s": round(min(start + clip.length, clip.num_samples) / SAMPLE_RATE, 4),
                "tags": top_entries(scores, targets.labels, targets.top_k),
            }
            for start, scores in zip(clip.starts, per_window, strict=True)
        ],
    }
    if targets.image_features is not None:
        names = [str(path) for path in targets.images]
        result["images"] = top_matches(overall, targets.image_features, scale_ai, names, targets.top_k, "image")
    if targets.text_features is not None:
        result["texts"] = top_matches(overall, targets.text_features, scale_at, targets.texts, targets.top_k, "text")
    return result


@dataclass
class AudioTagJob(Job):
    """Tags, and ranked images and captions, for audio files; nothing is written.

    The targets come embedded (the driver embeds them once), so a worker only
    embeds audio: up to `batch_size` decoded files at a time, their windows
    through the model `batch_size` at a time.
    """

    model_path: Path
    targets: Targets
    window_samples: int
    raw_scale: bool = False
    batch_size: int = 16
    device: str = "auto"
    trust_checkpoint: bool = False
    name = "audio-tag"
    read_workers = 2

    def setup(self) -> None:
        self._model = load_audioclip(self.model_path, self.device, trust_checkpoint=self.trust_checkpoint)

    def read(self, path: Path) -> DecodedClip:
        return decode_clip(path, self.window_samples, self.raw_scale)

    def compute_batch(self, items: Sequence[tuple[Path, DecodedClip]]) -> list[dict]:
        clips = [clip for _, clip in items]
        features = embed_clips(self._model, clips, self.batch_size) if clips else []
        return [
            describe_clip(self._model, clip, clip_features, self.targets)
            for clip, clip_features in zip(clips, features, strict=True)
        ]

    def write(self, path: Path, outcome: dict) -> dict:
        if outcome["silent"]:
            ui.notice(f"{path}: silent (all samples are zero); its tags mean nothing")
        return outcome


def run(
    inputs: Sequence[Path],
    *,
    labels: str = "esc50",
    checkpoint: str = DEFAULT_CHECKPOINT,
    top_k: int = 5,
    multilabel: bool = False,
    window: float = WINDOW_SECONDS,
    template: str = DEFAULT_TEMPLATE,
    images: Path | None = None,
    texts: Path | None = None,
    raw_scale: bool = False,
    batch_size: int = 16,
    device: str = "auto",
    trust_checkpoint: bool = False,
    executor: Executor | None = None,
) -> Report:
    """Tag many audio files; one result per input (failures included), the settings in the summary.

    The summary's `image_failures` are the rows of the `images` folder's unreadable images.
    """
    label_set, label_list = parse_labels(labels)
    check_template(template)
    length = window_length(window)
    if top_k < 1:
        raise ParameterError("top_k", f"{top_k}: must be at least 1")
    if batch_size < 1:
        raise ParameterError("batch_size", f"{batch_size}: must be at least 1")
    if not multilabel and len(label_list) < 2:
        raise ParameterError("labels", "needs at least two labels for a softmax (or use --multilabel)")
    image_paths = _image_folder(images) if images is not None else []
    caption_list = read_lines(texts, "texts") if texts is not None else []

    model_path = resolve_weights(checkpoint).resolve()
    model = load_audioclip(model_path, device, trust_checkpoint=trust_checkpoint)
    image_failures: list[Result] = []
    kept_images: list[Path] = []
    features_of_images = None
    if image_paths:
        cache = ImageFeatureCache(_cache_file(model_path, model))
        kept_images, features_of_images, image_failures = image_features(model, image_paths, cache, batch_size)
        if not kept_images:
            raise BadInputError("no readable images", images)
    targets = Targets(
        labels=label_list,
        label_features=label_features(model, label_list, template),
        multilabel=multilabel,
        top_k=top_k,
        images=kept_images,
        image_features=features_of_images,
        texts=caption_list,
        text_features=encode_texts(model, caption_list, str(texts)) if caption_list else None,
    )
    job = AudioTagJob(
        model_path,
        targets,
        length,
        raw_scale=raw_scale,
        batch_size=batch_size,
        device=device,
        trust_checkpoint=trust_checkpoint,
    )
    report = run_job(job, inputs, executor=executor)
    report.summary = {
        "checkpoint": checkpoint,
        "labels": label_set,
        "num_labels": len(label_list),
        "template": template,
        "multilabel": multilabel,
        "window_s": window,
        "raw_scale": raw_scale,
        "image_failures": [failure.row() for failure in image_failures],
    }
    return report


def _image_folder(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ParameterError("images", f"needs a folder of images, not {folder}")
    try:
        return expand_inputs([folder], IMAGE_EXTENSIONS)
    except BadInputError:
        raise BadInputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in the folder", folder) from None
