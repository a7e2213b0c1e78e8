"""End-to-end SHA-1 checks of files as their blocks arrive.

A `FileVerifier` hashes a file's blocks in order: fresh blocks from the fetch that brought
them, earlier ones from memory (`RecentBlocks`) or, failing that, back from the cache
(checked against their CRC32C; a damaged one is a miss). The file's final block is the
gate: it enters the cache, and its readers get it, only once the whole file hashed right.
When it arrives before the blocks ahead of it (parallel fetches finish out of order) it is
held here until they land. A mismatch fails the readers with
`ContentMismatch` (EIO); the fetcher then drops every block of the file. A file read
randomly, with earlier blocks neither cached nor being fetched, is not held: nobody is
reading it end to end.

Locks. `FileVerifier.lock` guards a file's hash state, its stash and its held final block;
`Verifiers._lock` guards the map of verifiers and is a leaf. Under a verifier's lock the
fetcher's lock, the RecentBlocks lock and the BlockCache's locks may each be taken briefly,
one at a time; none of them is ever held when a verifier's lock is taken.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import threading
from collections import OrderedDict
from concurrent.futures import Future
from typing import Callable

from eotdlfs.fs.block_cache import BlockCache
from eotdlfs.fs.recent import RecentBlocks
from eotdlfs.repository import ContentMismatch

log = logging.getLogger(__name__)


class FileVerifier:
    def __init__(self, checksum: str, block_count: int, recent: RecentBlocks):
        # Set once.
        self.checksum = checksum
        self.recent = recent
        self.block_count = block_count
        self.final = block_count - 1
        # Guarded by lock.
        self.lock = threading.Lock()
        self._hasher = hashlib.sha1()
        self._next = 0
        self.held: tuple[memoryview, Future] | None = None
        self.finished = False
        # Set without the lock by a fetch that stored blocks while someone else was hashing;
        # `stash` keeps the bytes of such blocks until hashed, so they are not read back.
        self.pending = False
        self.stash: dict[int, memoryview] = {}

    @property
    def next_index(self) -> int:
        return self._next

    def advance_locked(self, cache: BlockCache, fresh: dict[int, memoryview],
                       available: Callable[[int], bool]) -> bool:
        """Hash what can be hashed in order. True once the whole file hashed right;
        ContentMismatch if it hashed wrong; False while blocks are missing. If a missing
        block is not on its way (`available` says no), the held final block is let go."""
        while self._next < self.block_count:
            data = fresh.get(self._next)
            if data is None:
                data = self.stash.pop(self._next, None)
            if data is None and self._next == self.final and self.held is not None:
                data = self.held[0]
            if data is None:
                data = self.recent.get(self.checksum, self._next) or cache.read_block(self.checksum, self._next)
            if data is None:
                if not available(self._next):  # nobody is reading this file in order
                    self.release_held_locked(cache)
                    self.stash.clear()
                return False
            self._hasher.update(data)
            self.stash.pop(self._next, None)
            self._next += 1
        self.finished = True
        self.stash.clear()
        digest = self._hasher.hexdigest()
        if digest != self.checksum:
            error = ContentMismatch(f"content {self.checksum} hashed to {digest}")
            log.error("checksum mismatch for %s: got %s; its cached blocks are dropped", self.checksum, digest)
            self.fail_held_locked(error)
            raise error
        self.release_held_locked(cache)
        return True

    def fail_held_locked(self, error: BaseException) -> None:
        if self.held is not None:
            self.held[1].set_exception(error)
            self.held = None

    def release_held_locked(self, cache: BlockCache) -> None:
        """Put the held final block in the cache and hand it to its readers."""
        if self.held is not None:
            data, future = self.held
            self.held = None
            cache.put(self.checksum, self.final, data)
            future.set_result(data)


REMEMBERED_DONE = 256  # files hashed to their end lately, for `hashed_until`


class Verifiers:
    """The verifiers of files being fetched, one per checksum, forgotten once finished."""

    def __init__(self, recent: RecentBlocks):
        self._recent = recent
        self._lock = threading.Lock()
        self._active: dict[str, FileVerifier] = {}
        self._done: OrderedDict[str, None] = OrderedDict()

    def get(self, checksum: str, block_count: int) -> FileVerifier:
        with self._lock:
            verifier = self._active.get(checksum)
            if verifier is None or verifier.finished:
                verifier = self._active[checksum] = FileVerifier(checksum, block_count, self._recent)
            return verifier

    def peek(self, checksum: str) -> FileVerifier | None:
        with self._lock:
            return self._active.get(checksum)

    def hashed_until(self, checksum: str) -> int:
        """The index below which CHECKSUM's blocks are hashed (0 before hashing began; the
        largest int once it finished lately)."""
        with self._lock:
            verifier = self._active.get(checksum)
            if verifier is not None and not verifier.finished:
                return verifier.next_index
            return sys.maxsize if checksum in self._done else 0

    def forget(self, verifier: FileVerifier) -> None:
        with self._lock:
            if self._active.get(verifier.checksum) is verifier:
                del self._active[verifier.checksum]
            if verifier.finished:
                self._done[verifier.checksum] = None
                self._done.move_to_end(verifier.checksum)
                while len(self._done) > REMEMBERED_DONE:
                    self._done.popitem(last=False)
