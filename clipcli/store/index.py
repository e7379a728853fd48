"""The on-disk video index: one SQLite database per index folder.

`index.sqlite3` holds, per video, its file stamp (size, mtime in ns: a file
is re-embedded only when one of them changes, as rclip does), whether it
failed (and why), its duration, its pooled video embedding (the head's,
L2-normalised, fp16), and per frame the L2-normalised CLIP embedding (fp16),
that embedding's norm (fp32, so heads that need raw features get them back)
and the frame's timestamp. A `meta` table records which model and sampling
made the embeddings; a different one empties the index. It also holds a random
id, drawn when the database is created, that names the files derived from it
beside it: `snapshot-ID-GEN.*` (all embeddings in one array) and, with faiss
installed, `ann-ID-GEN.faiss` (`clipcli.store.ann`). A database deleted and
rebuilt has another id, so files of the old one are never served for it.

Consistency: SQLite transactions (WAL journal) make each committed batch
durable and a crash or Ctrl-C lose at most the batch in flight, so a rerun
resumes. Writers also take an exclusive lock on `index.lock` beside the
database, so two processes never embed the same files at once; readers need
no lock. Paths are stored as absolute file-system bytes, so any file name works.

Failures: SQLite errors become one-line errors naming the database: damaged
pages (rebuild with `--reindex`), a full disk (the batch in flight is rolled
back), a read-only index (search it with `--no-update`, which opens it
read-only and never writes).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipcli.errors import BadInputError
from clipcli.store.ann import AnnIndex, load_or_build
from clipcli.store.cache import is_current, remove_stale, write_cache
from clipcli.store.index_db import (
    connect,
    connect_read_only,
    database_error,
    find_damage,
    reports_database_errors,
)
from clipcli.store.index_lock import update_lock

SCHEMA_VERSION = 1
DB_NAME = "index.sqlite3"


@dataclass(frozen=True)
class Stamp:
    """What the index knows of a file without reading it."""

    size: int
    mtime_ns: int
    ok: bool


@dataclass
class VideoRecord:
    """One embedded video, as stored."""

    path: Path
    size: int
    mtime_ns: int
    duration: float
    embedding: np.ndarray  # [D] pooled by the head, unit length
    frame_embeddings: np.ndarray  # [n, D] unit length
    frame_norms: np.ndarray  # [n] norms of the raw CLIP frame features
    timestamps: np.ndarray  # [n] seconds


@dataclass(frozen=True)
class Failure:
    path: Path
    size: int
    mtime_ns: int
    error: str


@dataclass
class Frames:
    """A video's stored frames, for segment scores and heads."""

    duration: float
    embeddings: np.ndarray  # [n, D] float32 unit
    norms: np.ndarray  # [n] float32
    timestamps: np.ndarray  # [n] float64

    @property
    def features(self) -> np.ndarray:
        """The raw CLIP frame features `[n, D]` (unit vectors times their norms)."""
        return self.embeddings * self.norms[:, None]


@dataclass
class Matrix:
    """Pooled video embeddings and their paths (as file-system bytes), sorted by path."""

    keys: list[bytes]
    embeddings: np.ndarray  # [N, D] fp16, unit rows
    rows: np.ndarray | None = None  # each row's number in the index's snapshot; None: it is the snapshot

    def __len__(self) -> int:
        return len(self.keys)

    def snapshot_rows(self) -> np.ndarray:
        return np.arange(len(self.keys)) if self.rows is None else self.rows

    def take(self, positions: np.ndarray) -> Matrix:
        """The rows at these (ascending) positions."""
        positions = np.asarray(positions, np.int64)
        keys = [self.keys[row] for row in positions]
        return Matrix(keys, self.embeddings[positions], self.snapshot_rows()[positions])

    def path(self, row: int) -> Path:
        return _path(self.keys[row])

    @property
    def paths(self) -> list[Path]:
        return [_path(key) for key in self.keys]

    def select(self, roots: Iterable[Path]) -> Matrix:
        """The rows under (or equal to) any of the roots: contiguous ranges of the sorted keys."""
        keys, spans = self.keys, []
        for root in roots:
            exact, low, high = _prefix_range(root)
            at = bisect_left(keys, exact)
            if at < len(keys) and keys[at] == exact:
                spans.append((at, at + 1))
            spans.append((bisect_left(keys, low), bisect_left(keys, high)))
        merged: list[list[int]] = []
        for start, stop in sorted(span for span in spans if span[1] > span[0]):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], stop)
            else:
                merged.append([start, stop])
        if len(merged) == 1:  # the usual case: views, no copies
            start, stop = merged[0]
            if (start, stop) == (0, len(keys)):
                return self
            return Matrix(keys[start:stop], self.embeddings[start:stop], self.snapshot_rows()[start:stop])
        return self.take(np.concatenate([np.arange(start, stop) for start, stop in merged]) if merged else np.empty(0))


def _key(path: Path) -> bytes:
    return os.fsencode(os.path.abspath(path))


def _path(key: bytes) -> Path:
    return Path(os.fsdecode(key))


def _prefix_range(root: Path) -> tuple[bytes, bytes, bytes]:
    """(root, low, high): keys equal to root or in [low, high) lie under it (bytewise order)."""
    exact = _key(root)
    separator = os.sep.encode()
    low = exact if exact.endswith(separator) else exact + separator
    return exact, low, low[:-1] + bytes([low[-1] + 1])


class VideoIndex:
    """An index folder's database. Use `lock()` around updates.

    `create=False` (`--no-update`) opens an existing database read-only.
    """

    def __init__(self, folder: str | Path, *, create: bool = True):
        self.folder = Path(folder).expanduser().absolute()
        self.db_path = self.folder / DB_NAME
        self.read_only = not create
        if not create and not self.db_path.is_file():
            raise BadInputError("no index here yet (run without --no-update to build it)", self.folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise BadInputError("--index must be a folder", self.folder)
        try:
            if self.read_only:
                self.db = connect_read_only(self.db_path)
            else:
                self.folder.mkdir(parents=True, exist_ok=True)
                self.db = connect(self.db_path)
        except OSError as err:
            raise BadInputError(f"cannot open the index database ({err})", self.db_path) from None
        except sqlite3.Error as err:
            raise database_error(err, self.db_path) from None
        self._matrix: Matrix | None = None
        self._matrix_generation = -1
        self._ann: AnnIndex | None = None
        self._ann_generation = -1
        try:
            self.id = self._check_schema()
        except BaseException:
            self.db.close()
            raise

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> VideoIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ meta

    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    @reports_database_errors
    def _check_schema(self) -> str | None:
        """The database's id, given to it here if it is new (or older than ids) and writable."""
        version = self._meta("schema")
        if version not in (None, str(SCHEMA_VERSION)):
            raise BadInputError(
                f"index was written by another clipcli version (schema {version}, this one "
                f"reads {SCHEMA_VERSION}); delete the folder or choose another --index",
                self.folder,
            )
        if self._meta("id") is None and not self.read_only:
            with self.transaction():
                self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
                self.db.execute("INSERT OR IGNORE INTO meta VALUES ('id', ?)", (secrets.token_hex(8),))
        return self._meta("id")

    @property
    @reports_database_errors
    def identity(self) -> dict | None:
        """The model and sampling settings the stored embeddings came from."""
        text = self._meta("identity")
        return None if text is None else json.loads(text)

    @reports_database_errors
    def reset(self, identity: dict) -> None:
        """Forget every video and record a new identity (the model or sampling changed)."""
        with self.transaction():
            self.db.execute("DELETE FROM videos")
            self.db.execute("DELETE FROM frames")
            text = json.dumps(identity, sort_keys=True)
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('identity', ?)", (text,))

    # ------------------------------------------------------------ reading

    def _under(self, roots: Iterable[Path], columns: str, where: str = "1") -> Iterator[tuple]:
        for root in roots:
            exact, low, high = _prefix_range(root)
            yield from self.db.execute(
                f"SELECT {columns} FROM videos WHERE ({where}) AND (path = ? OR (path >= ? AND path < ?)) "
                "ORDER BY path",
                (exact, low, high),
            )

    @reports_database_errors
    def stamps(self, roots: Iterable[Path]) -> dict[Path, Stamp]:
        """Stamps of every stored video under (or equal to) the roots."""
        rows = self._under(roots, "path, size, mtime_ns, status")
        return {_path(key): Stamp(size, mtime, status == "ok") for key, size, mtime, status in rows}

    @reports_database_errors
    def failures(self, roots: Iterable[Path]) -> list[tuple[Path, str]]:
        return [(_path(key), error) for key, error in self._under(roots, "path, error", "status = 'failed'")]

    @reports_database_errors
    def matrix(self, roots: Iterable[Path]) -> Matrix:
        """Pooled embeddings `[N, D]` (fp16) of the indexed videos under the roots, sorted by path.

        Served from `snapshot-ID-GEN.npy` (memory-mapped) and `snapshot-ID-GEN.keys`,
        a copy of all rows tagged with the database's id and generation (bumped
        by every write), so a query does not walk 100k SQLite rows; a stale or
        missing snapshot is rebuilt from the database (and kept in memory only
        where it cannot be saved).
        """
        return self._snapshot().select(roots)

    def _snapshot(self) -> Matrix:
        generation = self._generation()
        if self._matrix is not None and self._matrix_generation == generation:
            return self._matrix
        snapshot = self._load_snapshot(generation) if self.id is not None else None
        if snapshot is None:
            generation, snapshot = self._read_snapshot()
            if self.id is not None:
                self._save_snapshot(generation, snapshot)
        self._matrix, self._matrix_generation = snapshot, generation
        return snapshot

    def _snapshot_files(self, generation: int) -> tuple[Path, Path]:
        stem = f"snapshot-{self.id}-{generation}"
        return self.folder / f"{stem}.keys", self.folder / f"{stem}.npy"

    def _load_snapshot(self, generation: int) -> Matrix | None:
        """The snapshot of this generation, its embeddings memory-mapped, or None if there is none (or a bad one)."""
        keys_file, embeddings_file = self._snapshot_files(generation)
        try:
            joined_keys = keys_file.read_bytes()
            embeddings = np.load(embeddings_file, mmap_mode="r")
        except (OSError, EOFError, ValueError):
            return None
        keys = joined_keys.split(b"\0") if joined_keys else []
        sound = embeddings.ndim == 2 and embeddings.dtype == np.float16 and len(keys) == len(embeddings)
        return Matrix(keys, embeddings) if sound else None

    def _save_snapshot(self, generation: int, snapshot: Matrix) -> None:
        """Keys, then embeddings (each atomically), then drop other snapshots; a read-only folder saves nothing."""
        keys_file, embeddings_file = self._snapshot_files(generation)
        write_cache(keys_file, lambda tmp: tmp.write_bytes(b"\0".join(snapshot.keys)))
        write_cache(embeddings_file, lambda tmp: np.save(tmp, snapshot.embeddings))
        with contextlib.suppress(OSError):
            remove_stale(self.folder, "snapshot-", lambda path: is_current(path, f"snapshot-{self.id}-", generation))

    def _read_snapshot(self) -> tuple[int, Matrix]:
        """The generation and every embedded row, read in one transaction so they agree."""
        self.db.execute("BEGIN")
        try:
            generation = self._generation()
            rows = self.db.execute("SELECT path, embedding FROM videos WHERE status = 'ok' ORDER BY path").fetchall()
        finally:
            self.db.execute("COMMIT")
        if not rows:
            return generation, Matrix([], np.zeros((0, 0), np.float16))
        embeddings = np.frombuffer(b"".join(blob for _, blob in rows), np.float16).reshape(len(rows), -1)
        return generation, Matrix([key for key, _ in rows], embeddings)

    def _generation(self) -> int:
        return int(self._meta("generation") or 0)

    @reports_database_errors
    def ann(self, on_build: Callable[[str], None] | None = None) -> AnnIndex:
        """The approximate (faiss) index of the snapshot the last `matrix()` served; needs faiss.

        Read from `ann-ID-GEN.faiss` beside the database, else built (`on_build`
        is told) and saved there: see `clipcli.store.ann`.
        """
        snapshot = self._matrix if self._matrix is not None else self._snapshot()
        if self._ann is None or self._ann_generation != self._matrix_generation:
            self._ann = load_or_build(
                self.folder,
                self.id,
                self._matrix_generation,
                snapshot.keys,
                snapshot.embeddings,
                self.identity,
                on_build,
            )
            self._ann_generation = self._matrix_generation
        return self._ann

    @reports_database_errors
    def frames(self, path: Path) -> Frames:
        """A stored video's frames (KeyError if it is not indexed)."""
        row = self.db.execute(
            "SELECT v.duration, f.embeddings, f.norms, f.timestamps FROM videos v JOIN frames f ON f.path = v.path "
            "WHERE v.path = ? AND v.status = 'ok'",
            (_key(path),),
        ).fetchone()
        if row is None:
            raise KeyError(path)
        duration, embeddings, norms, timestamps = row
        count = len(timestamps) // 8
        return Frames(
            float(duration),
            np.frombuffer(embeddings, np.float16).reshape(count, -1).astype(np.float32),
            np.frombuffer(norms, np.float32).copy(),
            np.frombuffer(timestamps, np.float64).copy(),
        )

    @reports_database_errors
    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM videos WHERE status = 'ok'").fetchone()[0]

    # ------------------------------------------------------------ writing

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """All or nothing: BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (Ctrl-C, a full disk at COMMIT).

        Each one bumps the generation, which tells readers their snapshot is stale.
        """
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('generation', ?)", (str(self._generation() + 1),))
            yield
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:  # SQLite rolls back by itself after some errors (a full disk mid-statement)
                self.db.execute("ROLLBACK")
            raise

    @reports_database_errors
    def write(self, records: Iterable[VideoRecord], failures: Iterable[Failure] = ()) -> None:
        """Store one batch of embedded and failed videos in one transaction."""
        now = time.time()
        with self.transaction():
            for record in records:
                key = _key(record.path)
                self.db.execute(
                    "INSERT OR REPLACE INTO videos VALUES (?, ?, ?, 'ok', NULL, ?, ?, ?)",
                    (
                        key,
                        record.size,
                        record.mtime_ns,
                        float(record.duration),
                        np.ascontiguousarray(record.embedding, np.float16).tobytes(),
                        now,
                    ),
                )
                self.db.execute(
                    "INSERT OR REPLACE INTO frames VALUES (?, ?, ?, ?)",
                    (
                        key,
                        np.ascontiguousarray(record.frame_embeddings, np.float16).tobytes(),
                        np.ascontiguousarray(record.frame_norms, np.float32).tobytes(),
                        np.ascontiguousarray(record.timestamps, np.float64).tobytes(),
                    ),
                )
            for failure in failures:
                key = _key(failure.path)
                self.db.execute(
                    "INSERT OR REPLACE INTO videos VALUES (?, ?, ?, 'failed', ?, NULL, NULL, ?)",
                    (key, failure.size, failure.mtime_ns, failure.error, now),
                )
                self.db.execute("DELETE FROM frames WHERE path = ?", (key,))

    @reports_database_errors
    def remove(self, paths: Iterable[Path]) -> None:
        keys = [(_key(path),) for path in paths]
        if keys:
            with self.transaction():
                self.db.executemany("DELETE FROM videos WHERE path = ?", keys)
                self.db.executemany("DELETE FROM frames WHERE path = ?", keys)

    # ------------------------------------------------------------ locking

    def lock(
        self, timeout: float | None = None, on_wait: Callable[[str], None] | None = None
    ) -> contextlib.AbstractContextManager[None]:
        """Exclusive right to update this index, across processes: see `update_lock`."""
        return update_lock(self.folder, timeout, on_wait)


def discard_if_damaged(folder: str | Path, on_wait: Callable[[str], None] | None = None) -> str | None:
    """Delete the index database in `folder` if SQLite finds it damaged, so it is built afresh; what was wrong.

    Checks every page (`PRAGMA quick_check`), so it is for `--reindex`, which
    reads every video again anyway. Holds the update lock while it checks.
    """
    db_path = Path(folder).expanduser().absolute() / DB_NAME
    if not db_path.is_file():
        return None
    with update_lock(db_path.parent, on_wait=on_wait):
        problem = find_damage(db_path)
        if problem is not None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    return problem
