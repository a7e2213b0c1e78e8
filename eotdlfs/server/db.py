"""The server's SQLite database: schema, one connection per thread, and write transactions.

WAL mode lets downloads read while an ingest writes. Writes are serialized by one
process-wide lock and run in `BEGIN IMMEDIATE`, so "next version = max + 1" and
"next file version = latest + 1" can never race between uvicorn's worker threads.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

DB_FILE = "repository.db"

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    uid TEXT NOT NULL,
    name TEXT NOT NULL,
    authors TEXT NOT NULL,          -- JSON list
    source TEXT NOT NULL,
    license TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    files_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (kind, name)
);
CREATE TABLE IF NOT EXISTS versions (
    record_id TEXT NOT NULL REFERENCES records(id),
    version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    draft INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (record_id, version)
);
-- One row per (path, file version); its bytes are the blob named by checksum.
CREATE TABLE IF NOT EXISTS file_versions (
    record_id TEXT NOT NULL REFERENCES records(id),
    path TEXT NOT NULL,
    file_version INTEGER NOT NULL,
    checksum TEXT NOT NULL,
    size INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (record_id, path, file_version)
);
-- Which file version of each path a record version contains (at most one per path).
CREATE TABLE IF NOT EXISTS version_files (
    record_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    path TEXT NOT NULL,
    file_version INTEGER NOT NULL,
    PRIMARY KEY (record_id, version, path)
);
-- The sum of the sizes of a version's files, kept by every write to version_files, so listing
-- records does not sum every file of every version.
CREATE TABLE IF NOT EXISTS version_sizes (
    record_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (record_id, version)
);
CREATE TABLE IF NOT EXISTS uploads (
    upload_id TEXT PRIMARY KEY,
    record_id TEXT NOT NULL,
    uid TEXT NOT NULL,
    path TEXT NOT NULL,
    file_version INTEGER NOT NULL,
    checksum TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash TEXT PRIMARY KEY,
    uid TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"""


class Database:
    """SQLite at ROOT/repository.db, safe to use from any thread."""

    def __init__(self, root: Path):
        self.path = Path(root) / DB_FILE
        self._local = threading.local()
        self._write_lock = threading.Lock()
        with self._write_lock:
            conn = self.conn()
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)
            _add_version_sizes(conn)

    def conn(self) -> sqlite3.Connection:
        """This thread's connection (autocommit; transactions are explicit)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA synchronous=FULL")  # a 200 means the rows survive a power loss too
            self._local.conn = conn
        return conn

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read snapshot: several queries see one state, whatever commits meanwhile."""
        conn = self.conn()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all its statements land together or not at all."""
        with self._write_lock:
            conn = self.conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")



def _add_version_sizes(conn: sqlite3.Connection) -> None:
    """Give every version without a stored size its size (databases made before sizes were stored)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "INSERT INTO version_sizes (record_id, version, size)"
            " SELECT v.record_id, v.version, (SELECT COALESCE(SUM(fv.size), 0) FROM version_files vf"
            " JOIN file_versions fv ON fv.record_id = vf.record_id AND fv.path = vf.path"
            " AND fv.file_version = vf.file_version WHERE vf.record_id = v.record_id AND vf.version = v.version)"
            " FROM versions v WHERE NOT EXISTS (SELECT 1 FROM version_sizes s"
            " WHERE s.record_id = v.record_id AND s.version = v.version)")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
