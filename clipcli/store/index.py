"""The on-disk video index: one SQLite database per index folder.

`index.sqlite3` holds, per video, its file stamp (size, mtime in ns: a file
is re-embedded only when one of them changes, as rclip does), whether it
failed (and why), its duration, its pooled video embedding (the head's,
L2-normalised, fp16), and per frame the L2-normalised CLIP embedding (fp16),
that embedding's norm (fp32, so heads that need raw features get them back)
and the frame's timestamp. A `meta` table records which model and sampling
made the embeddings; a different one empties the index. Beside it, with faiss
installed, `ann-GEN.faiss` is an approximate search index of the embeddings
(`clipcli.store.ann`).

Consistency: SQLite transactions (WAL journal) make each committed batch
durable and a crash or Ctrl-C lose at most the batch in flight, so a rerun
resumes. Writers also take an exclusive lock on `index.lock` beside the
database, so two processes never embed the same files at once; readers need
no lock. Paths are stored as absolute file-system bytes, so any file name works.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipcli.errors import BadInputError
from clipcli.store.ann import AnnIndex, load_or_build
from clipcli.store.atomic import atomic_path

SCHEMA_VERSION = 1
DB_NAME = "index.sqlite3"
LOCK_NAME = "index.lock"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS videos (
    path BLOB PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    error TEXT,
    duration REAL,
    embedding BLOB,
    indexed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS frames (
    path BLOB PRIMARY KEY,
    embeddings BLOB NOT NULL,
    norms BLOB NOT NULL,
    timestamps BLOB NOT NULL
);
"""


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
        return self.take(np.concatenate([np.arange(start, stop) for start, stop in merged]) if merged else [])


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
    """An index folder's database. Use `lock()` around updates."""

    def __init__(self, folder: str | Path, *, create: bool = True):
        self.folder = Path(folder).expanduser().absolute()
        self.db_path = self.folder / DB_NAME
        if not create and not self.db_path.is_file():
            raise BadInputError("no index here yet (run without --no-update to build it)", self.folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise BadInputError("--index must be a folder", self.folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.db_path, isolation_level=None, timeout=60.0)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA)
        except (sqlite3.DatabaseError, OSError) as err:
            raise BadInputError(f"cannot open the index database ({err})", self.db_path) from None
        self._matrix: Matrix | None = None
        self._matrix_generation = -1
        self._ann: AnnIndex | None = None
        self._ann_generation = -1
        self._check_schema()

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

    def _check_schema(self) -> None:
        version = self._meta("schema")
        if version is None:
            with self.transaction():
                self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif version != str(SCHEMA_VERSION):
            raise BadInputError(
                f"index was written by another clipcli version (schema {version}, this one "
                f"reads {SCHEMA_VERSION}); delete the folder or choose another --index",
                self.folder,
            )

    @property
    def identity(self) -> dict | None:
        """The model and sampling settings the stored embeddings came from."""
        text = self._meta("identity")
        return None if text is None else json.loads(text)

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

    def stamps(self, roots: Iterable[Path]) -> dict[Path, Stamp]:
        """Stamps of every stored video under (or equal to) the roots."""
        rows = self._under(roots, "path, size, mtime_ns, status")
        return {_path(key): Stamp(size, mtime, status == "ok") for key, size, mtime, status in rows}

    def failures(self, roots: Iterable[Path]) -> list[tuple[Path, str]]:
        return [(_path(key), error) for key, error in self._under(roots, "path, error", "status = 'failed'")]

    def matrix(self, roots: Iterable[Path]) -> Matrix:
        """Pooled embeddings `[N, D]` (fp16) of the indexed videos under the roots, sorted by path.

        Served from `snapshot-GEN.npy` (memory-mapped) and `snapshot-GEN.keys`,
        a copy of all rows tagged with the database's generation (bumped by
        every write), so a query does not walk 100k SQLite rows; a stale or
        missing snapshot is rebuilt from the database.
        """
        return self._snapshot().select(roots)

    def _snapshot(self) -> Matrix:
        generation = self._generation()
        if self._matrix is not None and self._matrix_generation == generation:
            return self._matrix
        snapshot = self._load_snapshot(generation)
        if snapshot is None:
            generation, snapshot = self._read_snapshot()
            self._save_snapshot(generation, snapshot)
        self._matrix, self._matrix_generation = snapshot, generation
        return snapshot

    def _snapshot_files(self, generation: int) -> tuple[Path, Path]:
        return self.folder / f"snapshot-{generation}.keys", self.folder / f"snapshot-{generation}.npy"

    def _load_snapshot(self, generation: int) -> Matrix | None:
        """The snapshot of this generation, its embeddings memory-mapped, or None if there is none."""
        keys_file, embeddings_file = self._snapshot_files(generation)
        try:
            keys = keys_file.read_bytes()
            embeddings = np.load(embeddings_file, mmap_mode="r")
        except (OSError, ValueError):
            return None
        keys = keys.split(b"\0") if keys else []
        return Matrix(keys, embeddings) if len(keys) == len(embeddings) else None

    def _save_snapshot(self, generation: int, snapshot: Matrix) -> None:
        """Keys, then embeddings (each atomically), then drop older snapshots."""
        keys_file, embeddings_file = self._snapshot_files(generation)
        try:
            with atomic_path(keys_file) as tmp:
                tmp.write_bytes(b"\0".join(snapshot.keys))
            with atomic_path(embeddings_file) as tmp:
                np.save(tmp, snapshot.embeddings)
            for old in self.folder.glob("snapshot-*"):
                if old not in (keys_file, embeddings_file):
                    old.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only index folder only costs rebuilding the snapshot per query

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

    def ann(self, on_build: Callable[[str], None] | None = None) -> AnnIndex:
        """The approximate (faiss) index of the snapshot the last `matrix()` served; needs faiss.

        Read from `ann-GEN.faiss` beside the database, else built (`on_build`
        is told) and saved there: see `clipcli.store.ann`.
        """
        snapshot = self._matrix if self._matrix is not None else self._snapshot()
        if self._ann is None or self._ann_generation != self._matrix_generation:
            self._ann = load_or_build(
                self.folder, self._matrix_generation, snapshot.keys, snapshot.embeddings, self.identity, on_build
            )
            self._ann_generation = self._matrix_generation
        return self._ann

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

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM videos WHERE status = 'ok'").fetchone()[0]

    # ------------------------------------------------------------ writing

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """All or nothing: BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (Ctrl-C included).

        Each one bumps the generation, which tells readers their snapshot is stale.
        """
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('generation', ?)", (str(self._generation() + 1),))
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

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

    def remove(self, paths: Iterable[Path]) -> None:
        keys = [(_key(path),) for path in paths]
        if keys:
            with self.transaction():
                self.db.executemany("DELETE FROM videos WHERE path = ?", keys)
                self.db.executemany("DELETE FROM frames WHERE path = ?", keys)

    # ------------------------------------------------------------ locking

    @contextlib.contextmanager
    def lock(self, timeout: float | None = None, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """Exclusive right to update this index, across processes.

        Waits for another holder (forever when `timeout` is None, after
        calling `on_wait` once with a message), then raises a clear error.
        """
        path = self.folder / LOCK_NAME
        handle = open(path, "a+")  # noqa: SIM115  held for the duration of the lock
        try:
            start, announced = time.monotonic(), False
            while not _try_lock(handle):
                if timeout is not None and time.monotonic() - start >= timeout:
                    raise BadInputError(
                        f"index is being updated by another process{_holder(path)}; "
                        "wait for it, or use another --index",
                        self.folder,
                    )
                if not announced and on_wait is not None:
                    on_wait(f"waiting for another clipcli{_holder(path)} to finish updating {self.folder}")
                    announced = True
                time.sleep(0.1)
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            try:
                yield
            finally:
                _unlock(handle)
        finally:
            handle.close()


def _holder(lock_path: Path) -> str:
    try:
        pid = lock_path.read_text().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


try:
    import fcntl

    def _try_lock(handle) -> bool:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(handle) -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

except ImportError:  # Windows
    import msvcrt

    def _try_lock(handle) -> bool:
        handle.seek(0)
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(handle) -> None:
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
