"""Reads of a block back from the disk cache, shared by the readers that ask for it at once.

The kernel asks for a block in several parallel requests: one disk read and check serves them
all. `_lock` guards the map of reads under way and is a leaf.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future

from eotdlfs.fs.block_cache import BlockCache


class SharedLoads:
    def __init__(self, cache: BlockCache):
        self.cache = cache
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, int], Future] = {}

    def load(self, checksum: str, index: int) -> memoryview | None:
        """Block INDEX read back from the disk cache (checked), or None; a read of the same block
        already under way is waited for instead of repeated."""
        with self._lock:
            loading = self._loading.get((checksum, index))
            mine = loading is None
            if mine:
                loading = self._loading[(checksum, index)] = Future()
        if not mine:
            return loading.result()
        try:
            block = self.cache.load_block(checksum, index)
            loading.set_result(block)
            return block
        except BaseException as exc:
            loading.set_exception(exc)
            raise
        finally:
            with self._lock:
                del self._loading[(checksum, index)]
