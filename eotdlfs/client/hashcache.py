"""SHA-1 of local files, remembered by (absolute path, size, mtime_ns, inode, ctime_ns) so an unchanged file is
never read twice.

Size and mtime alone are what a user or a tool can set back: `cp -p`, `touch -r`, `tar x` or a
pipeline fixing its outputs' times (SOURCE_DATE_EPOCH) put different bytes of the same size behind the
same mtime, and the ingest took the old digest: "nothing changed", the old bytes kept published. The
inode and the ctime, which no one sets, change with them (as in git's index); a `chmod` or a rename
costs a re-hash.

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

from eotdlfs.cachedir import make_private, user_cache_dir
from eotdlfs.hashing import sha1_file

_LOOKUP_CHUNK = 500  # SQLite's default limit of host parameters is 999
_COLUMNS = "path, size, mtime_ns, ino, ctime_ns, sha1"


def private_folder(folder: Path) -> Path:
    """Make FOLDER (and missing parents); the cache dir (closed if it was open) and folders made
    below it are 0700.

    They hold the names of files ingested (drafts, hashes, STAC documents) and locks; with the
    usual umask 022 an `ingest` run before any mount left them readable by every user.
    """
    root = user_cache_dir()
    if folder == root or root in folder.parents:
        make_private(root)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


FileKey = tuple[str, int, int, int, int]  # absolute path, size, mtime_ns, inode, ctime_ns


def file_key(path: str, st: os.stat_result) -> FileKey:
    """The key of the file at PATH (absolute) with stat ST."""
    return path, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns


class HashCache:
    """Digests of files keyed by `file_key`; not shared between threads."""

    def __init__(self, path: Path | None = None):
        self.path = path or user_cache_dir() / "hashes.sqlite"
        try:
            private_folder(self.path.parent)
            self._conn: sqlite3.Connection | None = sqlite3.connect(self.path, timeout=10)
            self._conn.execute("PRAGMA journal_mode=WAL")
            # `file_hashes`: keys of the five fields (the table of three, `hashes`, is left unread)
            self._conn.execute("CREATE TABLE IF NOT EXISTS file_hashes (path TEXT PRIMARY KEY, size INTEGER,"
                               " mtime_ns INTEGER, ino INTEGER, ctime_ns INTEGER, sha1 TEXT)")
        except (OSError, sqlite3.Error):
            self._conn = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _rows(self, paths: list[str], under: str | None) -> Iterator[tuple[str, int, int, int, int, str]]:
        assert self._conn is not None
        if under is not None:  # one range scan of the primary key: every path below UNDER
            yield from self._conn.execute(
                f"SELECT {_COLUMNS} FROM file_hashes WHERE path >= ? AND path < ?",
                (under.rstrip("/") + "/", under.rstrip("/") + "0"))  # '0' sorts right after '/'
            return
        for i in range(0, len(paths), _LOOKUP_CHUNK):
            chunk = paths[i:i + _LOOKUP_CHUNK]
            yield from self._conn.execute(
                f"SELECT {_COLUMNS} FROM file_hashes WHERE path IN ({','.join('?' * len(chunk))})", chunk)

    def lookup(self, keys: Iterable[FileKey], under: str | None = None) -> dict[FileKey, str]:
        """The cached digests of those KEYS whose stat fields all still match (all below UNDER, if given)."""
        wanted = {k[0]: k for k in keys}
        found: dict[FileKey, str] = {}
        if self._conn is None:
            return found
        try:
            for *key, sha1 in self._rows(list(wanted), under):
                if wanted.get(key[0]) == tuple(key):
                    found[wanted[key[0]]] = sha1
        except sqlite3.Error:
            return {}
        return found

    def store(self, digests: dict[FileKey, str]) -> None:
        if self._conn is None or not digests:
            return
        try:
            with self._conn:
                self._conn.executemany(
                    f"INSERT OR REPLACE INTO file_hashes ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                    [(*key, sha1) for key, sha1 in digests.items()],
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
