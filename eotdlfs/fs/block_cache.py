"""Content-addressed block store on disk: blocks of file bytes keyed by (SHA-1, block index).

Built on `diskcache` so the size limit, LRU eviction and crash safety come from a well-kept
library. Every block is stored as its own file (`disk_min_file_size=0`), so a reader gets an
open file and reads it with `os.pread`, which releases the GIL. Identical files in different
versions or records share blocks because the key is the content's checksum.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import BinaryIO

import diskcache

DEFAULT_BLOCK_SIZE = 1 << 20


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
        # Guarded by _lock: counters for `status`.
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def open_block(self, checksum: str, index: int) -> BinaryIO | None:
        """An open file holding the block, or None when it is not cached (counts a hit or miss)."""
        handle = self._cache.get(block_key(checksum, index), read=True)
        with self._lock:
            if handle is None:
                self.misses += 1
            else:
                self.hits += 1
        return handle

    def read_block(self, checksum: str, index: int) -> bytes | None:
        handle = self._cache.get(block_key(checksum, index), read=True)
        if handle is None:
            return None
        with handle:
            return handle.read()

    def __contains__(self, item: tuple[str, int]) -> bool:
        return block_key(*item) in self._cache

    def put(self, checksum: str, index: int, data: bytes) -> None:
        # A file-like value is written in 4 MiB chunks; bytes would be written line by line
        # (diskcache iterates a BytesIO), thousands of small writes per block.
        self._cache.set(block_key(checksum, index), io.BytesIO(data), read=True)

    def drop(self, checksum: str, count: int) -> None:
        """Forget the first COUNT blocks of CHECKSUM (after a failed verification)."""
        self.drop_blocks(checksum, range(count))

    def drop_blocks(self, checksum: str, indices) -> None:
        for index in indices:
            self._cache.delete(block_key(checksum, index))

    def volume(self) -> int:
        return self._cache.volume()

    @property
    def size_limit(self) -> int:
        return int(self._cache.size_limit)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"hits": self.hits, "misses": self.misses, "bytes_used": self.volume(),
                    "size_limit": self.size_limit, "block_size": self.block_size}

    def close(self) -> None:
        self._cache.close()
