"""SHA-1 of local files, remembered by (absolute path, size, mtime_ns) so an unchanged file is never read twice.

One SQLite file, `user_cache_dir("eotdlfs")/hashes.sqlite` (or `$EOTDLFS_CACHE_DIR/hashes.sqlite`).
Lookups are batched into few queries and new digests are written in one transaction, so
re-ingesting 10,000 files with one changed reads one file and costs a few milliseconds of SQL.
A cache that cannot be opened or written is not an error: files are then simply hashed.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Iterable, Iterator

import platformdirs

from eotdlfs.hashing import sha1_file

_LOOKUP_CHUNK = 500  # SQLite's default limit of host parameters is 999


def cache_dir() -> Path:
    override = os.environ.get("EOTDLFS_CACHE_DIR")
    return Path(override) if override else Path(platformdirs.user_cache_dir("eotdlfs"))


FileKey = tuple[str, int, int]  # absolute path, size, mtime_ns


class HashCache:
    """Digests of files keyed by (absolute path, size, mtime_ns); not shared between threads."""

    def __init__(self, path: Path | None = None):
        self.path = path or cache_dir() / "hashes.sqlite"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn: sqlite3.Connection | None = sqlite3.connect(self.path, timeout=10)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, sha1 TEXT)"
            )
        except (OSError, sqlite3.Error):
            self._conn = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _rows(self, paths: list[str], under: str | None) -> Iterator[tuple[str, int, int, str]]:
        assert self._conn is not None
        if under is not None:  # one range scan of the primary key: every path below UNDER
            yield from self._conn.execute(
                "SELECT path, size, mtime_ns, sha1 FROM hashes WHERE path >= ? AND path < ?",
                (under.rstrip("/") + "/", under.rstrip("/") + "0"))  # '0' sorts right after '/'
            return
        for i in range(0, len(paths), _LOOKUP_CHUNK):
            chunk = paths[i:i + _LOOKUP_CHUNK]
            yield from self._conn.execute(
                f"SELECT path, size, mtime_ns, sha1 FROM hashes WHERE path IN ({','.join('?' * len(chunk))})", chunk)

    def lookup(self, keys: Iterable[FileKey], under: str | None = None) -> dict[FileKey, str]:
        """The cached digests of those KEYS whose size and mtime still match (all below UNDER, if given)."""
        wanted = {k[0]: k for k in keys}
        found: dict[FileKey, str] = {}
        if self._conn is None:
            return found
        try:
            for path, size, mtime_ns, sha1 in self._rows(list(wanted), under):
                if wanted.get(path) == (path, size, mtime_ns):
                    found[wanted[path]] = sha1
        except sqlite3.Error:
            return {}
        return found

    def store(self, digests: dict[FileKey, str]) -> None:
        if self._conn is None or not digests:
            return
        try:
            with self._conn:
                self._conn.executemany(
                    "INSERT OR REPLACE INTO hashes (path, size, mtime_ns, sha1) VALUES (?, ?, ?, ?)",
                    [(p, s, m, h) for (p, s, m), h in digests.items()],
                )
        except sqlite3.Error:
            pass  # a cache that cannot be written only costs a re-hash next time

    def digests(self, keys: list[FileKey], under: str | None = None) -> dict[FileKey, str]:
        """The SHA-1 of every file of KEYS (all below the folder UNDER, if given): from the cache,
        else read and hashed (then remembered)."""
        known = self.lookup(keys, under)
        fresh = {k: sha1_file(Path(k[0])) for k in keys if k not in known}
        self.store(fresh)
        return {**known, **fresh}
