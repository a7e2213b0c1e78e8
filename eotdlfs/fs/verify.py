"""End-to-end SHA-1 checks of files as their blocks arrive.

A `FileVerifier` hashes a file's blocks in order: fresh blocks from the fetch that brought
them (no second read), earlier ones back from the cache. When the last block is hashed the
digest must equal the file's checksum, otherwise every block is dropped and the caller
gets `ContentMismatch` (EIO for the reader).
"""

from __future__ import annotations

import hashlib
import logging
import threading

from eotdlfs.fs.block_cache import BlockCache
from eotdlfs.fs.errors import ContentMismatch

log = logging.getLogger(__name__)


class FileVerifier:
    def __init__(self, checksum: str, block_count: int):
        # Set once.
        self.checksum = checksum
        self.block_count = block_count
        # Guarded by _lock.
        self._lock = threading.Lock()
        self._hasher = hashlib.sha1()
        self._next = 0

    @property
    def done(self) -> bool:
        return self._next >= self.block_count

    def advance(self, cache: BlockCache, fresh: dict[int, bytes]) -> None:
        """Hash every block now available in order; raise ContentMismatch at a bad end."""
        with self._lock:
            while self._next < self.block_count:
                data = fresh.get(self._next)
                if data is None:
                    data = cache.read_block(self.checksum, self._next)
                if data is None:
                    return
                self._hasher.update(data)
                self._next += 1
            digest = self._hasher.hexdigest()
        if digest != self.checksum:
            cache.drop(self.checksum, self.block_count)
            log.error("checksum mismatch for %s: got %s; dropped its cached blocks",
                      self.checksum, digest)
            raise ContentMismatch(f"content {self.checksum} hashed to {digest}")


class Verifiers:
    """The verifiers of files being fetched, one per checksum, forgotten once done."""

    def __init__(self, cache: BlockCache):
        self._cache = cache
        self._lock = threading.Lock()
        self._active: dict[str, FileVerifier] = {}

    def blocks_arrived(self, checksum: str, block_count: int, fresh: dict[int, bytes]) -> None:
        with self._lock:
            verifier = self._active.get(checksum)
            if verifier is None:
                verifier = self._active[checksum] = FileVerifier(checksum, block_count)
        try:
            verifier.advance(self._cache, fresh)
        finally:
            if verifier.done:
                with self._lock:
                    if self._active.get(checksum) is verifier:
                        del self._active[checksum]
