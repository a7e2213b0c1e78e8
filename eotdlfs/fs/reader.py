"""Reading byte ranges of repository files through the block cache, with read-ahead.

`ContentReader.read` is the whole cold and warm read path: advise the handle's read-ahead
window, queue read-ahead fetches, then copy the requested range out of cached blocks with
`os.pread` (or out of the bytes of a fetch the reader just waited for).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import BinaryIO, Union

from eotdlfs.fs.errors import ContentMismatch
from eotdlfs.fs.fetcher import BlockFetcher, Content
from eotdlfs.fs.readahead import ReadAheadWindow

BlockSource = Union[BinaryIO, memoryview]  # an open cache file, or the bytes of a fetch
KEPT_SOURCES = 2  # a fetched block may pin its whole request (8 MiB) while kept


class OpenFile:
    """One open file: its read-ahead state and the few blocks it read last."""

    def __init__(self, content: Content, window: ReadAheadWindow, opened: int):
        # Set once.
        self.content = content
        self.opened = opened  # fetcher serial at open: a checksum failure after it fails this handle
        # Guarded by lock.
        self.lock = threading.Lock()
        self.window = window
        self.ahead_until = 0
        self.sources: OrderedDict[int, BlockSource] = OrderedDict()

    def keep_locked(self, index: int, source: BlockSource) -> None:
        self.sources[index] = source
        while len(self.sources) > KEPT_SOURCES:
            _, old = self.sources.popitem(last=False)
            if not isinstance(old, memoryview):
                old.close()

    def close(self) -> None:
        with self.lock:
            for source in self.sources.values():
                if not isinstance(source, memoryview):
                    source.close()
            self.sources.clear()


def _slice(source: BlockSource, lo: int, hi: int) -> bytes:
    if isinstance(source, memoryview):
        return bytes(source[lo:hi])
    return os.pread(source.fileno(), hi - lo, lo)


class ContentReader:
    def __init__(self, fetcher: BlockFetcher, first_window: int = 2 << 20,
                 max_window: int = 64 << 20, demand_timeout: float = 120.0):
        self.fetcher = fetcher
        self.cache = fetcher.cache
        self.block_size = fetcher.block_size
        self.first_window = first_window
        self.max_window = max_window
        self.demand_timeout = demand_timeout

    def open(self, content: Content) -> OpenFile:
        return OpenFile(content, ReadAheadWindow(self.first_window, self.max_window), self.fetcher.serial())

    def read(self, handle: OpenFile, offset: int, size: int) -> bytes:
        content, bs = handle.content, self.block_size
        end = min(offset + size, content.size)
        if self.fetcher.failed_since(content.checksum, handle.opened):
            # Read-ahead found the file corrupt while this reader was still on its way.
            raise ContentMismatch(f"{content.entry.path} failed its SHA-1 check")
        if offset >= end:
            return b""
        self._read_ahead(handle, offset, end)
        parts = []
        for index in range(offset // bs, (end - 1) // bs + 1):
            lo, hi = max(offset, index * bs) - index * bs, min(end, (index + 1) * bs) - index * bs
            parts.append(self._block_slice(handle, index, lo, hi))
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _read_ahead(self, handle: OpenFile, offset: int, end: int) -> None:
        bs = self.block_size
        with handle.lock:
            start, stop = handle.window.advise(offset, end - offset)
            if stop <= start:
                handle.ahead_until = 0
                return
            first = max(start // bs, handle.ahead_until)
            last = -(-stop // bs)
        if last > first:
            reached = self.fetcher.read_ahead(handle.content, first, last)
            with handle.lock:
                handle.ahead_until = max(handle.ahead_until, reached)

    def _block_slice(self, handle: OpenFile, index: int, lo: int, hi: int) -> bytes:
        with handle.lock:
            source = handle.sources.get(index)
            if source is not None:
                return _slice(source, lo, hi)
        source = self.cache.open_block(handle.content.checksum, index)
        if source is None:
            future = self.fetcher.demand(handle.content, index)
            source = future.result(timeout=self.demand_timeout)
        with handle.lock:
            handle.keep_locked(index, source)
            return _slice(source, lo, hi)
