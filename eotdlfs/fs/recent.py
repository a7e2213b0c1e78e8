"""Blocks fetched a moment ago, kept in memory until their reader gets there.

Read-ahead fetches blocks before they are read; the block cache writes them to disk without
keeping them in the page cache (O_DIRECT), so a reader that had to read them back would pay
a disk read and a fresh page per 4 KiB. Here they wait in memory, bounded in bytes (the
oldest go first, to the disk copy), and a sequential reader takes each block out as it
finishes it: the kernel's page cache of the mounted file has those bytes by then.

A block is a slice of the buffer its range request was read into, and keeps all of that
buffer alive: the bound counts whole buffers, once each, not the slices.

A block read to its end before the file's hashing got to it (a reader copies the bytes of a
request as they arrive, hashing waits for its end) is kept for the hashing, marked read, and
let go once hashed (`discard_read`); left to the bound, such blocks pinned up to 48 MiB of
request buffers the reader was done with, a third of the mount's memory while streaming.

Locks. `_lock` guards the blocks, their buffers, the byte count and the read marks; it is a
leaf (nothing else is called while it is held).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Iterable, Mapping


class RecentBlocks:
    def __init__(self, limit_bytes: int):
        self.limit_bytes = limit_bytes
        # Guarded by _lock.
        self._lock = threading.Lock()
        self._blocks: OrderedDict[tuple[str, int], memoryview] = OrderedDict()
        self._buffers: dict[int, list[int]] = {}  # id of a block's buffer -> [its size, blocks kept]
        self._bytes = 0
        self._read: set[tuple[str, int]] = set()  # blocks read to their end (kept or coming), not hashed yet

    def add(self, checksum: str, blocks: Mapping[int, memoryview]) -> None:
        with self._lock:
            for index, data in blocks.items():
                self._pop_locked((checksum, index))
                self._blocks[(checksum, index)] = data
                buffer = _buffer(data)
                held = self._buffers.setdefault(id(buffer), [memoryview(buffer).nbytes, 0])
                if held[1] == 0:
                    self._bytes += held[0]
                held[1] += 1
            while self._bytes > self.limit_bytes and self._blocks:
                self._pop_locked(next(iter(self._blocks)))

    def get(self, checksum: str, index: int) -> memoryview | None:
        with self._lock:
            return self._blocks.get((checksum, index))

    def __contains__(self, item: tuple[str, int]) -> bool:
        with self._lock:
            return item in self._blocks

    def discard(self, checksum: str, indices: Iterable[int]) -> None:
        with self._lock:
            for index in indices:
                self._pop_locked((checksum, index))

    def finished(self, checksum: str, indices: Iterable[int], hashed_until: int, coming: Iterable[int]) -> None:
        """A reader read these blocks to their end: forget those below HASHED_UNTIL (hashed
        already), mark the others read, for `discard_read`: those kept, and those COMING (being
        fetched: a reader copies a request's bytes as they arrive, before they are kept here)."""
        coming = set(coming)
        with self._lock:
            for index in indices:
                if index < hashed_until:
                    self._pop_locked((checksum, index))
                elif (checksum, index) in self._blocks or index in coming:
                    self._read.add((checksum, index))

    def discard_read(self, checksum: str, hashed_until: int) -> None:
        """Forget the blocks of CHECKSUM marked read that are now hashed (below HASHED_UNTIL)."""
        with self._lock:
            for key in [key for key in self._read if key[0] == checksum and key[1] < hashed_until]:
                self._read.discard(key)
                self._pop_locked(key)

    def drop(self, checksum: str) -> None:
        """Forget every block of CHECKSUM (the file failed its checksum)."""
        with self._lock:
            self._read = {key for key in self._read if key[0] != checksum}
            for key in [key for key in self._blocks if key[0] == checksum]:
                self._pop_locked(key)

    def _pop_locked(self, key: tuple[str, int]) -> None:
        old = self._blocks.pop(key, None)
        if old is None:
            return
        self._read.discard(key)
        key = id(_buffer(old))
        held = self._buffers[key]
        held[1] -= 1
        if held[1] == 0:
            self._bytes -= held[0]
            del self._buffers[key]


def _buffer(view: memoryview) -> object:
    """What VIEW is a slice of (itself when it has no exporter)."""
    return view.obj if view.obj is not None else view
