"""L2-normalised CLIP text embeddings, cached per text in memory and on disk.

Zero-shot VQA fills one statement per candidate answer, so a question over the
1,000-odd object names costs a thousand text encodings; many of them recur
across questions and runs. Each model (by weights sha256 and dtype) gets one
cache file of texts and embeddings under `$XDG_CACHE_HOME/clipcli/text/`,
capped at `MAX_ENTRIES` (oldest dropped first). A damaged file is re-encoded
(with a notice); a folder that cannot be written only costs re-encoding.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from clipcli.models.text_encoder import encode_prompts
from clipcli.store.cache import cache_folder, read_cache, write_cache

MAX_ENTRIES = 50_000
_MEMORY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def cache_file(model_id: str, model) -> Path:
    return cache_folder("text") / f"{model_id[:32]}-{str(model.dtype).removeprefix('torch.')}.npz"


def _read_table(path: Path, width: int) -> dict[str, np.ndarray]:
    """Text -> embedding from a cache file; ValueError unless it holds one finite `width`-d row per text."""
    with np.load(path, allow_pickle=False) as data:
        texts, embeddings = data["texts"], data["embeddings"]
    if texts.ndim != 1 or embeddings.shape != (len(texts), width) or not np.isfinite(embeddings).all():
        raise ValueError(f"{embeddings.shape} embeddings for {texts.shape} texts, expected {width}-d finite rows")
    return dict(zip(texts.tolist(), embeddings.astype(np.float32), strict=True))


def _write(path: Path, table: dict[str, np.ndarray]) -> None:
    items = list(table.items())[-MAX_ENTRIES:]
    texts, embeddings = np.array([text for text, _ in items]), np.stack([row for _, row in items])
    write_cache(path, lambda tmp: np.savez(tmp, texts=texts, embeddings=embeddings))


def _encode(model, texts: list[str]) -> np.ndarray:
    embeddings = encode_prompts(model, texts).float()
    return (embeddings / embeddings.norm(dim=-1, keepdim=True)).cpu().numpy()


def text_embeddings(model, texts: Sequence[str], model_id: str | None = None) -> torch.Tensor:
    """`[N, D]` normalised float32 embeddings of `texts`, in order, on the model's device.

    Without `model_id` (a digest of the weights) only the in-memory cache is used.
    """
    memory = _MEMORY.setdefault(model, {})
    missing = [text for text in dict.fromkeys(texts) if text not in memory]
    if missing and model_id is not None:
        path = cache_file(model_id, model)
        stored = read_cache(path, lambda file: _read_table(file, model.text_projection.shape[1])) or {}
        memory.update({text: stored[text] for text in missing if text in stored})
        new = [text for text in missing if text not in memory]
        if new:
            memory.update(zip(new, _encode(model, new), strict=True))
            stored.update({text: memory[text] for text in new})
            _write(path, stored)
    elif missing:
        memory.update(zip(missing, _encode(model, missing), strict=True))
    device = next(model.parameters()).device
    return torch.from_numpy(np.stack([memory[text] for text in texts])).to(device)
