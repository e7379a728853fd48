"""Opening an index's SQLite database, and saying in one line what went wrong with it.

SQLite's errors become BadInputErrors naming the database and how to go on:
a damaged file is rebuilt with `--reindex`, a full disk keeps what was
committed, a read-only index is searched with `--no-update`.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable
from pathlib import Path

from clipcli.errors import BadInputError

# SQLite primary result codes (the sqlite3.SQLITE_* constants of Python 3.11+).
_READONLY, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 8, 11, 13, 14, 26

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


def error_code(err: sqlite3.Error) -> int:
    """SQLite's primary result code for an error (0 where Python does not say: before 3.11)."""
    return getattr(err, "sqlite_errorcode", 0) & 0xFF


def database_error(err: sqlite3.Error, db_path: Path) -> BadInputError:
    """The one-line error for a failing index database, saying how to go on."""
    code = error_code(err)
    if code in (_CORRUPT, _NOTADB):
        advice = "the index is damaged; rebuild it with `clipcli retrieve --reindex` (or delete the folder)"
    elif code == _FULL:
        advice = "the disk is full; the index keeps what was committed before, free some space and rerun"
    elif code == _READONLY:
        advice = "the index cannot be written here; search it as it is with --no-update"
    else:
        advice = "cannot use the index database"
    return BadInputError(f"{advice} ({err})", db_path)


def reports_database_errors(method: Callable) -> Callable:
    """Turn SQLite errors of an index method (its object has `db_path`) into one-line errors naming the database."""

    @functools.wraps(method)
    def checked(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as err:
            raise database_error(err, self.db_path) from None

    return checked


def _cannot_write(err: sqlite3.OperationalError) -> bool:
    """The error of a read-only database or folder (by its message where Python gives no code: before 3.11)."""
    code = error_code(err)
    if code:
        return code in (_READONLY, _CANTOPEN)
    message = str(err).lower()
    return "readonly" in message or "read-only" in message or "unable to open" in message


def connect_read_only(db_path: Path) -> sqlite3.Connection:
    """A connection that writes nothing, not even SQLite's WAL index.

    `mode=ro` needs the `-shm` file beside the database or the right to
    create it; where neither holds (a read-only folder), `immutable=1` reads
    the database file as it is.
    """
    uri = db_path.as_uri()
    db = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None, timeout=60.0)
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError as err:
        db.close()
        if not _cannot_write(err):
            raise
        db = sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, isolation_level=None)
    return db


def connect(db_path: Path) -> sqlite3.Connection:
    """The database, created if need be, in WAL mode."""
    db = sqlite3.connect(db_path, isolation_level=None, timeout=60.0)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
    except BaseException:
        db.close()
        raise
    return db


def find_damage(db_path: Path) -> str | None:
    """What SQLite finds wrong in a database's pages, or None when they are sound."""
    db = sqlite3.connect(db_path, isolation_level=None, timeout=60.0)
    try:
        problems = db.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as err:
        if error_code(err) in (_CORRUPT, _NOTADB):
            return str(err)
        raise database_error(err, db_path) from None
    finally:
        db.close()
    return None if problems == [("ok",)] else problems[0][0]
