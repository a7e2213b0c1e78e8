"""Page-aligned mappings for range bodies, used again once nothing holds a view of them.

A fresh 8 MiB anonymous mapping per range costs the kernel a zeroed page for every byte
before the socket's bytes overwrite it (clear_page and its page faults were about a tenth
of a cold sequential read's CPU in the mount, `perf` on 2026-12-01). A mapping is free
again when no memoryview of it is left: the readers, the recent blocks, the hashing and
the block cache all hold their bytes as memoryviews of it, and each memoryview (through
the buffer it shares with its slices) holds a reference to the mapping, so its reference
count says whether anyone still reads it. A mapping still referenced is never handed out,
so bytes in use are never overwritten; when every kept mapping is in use a fresh one is
made, and the memory it takes is given back when its last view goes. A pool that goes
`IDLE_S` seconds without a take gives its free mappings back (one timer per burst of
reads, none on an idle mount), so a mount that stopped reading holds none of them.

Locks. `PagePool._lock` guards the kept mappings, the time of the last take and the timer,
and is a leaf.
"""

from __future__ import annotations

import mmap
import sys
import threading
import time


def _refs_when_free() -> int:
    """The reference count of a mapping nobody else holds, seen as `take` and `_trim` see
    theirs (in a loop over a list): the list, the loop's name and getrefcount's argument on
    CPython 3.11; measured, not assumed, since interpreters count borrowed names differently."""
    kept, count = [mmap.mmap(-1, mmap.PAGESIZE)], 0
    for pages in kept:
        count = sys.getrefcount(pages)
    return count


_FREE_REFS = _refs_when_free()
IDLE_S = 2.0


def fresh_pages(size: int) -> mmap.mmap:
    """A new private anonymous mapping of SIZE bytes (a shared one is shmem, whose page
    faults cost more), in huge pages where the kernel has them: 4 page faults per 8 MiB
    range instead of 2,048."""
    pages = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        pages.madvise(mmap.MADV_HUGEPAGE)
    return pages


class PagePool:
    """Up to KEEP mappings of SIZE bytes, each handed out again once no view of it is left."""

    def __init__(self, size: int, keep: int):
        self.size = size
        self.keep = keep
        # Guarded by _lock.
        self._lock = threading.Lock()
        self._kept: list[mmap.mmap] = []
        self._last_take = 0.0
        self._timer: threading.Timer | None = None

    def take(self) -> memoryview:
        """SIZE bytes of page-aligned memory nobody else holds (their old bytes left in them)."""
        with self._lock:
            self._last_take = time.monotonic()
            if self._timer is None:
                self._timer = self._start_timer(IDLE_S)
            for pages in self._kept:
                if sys.getrefcount(pages) == _FREE_REFS:
                    return memoryview(pages)
            pages = fresh_pages(self.size)
            if len(self._kept) < self.keep:
                self._kept.append(pages)
            return memoryview(pages)

    def kept(self) -> int:
        """How many mappings the pool holds, free or in use."""
        with self._lock:
            return len(self._kept)

    def _start_timer(self, delay: float) -> threading.Timer:
        timer = threading.Timer(delay, self._trim)
        timer.daemon = True
        timer.start()
        return timer

    def _trim(self) -> None:
        """Give back the free mappings once no take came for IDLE_S seconds."""
        with self._lock:
            idle = time.monotonic() - self._last_take
            if idle < IDLE_S:
                self._timer = self._start_timer(IDLE_S - idle)
                return
            self._timer = None
            kept = []
            for pages in self._kept:
                if sys.getrefcount(pages) == _FREE_REFS:
                    pages.close()  # nothing holds a view: the memory goes back now
                else:
                    kept.append(pages)
            self._kept = kept
