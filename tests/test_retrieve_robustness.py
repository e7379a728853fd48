"""`clipcli retrieve` when its index is damaged, stale, read-only or out of disk space, and `-0` path lists."""

from __future__ import annotations

import json
import os
import sqlite3
import time

import numpy as np
import pytest
import torch
from makers.read_only import make_read_only, make_writable, read_only_cli
from makers.video import index_frames, write_video
from typer.testing import CliRunner

from clipcli.cli import app
from clipcli.errors import BadInputError
from clipcli.pipelines import retrieve
from clipcli.store.index import DB_NAME, VideoIndex, VideoRecord

runner = CliRunner()
PAGE = 4096  # SQLite's default page size


@pytest.fixture(autouse=True)
def index_home(tmp_path, monkeypatch):
    home = tmp_path / "indexes"
    monkeypatch.setenv("CLIPCLI_INDEX_HOME", str(home))
    return home


def add_videos(folder, names):
    """Videos of distinct brightness (so distinct embeddings), one per name."""
    folder.mkdir(parents=True, exist_ok=True)
    return [write_video(folder / name, index_frames(12) // (2 + number)) for number, name in enumerate(names)]


@pytest.fixture
def videos(tmp_path):
    return add_videos(tmp_path / "videos", [f"clip{number}.mp4" for number in range(4)])


def search(folder, model, *extra):
    """(result, [hit paths]) of a JSON search for one fixed query."""
    result = runner.invoke(
        app, ["retrieve", str(folder), "a square", "--model", str(model), "--device", "cpu", "--json", *map(str, extra)]
    )
    paths = [hit["path"] for hit in json.loads(result.stdout)["hits"]] if result.exit_code in (0, 4) else None
    return result, paths


def error_line(result) -> str:
    """The single line a failing run printed on stderr (and nothing like a traceback)."""
    assert "Traceback" not in result.output
    (line,) = result.stderr.strip().splitlines()
    return line


def record(path, vector) -> VideoRecord:
    return VideoRecord(path, 1, 1, 3.0, vector, vector[None], np.ones(1), np.zeros(1))


# ---------------------------------------------------------------- damaged index (item 7)


def damage_pages(database):
    """Overwrite every page after the first (schema) page, as a bad sector or a torn copy would."""
    size = database.stat().st_size
    with open(database, "r+b") as handle:
        handle.seek(PAGE)
        handle.write(b"\x5a" * (size - PAGE))


def damage_header(database):
    with open(database, "r+b") as handle:
        handle.write(b"\x00garbage" * 12)


@pytest.mark.parametrize("damage", [damage_pages, damage_header], ids=["pages", "header"])
def test_a_damaged_index_exits_2_naming_it_and_reindex_rebuilds_it(videos, tiny_vit_path, tmp_path, damage):
    folder, index_dir = videos[0].parent, tmp_path / "index"
    result, before = search(folder, tiny_vit_path, "--index", index_dir)
    assert result.exit_code == 0, result.output
    damage(index_dir / DB_NAME)
    for update in ([], ["--no-update"]):
        result, _ = search(folder, tiny_vit_path, "--index", index_dir, *update)
        assert result.exit_code == 2, result.output
        line = error_line(result)
        assert str(index_dir / DB_NAME) in line and "damaged" in line and "--reindex" in line

    result, after = search(folder, tiny_vit_path, "--index", index_dir, "--reindex")
    assert result.exit_code == 0, result.output
    assert after == before
    assert "damaged" in result.stderr and "4 embedded, 0 unchanged" in result.stderr
    with sqlite3.connect(index_dir / DB_NAME) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_reindex_keeps_a_sound_index_file(videos, tiny_vit_path, tmp_path):
    index_dir = tmp_path / "index"
    assert search(videos[0].parent, tiny_vit_path, "--index", index_dir)[0].exit_code == 0
    inode = (index_dir / DB_NAME).stat().st_ino
    result, _ = search(videos[0].parent, tiny_vit_path, "--index", index_dir, "--reindex")
    assert result.exit_code == 0 and "damaged" not in result.stderr
    assert (index_dir / DB_NAME).stat().st_ino == inode


# ---------------------------------------------------------------- full disk (item 7)


@pytest.fixture
def full_disk(monkeypatch):
    """From now on, SQLite connections may not grow their database by a single page."""
    connect = sqlite3.connect

    def connect_on_a_full_disk(*args, **kwargs):
        db = connect(*args, **kwargs)
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        db.execute(f"PRAGMA max_page_count = {pages}")
        return db

    monkeypatch.setattr(sqlite3, "connect", connect_on_a_full_disk)


def test_a_full_disk_while_indexing_exits_2_and_keeps_the_index_consistent(tmp_path, tiny_rn_path, request):
    folder, index_dir = tmp_path / "videos", tmp_path / "index"
    first = add_videos(folder, ["a.mp4", "b.mp4"])
    assert search(folder, tiny_rn_path, "--index", index_dir)[0].exit_code == 0
    add_videos(folder / "more", ["c.mp4", "d.mp4"])  # 256-d frames: each new video needs new pages

    request.getfixturevalue("full_disk")
    result, _ = search(folder, tiny_rn_path, "--index", index_dir)
    assert result.exit_code == 2, result.output
    line = error_line(result)
    assert str(index_dir / DB_NAME) in line and "full" in line

    with sqlite3.connect(index_dir / DB_NAME) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        stored = [os.fsdecode(key) for (key,) in db.execute("SELECT path FROM videos ORDER BY path")]
    assert stored == [str(path) for path in first]


def test_a_full_disk_at_commit_rolls_the_batch_back(tmp_path, tiny_vit_path):
    vectors = np.eye(4, 32, dtype=np.float32)
    with VideoIndex(tmp_path / "index") as index:
        index.write([record(tmp_path / "kept.mp4", vectors[0])])
        generation = index.db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        index.db = CommitFails(index.db)
        with pytest.raises(BadInputError, match="full") as raised:
            index.write([record(tmp_path / "lost.mp4", vectors[1])])
        assert str(index.db_path) in str(raised.value)
        index.db = index.db.unwrapped
        assert not index.db.in_transaction
        assert index.db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone() == generation
        assert index.matrix([tmp_path]).paths == [tmp_path / "kept.mp4"]


class CommitFails:
    """A connection whose COMMIT fails as SQLite's does when the disk fills up (SQLITE_FULL)."""

    def __init__(self, db):
        self.unwrapped = db

    def execute(self, sql, *args):
        if sql.strip().upper() == "COMMIT":
            error = sqlite3.OperationalError("database or disk is full")
            error.sqlite_errorcode, error.sqlite_errorname = sqlite3.SQLITE_FULL, "SQLITE_FULL"
            raise error
        return self.unwrapped.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self.unwrapped, name)


# ---------------------------------------------------------------- stale snapshots (item 8)


def test_a_rebuilt_index_does_not_serve_the_old_snapshot(videos, tiny_vit_path, tmp_path):
    folder, index_dir = videos[0].parent, tmp_path / "index"
    assert search(folder, tiny_vit_path, "--index", index_dir)[0].exit_code == 0
    assert list(index_dir.glob("snapshot-*"))
    for name in (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm"):
        (index_dir / name).unlink(missing_ok=True)
    videos[1].unlink()
    result, paths = search(folder, tiny_vit_path, "--index", index_dir)
    assert result.exit_code == 0, result.output
    assert sorted(paths) == sorted(str(path) for path in videos if path != videos[1])


def test_stray_snapshot_temp_files_are_removed(tmp_path):
    index_dir = tmp_path / "index"
    with VideoIndex(index_dir) as index:
        index.write([record(tmp_path / "a.mp4", np.eye(1, 32, dtype=np.float32)[0])])
        stray = [index_dir / ".snapshot-3.abc123.tmp.npy", index_dir / ".snapshot-3.def456.tmp.keys"]
        recent = index_dir / ".snapshot-9.ghi789.tmp.npy"  # another process may be writing it now
        for path in [*stray, recent]:
            path.write_bytes(b"half written")
        hour_ago = time.time() - 3600
        for path in stray:
            os.utime(path, (hour_ago, hour_ago))
        assert index.matrix([tmp_path]).paths == [tmp_path / "a.mp4"]
    assert not any(path.exists() for path in stray)
    assert recent.exists()


def test_a_reader_keeps_the_newer_snapshot_another_process_wrote(tmp_path):
    index_dir = tmp_path / "index"
    with VideoIndex(index_dir) as index:
        index.write([record(tmp_path / "a.mp4", np.eye(1, 32, dtype=np.float32)[0])])
        newer = [index_dir / f"snapshot-{index.id}-999.{suffix}" for suffix in ("keys", "npy")]
        older = index_dir / f"snapshot-{index.id}-0.npy"
        for path in [*newer, older]:
            path.write_bytes(b"another process's")
        assert index.matrix([tmp_path]).paths == [tmp_path / "a.mp4"]
    assert all(path.exists() for path in newer) and not older.exists()


@pytest.fixture
def retriever(tiny_vit_path):
    return retrieve.Retriever.load(str(tiny_vit_path), device="cpu")


def test_a_rebuilt_index_does_not_serve_the_old_approximate_index(tmp_path, retriever):
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((600, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    folder, index_dir = tmp_path / "lib", tmp_path / "index"
    paths = [folder / f"v{row:04d}.mp4" for row in range(len(vectors))]

    def build(rows):
        index = VideoIndex(index_dir)
        index.reset(retriever.identity(12, "uniform"))
        index.write(record(path, vector) for path, vector in zip(paths, rows, strict=True))
        return index

    with build(vectors) as index:
        index.matrix([folder])
        index.ann()
    assert list(index_dir.glob("ann-*.faiss"))
    (index_dir / DB_NAME).unlink()
    # The new database differs from the old one in one video the ANN fingerprint does not sample.
    sampled = set(np.linspace(0, len(vectors) - 1, 256).astype(np.int64).tolist())
    changed = next(row for row in range(len(vectors)) if row not in sampled)
    query = rng.standard_normal(32).astype(np.float32)
    query /= np.linalg.norm(query)
    moved = vectors.copy()
    moved[changed] = query
    with build(moved) as index:
        hits = retrieve.search([(index, [folder])], retriever, torch.from_numpy(query), 1, ann_mode="on")
    assert hits[0].path == paths[changed]
    assert hits[0].score == pytest.approx(1.0, abs=2e-3)


def test_approximate_index_files_of_another_database_are_removed(tmp_path, retriever):
    pytest.importorskip("faiss")
    index_dir = tmp_path / "index"
    stale = [index_dir / "ann-3.faiss", index_dir / "ann-3.json", index_dir / "ann-0123abcd-7.faiss"]
    index_dir.mkdir()
    for path in stale:
        path.write_bytes(b"old")
    vectors = np.eye(64, 32, dtype=np.float32)
    vectors[32:] = -vectors[:32]
    with VideoIndex(index_dir) as index:
        index.reset(retriever.identity(12, "uniform"))
        index.write(record(tmp_path / f"v{row}.mp4", vector) for row, vector in enumerate(vectors))
        index.matrix([tmp_path])
        index.ann()
    assert not any(path.exists() for path in stale)
    assert len(list(index_dir.glob("ann-*.faiss"))) == 1


# ---------------------------------------------------------------- read-only index (item 9d)


def read_only_index(videos, model, index_dir):
    """An index of the videos, without its snapshot (a search must read the database), made read-only."""
    result, hits = search(videos[0].parent, model, "--index", index_dir)
    assert result.exit_code == 0, result.output
    for snapshot in index_dir.glob("snapshot-*"):
        snapshot.unlink()
    make_read_only(index_dir)
    return hits


def test_no_update_searches_a_read_only_index(videos, tiny_vit_path, tmp_path):
    index_dir = tmp_path / "index"
    expected = read_only_index(videos, tiny_vit_path, index_dir)
    files = sorted(os.listdir(index_dir))
    try:
        child = read_only_cli("retrieve", videos[0].parent, "a square", "--model", tiny_vit_path, "--device", "cpu",
                              "--index", index_dir, "--json", "--no-update")  # fmt: skip
    finally:
        make_writable(index_dir)
    assert child.returncode == 0, child.stderr.decode()
    assert [hit["path"] for hit in json.loads(child.stdout)["hits"]] == expected
    assert sorted(os.listdir(index_dir)) == files


def test_updating_a_read_only_index_says_to_search_it_with_no_update(videos, tiny_vit_path, tmp_path):
    index_dir = tmp_path / "index"
    read_only_index(videos, tiny_vit_path, index_dir)
    try:
        child = read_only_cli("retrieve", videos[0].parent, "a square", "--model", tiny_vit_path, "--device", "cpu",
                              "--index", index_dir)  # fmt: skip
    finally:
        make_writable(index_dir)
    assert child.returncode == 2, child.stderr.decode()
    (line,) = child.stderr.decode().strip().splitlines()
    assert str(index_dir) in line and "--no-update" in line


# ---------------------------------------------------------------- NUL-separated paths (item 18)


def test_null_separates_paths_that_hold_newlines(tmp_path, tiny_vit_path):
    folder = tmp_path / "videos"
    written = add_videos(folder, ["two\nlines.mp4", "plain.mp4"])
    result = runner.invoke(app, ["retrieve", str(folder), "a square", "--model", str(tiny_vit_path), "-0"])
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes.endswith(b"\0")
    printed = result.stdout_bytes.split(b"\0")[:-1]
    assert sorted(printed) == sorted(os.fsencode(path) for path in written)


def test_null_and_json_together_are_refused(videos, tiny_vit_path):
    result = runner.invoke(app, ["retrieve", str(videos[0].parent), "q", "--model", str(tiny_vit_path), "-0", "--json"])
    assert result.exit_code == 2
    assert "--null" in error_line(result) and "--json" in error_line(result)


def test_only_a_read_only_database_falls_back_to_reading_the_file_as_immutable():
    """Where Python gives no SQLite code (3.10), the message decides; a busy database must not read stale."""
    from clipcli.store.index_db import _cannot_write

    assert _cannot_write(sqlite3.OperationalError("attempt to write a readonly database"))
    assert _cannot_write(sqlite3.OperationalError("unable to open database file"))
    assert not _cannot_write(sqlite3.OperationalError("database is locked"))
