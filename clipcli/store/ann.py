"""Approximate inner-product search over an index's video embeddings, with faiss (optional: `clipcli[faiss]`).

The index is an inverted file (faiss IVF): k-means cuts the unit vectors into
`sqrt(N)` lists, and a query scans only the `nprobe` lists whose centroids are
closest to it. The vectors are stored as fp16, i.e. exactly the values of the
index's snapshot, so faiss scores them as an exact search would.

`nprobe` is calibrated when the index is built, on the index's own data: 256
probe queries (stored embeddings, each plus a random vector twice as long,
renormalised: cosine 0.45 with the stored one, about as far as a text query
lies from its video), their exact top 10 by brute force, and the smallest
`nprobe` that finds at least `TARGET_RECALL` of those neighbours is kept. So
clustered embeddings scan few lists, and structureless ones (random vectors,
whose neighbours lie anywhere) scan most of them: the recall holds either way,
the speed-up is the data's.

It is persisted beside the index as `ann-ID-GEN.faiss` and `ann-ID-GEN.json`
(ID: the database's random id, GEN: the generation of the snapshot it indexes,
which every write bumps: videos added, changed or removed, or another model),
each written atomically, and memory-mapped when read back.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipcli.errors import ParameterError
from clipcli.store.atomic import atomic_path
from clipcli.store.cache import is_current, remove_stale

MODES = ("auto", "on", "off")
DEFAULT_THRESHOLD = 100_000  # `--ann auto` searches approximately above this many videos
TARGET_RECALL = 0.95  # of the exact top 10, on the calibration queries
CALIBRATION_QUERIES = 256
CALIBRATION_K = 10
FORMAT = 1
_CHUNK = 65_536  # rows converted to float32 at a time


def faiss_module() -> Any | None:
    """The faiss module, or None when it is not installed."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def available() -> bool:
    return faiss_module() is not None


def require_faiss() -> Any:
    faiss = faiss_module()
    if faiss is None:
        raise ParameterError("ann_mode", "on needs faiss, which is not installed: pip install clipcli[faiss]")
    return faiss


@dataclass
class AnnIndex:
    """A faiss IVF index over a snapshot's rows (faiss ids are the snapshot's row numbers)."""

    index: Any  # faiss.IndexIVFScalarQuantizer
    nprobe: int
    recall: float  # calibrated recall@10 at nprobe
    build_s: float = 0.0

    @property
    def nlist(self) -> int:
        return self.index.nlist

    def __len__(self) -> int:
        return self.index.ntotal

    def search(self, query: np.ndarray, k: int, rows: np.ndarray | None = None) -> np.ndarray:
        """Snapshot rows of about the `k` best rows for a unit query `[D]`, best first.

        `rows` (ascending snapshot rows) restricts the search to them; fewer
        than `k` come back when the scanned lists hold fewer of them.
        """
        faiss = require_faiss()
        params = faiss.SearchParametersIVF()
        params.nprobe = self.nprobe
        if rows is not None:
            contiguous = len(rows) > 0 and rows[-1] - rows[0] + 1 == len(rows)
            if contiguous:
                selector = faiss.IDSelectorRange(int(rows[0]), int(rows[-1]) + 1)
            else:
                selector = faiss.IDSelectorBatch(np.ascontiguousarray(rows, np.int64))
            params.sel = selector  # `selector` stays referenced until the search returns
        _, labels = self.index.search(np.ascontiguousarray(query, np.float32)[None], k, params=params)
        return labels[0][labels[0] >= 0]

    @classmethod
    def build(cls, embeddings: np.ndarray, *, target_recall: float = TARGET_RECALL, seed: int = 0) -> AnnIndex:
        """Train, fill and calibrate an IVF index on unit rows `[N, D]` (any float dtype, may be memory-mapped)."""
        faiss = require_faiss()
        start = time.perf_counter()
        count, dim = embeddings.shape
        nlist = max(1, min(math.isqrt(count), count // 40))  # faiss wants >= 39 training points per list
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, dim, nlist, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
        )
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(count, min(count, 64 * nlist), replace=False))
        index.train(np.asarray(embeddings[sample], np.float32))
        for first in range(0, count, _CHUNK):
            index.add(np.asarray(embeddings[first : first + _CHUNK], np.float32))
        nprobe, recall = _calibrate(index, embeddings, target_recall, rng)
        return cls(index, nprobe, recall, time.perf_counter() - start)

    def save(self, faiss_file: Path, meta: dict) -> None:
        """The index, then its description (the pair is valid once both are there)."""
        faiss = require_faiss()
        with atomic_path(faiss_file) as tmp, _name_for_faiss(tmp, os.O_WRONLY) as name:
            faiss.write_index(self.index, name)
        description = {**meta, "nlist": self.nlist, "nprobe": self.nprobe, "recall_at_10": self.recall}
        description["build_s"] = round(self.build_s, 3)
        with atomic_path(faiss_file.with_suffix(".json")) as tmp:
            tmp.write_text(json.dumps(description, sort_keys=True))

    @classmethod
    def load(cls, faiss_file: Path, meta: dict) -> AnnIndex | None:
        """The saved index if its description matches `meta`, else None."""
        faiss = require_faiss()
        try:
            description = json.loads(faiss_file.with_suffix(".json").read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(description, dict) or any(description.get(key) != value for key, value in meta.items()):
            return None
        try:
            with _name_for_faiss(faiss_file, os.O_RDONLY) as name:
                try:
                    index = faiss.read_index(name, faiss.IO_FLAG_MMAP)
                except RuntimeError:
                    index = faiss.read_index(name)
        except (OSError, RuntimeError):
            return None
        if index.ntotal != meta["videos"] or index.d != meta["dim"]:
            return None
        return cls(index, int(description["nprobe"]), float(description["recall_at_10"]))


@contextlib.contextmanager
def _name_for_faiss(path: Path, flags: int) -> Iterator[str]:
    """A name faiss can open for `path`.

    faiss takes file names as UTF-8 strings only, so a folder whose name is not
    UTF-8 (an index named after such a video folder) is reached through an open
    descriptor's `/proc/self/fd/N` where the system has one.
    """
    if _is_utf8(path):
        yield str(path)
        return
    if not Path("/proc/self/fd").is_dir():
        raise OSError(f"{path}: faiss cannot open a file whose name is not UTF-8 on this system")
    descriptor = os.open(path, flags)
    try:
        yield f"/proc/self/fd/{descriptor}"
    finally:
        os.close(descriptor)


def _is_utf8(path: Path) -> bool:
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def exact_top_k(queries: np.ndarray, embeddings: np.ndarray, k: int) -> np.ndarray:
    """Rows of the `k` best rows of `embeddings` for each query `[Q, D]` by fp32 inner product, best first."""
    k = min(k, len(embeddings))
    best_rows = np.zeros((len(queries), 0), np.int64)
    best_scores = np.zeros((len(queries), 0), np.float32)
    for first in range(0, len(embeddings), _CHUNK):
        scores = queries @ np.asarray(embeddings[first : first + _CHUNK], np.float32).T
        top = np.argpartition(-scores, min(k, scores.shape[1]) - 1, axis=1)[:, :k]
        best_rows = np.concatenate([best_rows, top + first], axis=1)
        best_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, axis=1)], axis=1)
        keep = np.argsort(-best_scores, axis=1, kind="stable")[:, :k]
        best_rows = np.take_along_axis(best_rows, keep, axis=1)
        best_scores = np.take_along_axis(best_scores, keep, axis=1)
    return best_rows


def _list_of_rows(index: Any, count: int) -> np.ndarray:
    """The inverted list each row went to."""
    faiss = require_faiss()
    owner = np.empty(count, np.int64)
    for number in range(index.nlist):
        size = index.invlists.list_size(number)
        if size:
            owner[faiss.rev_swig_ptr(index.invlists.get_ids(number), size)] = number
    return owner


def _calibrate(index: Any, embeddings: np.ndarray, target_recall: float, rng: np.random.Generator) -> tuple[int, float]:
    """The smallest nprobe finding `target_recall` of the calibration queries' exact top 10, and that recall.

    A neighbour is found iff its list is among the first `nprobe` the query
    probes, so one ranking of all lists per query gives the recall of every
    `nprobe` at once.
    """
    count, dim = embeddings.shape
    picks = np.sort(rng.choice(count, min(CALIBRATION_QUERIES, count), replace=False))
    noise = rng.standard_normal((len(picks), dim)).astype(np.float32)
    queries = np.asarray(embeddings[picks], np.float32)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    queries += 2 * noise / np.linalg.norm(noise, axis=1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    truth = exact_top_k(queries, embeddings, CALIBRATION_K)
    _, order = index.quantizer.search(queries, index.nlist)  # each query's lists, nearest first
    position = np.empty_like(order)
    np.put_along_axis(position, order, np.arange(index.nlist)[None], axis=1)
    needed = np.take_along_axis(position, _list_of_rows(index, count)[truth], axis=1).ravel() + 1
    nprobe = int(np.sort(needed)[math.ceil(target_recall * len(needed)) - 1])
    return nprobe, float(np.mean(needed <= nprobe))


def fingerprint(keys: list[bytes], embeddings: np.ndarray, identity: dict | None) -> str:
    """A cheap digest of a snapshot: its size, the model, and 256 evenly spaced rows (keys and vectors)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps([len(keys), identity], sort_keys=True).encode())
    rows = np.unique(np.linspace(0, len(keys) - 1, 256).astype(np.int64)) if keys else np.empty(0, np.int64)
    for row in rows:
        digest.update(keys[row] + b"\0" + np.ascontiguousarray(embeddings[row]).tobytes())
    return digest.hexdigest()


def load_or_build(
    folder: Path,
    database_id: str | None,
    generation: int,
    keys: list[bytes],
    embeddings: np.ndarray,
    identity: dict | None,
    on_build: Callable[[str], None] | None = None,
) -> AnnIndex:
    """The approximate index of this snapshot: `folder/ann-ID-GEN.faiss` if it matches, else built and saved there.

    A folder that cannot be written to only costs building it again next
    time; a database without an id (a read-only one from before ids) gets
    its index built in memory only.
    """
    faiss_file = folder / f"ann-{database_id}-{generation}.faiss"
    meta = {
        "format": FORMAT,
        "videos": len(keys),
        "dim": int(embeddings.shape[1]),
        "fingerprint": fingerprint(keys, embeddings, identity),
    }
    loaded = AnnIndex.load(faiss_file, meta) if database_id is not None else None
    if loaded is not None:
        return loaded
    if on_build is not None:
        on_build(f"building the approximate search index of {len(keys)} videos (once per change of the index)")
    built = AnnIndex.build(embeddings)
    if database_id is None:
        return built
    try:
        built.save(faiss_file, meta)
        # Newer generations of this database stay: they may be another process's.
        remove_stale(folder, "ann-", lambda path: is_current(path, f"ann-{database_id}-", generation))
    except OSError:
        pass
    return built
