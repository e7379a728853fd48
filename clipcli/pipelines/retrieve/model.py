"""The retrieval model: a CLIP tower, a CLIP4Clip head, and CLIP4Clip's text input.

Queries are tokenised as CLIP4Clip does (`max_words` 32: start token, at most
30 BPE tokens, end token) and embedded once per process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from clip.model import CLIP
from clip.simple_tokenizer import SimpleTokenizer

from clipcli.models import load_clip
from clipcli.models.clip4clip import MeanPHead, load_clip4clip
from clipcli.models.device import resolve_device
from clipcli.models.frames import preprocess_frames
from clipcli.models.weights import file_sha256, resolve_weights

MAX_WORDS = 32  # CLIP4Clip's --max_words for MSR-VTT, MSVD and LSMDC


@cache
def _tokenizer() -> SimpleTokenizer:
    return SimpleTokenizer()


def tokenize(texts: Sequence[str], max_words: int = MAX_WORDS, context_length: int = 77) -> torch.Tensor:
    """CLIP4Clip's text input: SOT + BPE, cut to `max_words - 1` tokens, then EOT, zero-padded.

    CLIP's text tower is causal and pools at EOT, so padding to 77 instead of
    `max_words` gives CLIP4Clip's embedding exactly.
    """
    tokenizer = _tokenizer()
    start, end = tokenizer.encoder["<|startoftext|>"], tokenizer.encoder["<|endoftext|>"]
    tokens = torch.zeros(len(texts), context_length, dtype=torch.long)
    for row, text in enumerate(texts):
        ids = ([start] + tokenizer.encode(text))[: max_words - 1] + [end]
        tokens[row, : len(ids)] = torch.tensor(ids)
    return tokens


@dataclass(frozen=True)
class RetrieverSource:
    """How a `Retriever` was loaded, so another process (a Ray actor) can load the same one."""

    model_name: str = "ViT-B/32"
    checkpoint: Path | None = None
    device: str = "auto"
    trust_checkpoint: bool = False

    def load(self) -> Retriever:
        return Retriever.load(self.model_name, self.checkpoint, self.device, trust_checkpoint=self.trust_checkpoint)


@dataclass
class Retriever:
    """A CLIP tower and a CLIP4Clip head, and what identifies them in an index."""

    model: CLIP
    head: MeanPHead
    tower: str  # "sha256:..." of the weights file the embeddings come from
    device: torch.device
    max_words: int = MAX_WORDS
    _texts: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    source: RetrieverSource | None = field(default=None, repr=False)  # None for one built by hand

    @classmethod
    def load(
        cls,
        model_name: str = "ViT-B/32",
        checkpoint: str | Path | None = None,
        device: str | torch.device = "auto",
        *,
        trust_checkpoint: bool = False,
    ) -> Retriever:
        """Zero-shot meanP on a CLIP model, or a CLIP4Clip checkpoint's tower and head."""
        torch_device = resolve_device(device)
        source = RetrieverSource(
            model_name, None if checkpoint is None else Path(checkpoint), str(device), trust_checkpoint
        )
        if checkpoint is not None:
            model, head = load_clip4clip(checkpoint, torch_device, trust_checkpoint=trust_checkpoint)
            return cls(model, head, f"sha256:{file_sha256(checkpoint)}", torch_device, source=source)
        path = resolve_weights(model_name)
        model, _ = load_clip(path, torch_device, trust_checkpoint=trust_checkpoint)
        return cls(model, MeanPHead().to(torch_device), f"sha256:{file_sha256(path)}", torch_device, source=source)

    @property
    def resolution(self) -> int:
        return self.model.visual.input_resolution

    def identity(self, frames: int, sampling: str) -> dict:
        """What an index built by this retriever with these settings must match."""
        return {"tower": self.tower, "head": self.head.kind, "frames": frames, "sampling": sampling}

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """`[Q, D]` normalised float32 text embeddings (cached per text)."""
        missing = list(dict.fromkeys(text for text in texts if text not in self._texts))
        for start in range(0, len(missing), batch_size):
            chunk = missing[start : start + batch_size]
            embeddings = F.normalize(
                self.model.encode_text(tokenize(chunk, self.max_words).to(self.device)).float(), dim=-1
            )
            self._texts.update(zip(chunk, embeddings, strict=True))
        return torch.stack([self._texts[text] for text in texts])

    @torch.no_grad()
    def encode_image(self, rgb: np.ndarray) -> torch.Tensor:
        """`[1, D]` normalised embedding of a query image (CLIP preprocessing)."""
        pixels = preprocess_frames(rgb[None], self.resolution, self.device).to(self.model.dtype)
        return F.normalize(self.model.encode_image(pixels).float(), dim=-1)

    @torch.no_grad()
    def encode_frames(self, pixels: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
        """Raw CLIP frame features `[N, D]` float32 for preprocessed `[N, 3, R, R]` frames."""
        chunks = [
            self.model.encode_image(pixels[start : start + batch_size].to(self.device, self.model.dtype)).float()
            for start in range(0, len(pixels), batch_size)
        ]
        return torch.cat(chunks)

    @torch.no_grad()
    def frame_scores(self, query: torch.Tensor, features: np.ndarray) -> np.ndarray:
        """Cosine of the query with each frame's head output (CLIP frames for meanP), `[n]`."""
        frames = torch.as_tensor(features, device=self.device).unsqueeze(0)
        mask = torch.ones(frames.shape[:2], device=self.device)
        outputs = F.normalize(self.head.frame_outputs(frames, mask)[0], dim=-1)
        return (outputs @ query.to(self.device)).cpu().numpy()
