"""Content-addressed block store on disk: blocks of file bytes keyed by (SHA-1, block index).

Built on `diskcache` so the size limit, LRU eviction and crash safety come from a well-kept
library. Every block is stored as its own file (`disk_min_file_size=0`), so a reader gets an
open file and reads it with `os.pread`, which releases the GIL. Identical files in different
versions or records share blocks because the key is the content's checksum.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path
from typing import BinaryIO

import diskcache

DEFAULT_BLOCK_SIZE = 1 << 20
# What a full or broken cache disk raises: OSError (ENOSPC) from block files, sqlite3 errors
# ('database or disk is full') from the index, diskcache.Timeout from a locked index.
CACHE_ERRORS = (OSError, sqlite3.Error, diskcache.Timeout)

log = logging.getLogger(__name__)


class _ViewReader:
    """`read(n)` over a buffer, returning memoryview slices (what diskcache writes from)."""

    def __init__(self, data: bytes | memoryview):
        self._view, self._at = memoryview(data), 0

    def read(self, size: int = -1) -> memoryview:
        end = len(self._view) if size < 0 else self._at + size
        chunk, self._at = self._view[self._at:end], min(end, len(self._view))
        return chunk


def block_key(checksum: str, index: int) -> str:
    return f"{checksum}:{index}"


class BlockCache:
    """Blocks of BLOCK_SIZE bytes (the last block of a file may be shorter) in DIRECTORY."""

    def __init__(self, directory: Path, size_limit: int, block_size: int = DEFAULT_BLOCK_SIZE):
        self.block_size = block_size
        self._cache = diskcache.Cache(
            str(directory),
            size_limit=size_limit,
            eviction_policy="least-recently-used",
            disk_min_file_size=0,
            cull_limit=16,
        )
        # One diskcache call at a time: threads queue here (waking at once) instead of in
        # SQLite's busy handler, which sleeps for milliseconds between retries.
        self._db = threading.Lock()
        # Guarded by _lock: counters for `status`.
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.write_errors = 0

    def open_block(self, checksum: str, index: int) -> BinaryIO | None:
        """An open file holding the block, or None when it is not cached (counts a hit or miss)."""
        handle = self._get(checksum, index)
        with self._lock:
            if handle is None:
                self.misses += 1
            else:
                self.hits += 1
        return handle

    def read_block(self, checksum: str, index: int) -> bytes | None:
        handle = self._get(checksum, index)
        if handle is None:
            return None
        with handle:
            return handle.read()

    def _get(self, checksum: str, index: int) -> BinaryIO | None:
        try:  # an LRU read also writes (the access time): it can fail on a full disk
            with self._db:
                return self._cache.get(block_key(checksum, index), read=True)
        except CACHE_ERRORS as exc:
            self._failed_write(exc)
            return None

    def __contains__(self, item: tuple[str, int]) -> bool:
        return block_key(*item) in self._cache  # a read: WAL readers never wait for writers

    def put(self, checksum: str, index: int, data: bytes | memoryview) -> bool:
        """Store a block; False when the cache cannot take it (disk full): the caller has the
        bytes anyway, so a full cache costs speed, never a read."""
        try:
            # A file-like value is written in chunks as it reads them (bytes would be written
            # line by line: diskcache iterates a BytesIO); memoryview slices cost no copy.
            with self._db:
                self._cache.set(block_key(checksum, index), _ViewReader(data), read=True)
        except CACHE_ERRORS as exc:
            self._failed_write(exc)
            return False
        return True

    def _failed_write(self, exc: BaseException) -> None:
        with self._lock:
            self.write_errors += 1
            first = self.write_errors == 1
        if first or self.write_errors % 1000 == 0:
            log.warning("cannot store blocks in the cache (%d so far): %s", self.write_errors, exc)

    def drop(self, checksum: str, count: int) -> None:
        """Forget the first COUNT blocks of CHECKSUM (after a failed verification)."""
        self.drop_blocks(checksum, range(count))

    def drop_blocks(self, checksum: str, indices) -> None:
        for index in indices:
            with self._db:
                self._cache.delete(block_key(checksum, index))

    def volume(self) -> int:
        return self._cache.volume()

    @property
    def size_limit(self) -> int:
        return int(self._cache.size_limit)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"hits": self.hits, "misses": self.misses, "write_errors": self.write_errors,
                    "bytes_used": self.volume(),
                    "size_limit": self.size_limit, "block_size": self.block_size}

    def close(self) -> None:
        self._cache.close()
