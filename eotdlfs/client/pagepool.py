"""Page-aligned memory for large response bodies, mapped once and used again.

A fresh anonymous mapping per range costs its page faults and the kernel's zeroing of every
page it hands out, then an unmap; a cold sequential read maps a GiB this way. The memory of a
body whose last view is gone goes back to a small pool instead, and the next body of its size
is read into pages already there. Only KEEP_BYTES wait in the pool, so an idle mount holds at
most that much more than before.

The caller's view is of a ctypes array over the mapping: every slice of it keeps that array
alive, and the array's end (all views gone) is the moment its pages may be handed out again.
"""

from __future__ import annotations

import ctypes
import mmap
import threading
import weakref

HUGE_PAGE = 2 << 20  # capacities are multiples: a body's pages are whole huge pages where the kernel has them
KEEP_BYTES = 16 << 20


class PagePool:
    """Page-aligned buffers, those given back kept for the next take of their capacity (KEEP_BYTES at most)."""

    def __init__(self, keep_bytes: int = KEEP_BYTES):
        self.keep_bytes = keep_bytes
        self._lock = threading.Lock()
        # guarded by _lock: capacity -> mappings no view uses, and their total
        self._free: dict[int, list[mmap.mmap]] = {}
        self._free_bytes = 0

    def take(self, size: int) -> memoryview:
        """SIZE bytes of page-aligned memory (contents undefined), handed out again once no view of it is left."""
        capacity = -(-size // HUGE_PAGE) * HUGE_PAGE
        with self._lock:
            kept = self._free.get(capacity)
            pages = kept.pop() if kept else None
            if pages is not None:
                self._free_bytes -= capacity
        if pages is None:
            # Private (a shared anonymous mapping is shmem, whose page faults cost more), in huge
            # pages where the kernel has them: 4 page faults per 8 MiB instead of 2,048.
            pages = mmap.mmap(-1, capacity, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            if hasattr(mmap, "MADV_HUGEPAGE"):
                pages.madvise(mmap.MADV_HUGEPAGE)
        holder = (ctypes.c_char * capacity).from_buffer(pages)
        weakref.finalize(holder, self._give_back, pages, capacity).atexit = False
        return memoryview(holder).cast("B")[:size]

    def _give_back(self, pages: mmap.mmap, capacity: int) -> None:
        # Called as the array ends, in whichever thread let go of its last view; a mapping not
        # kept is unmapped once the array's own hold on it is released (right after this).
        with self._lock:
            if self._free_bytes + capacity <= self.keep_bytes:
                self._free.setdefault(capacity, []).append(pages)
                self._free_bytes += capacity
