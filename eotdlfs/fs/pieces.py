"""A seeking reader's bytes, fetched as its reads come, in small aligned pieces.

A read far from its handle's last one (`ReadAheadWindow.seeking`) of a block neither cached
nor being fetched gets no whole block and no read-ahead: the pieces of PIECE_SIZE bytes it
spans are fetched in one range request, as GDAL fetches one tile of a Cloud-Optimized
GeoTIFF, and kept in memory (bounded, oldest out first) for the reads next to it; the
kernel keeps the pages it was given. A whole 1 MiB block (with the read-ahead that a
sequential run earns) would fetch twice the bytes of a 512 KiB tile and make the reader wait
for them.

Pieces never enter the block cache nor the file's running SHA-1: the end-to-end check is of
whole-file reads, which do not seek, and the reader never takes a file's final block in
pieces, so the final block still waits for the file's checksum as before. Pieces of a file
that failed its checksum after they were fetched are dropped, not served.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

from eotdlfs.fs.fetcher import BlockFetcher, Content, StaleFetch, _runs
from eotdlfs.fs.recent import RecentBlocks

log = logging.getLogger(__name__)

PIECE_SIZE = 64 << 10
KEPT_BYTES = 32 << 20
LONGEST_REQUEST = 32  # pieces: 2 MiB


@dataclass
class _Task:
    content: Content
    first: int
    futures: list[Future]
    serial: int


class PieceFetcher:
    def __init__(self, fetcher: BlockFetcher, piece_size: int = PIECE_SIZE, kept_bytes: int = KEPT_BYTES,
                 workers: int = 4):
        # Set once.
        self.fetcher = fetcher
        self.piece_size = piece_size
        # Guarded by _lock.
        self._lock = threading.Lock()
        self._kept = RecentBlocks(kept_bytes)  # (checksum, piece number) -> bytes
        self._inflight: dict[tuple[str, int], Future] = {}
        self._valid_since: dict[str, int] = {}  # checksum -> serial after which kept pieces were fetched
        # Worker threads, so a reader waits for a silent server no longer than its own deadline.
        self._tasks: queue.Queue = queue.Queue()
        self._threads = [threading.Thread(target=self._work, name=f"fetch-piece-{i}", daemon=True)
                         for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def read_into(self, content: Content, opened: int, offset: int, target: memoryview, deadline: float) -> None:
        """Fill TARGET with CONTENT's bytes from OFFSET (all within the file), fetching the
        pieces it spans that are neither kept nor being fetched; waits until DEADLINE."""
        size, checksum = self.piece_size, content.checksum
        first, last = offset // size, (offset + len(target) - 1) // size
        futures: dict[int, Future] = {}
        mine: list[int] = []
        with self._lock:
            self.fetcher.check_not_failed(content, opened)
            self._forget_failed_locked(checksum)
            serial = self.fetcher.serial()
            for number in range(first, last + 1):
                future = self._inflight.get((checksum, number))
                if future is None:
                    future = Future()
                    data = self._kept.get(checksum, number)
                    if data is not None:
                        future.set_result(data)
                    else:
                        self._inflight[(checksum, number)] = future
                        mine.append(number)
                futures[number] = future
        for run in _runs(mine, LONGEST_REQUEST):
            self._tasks.put(_Task(content, run[0], [futures[n] for n in run], serial))
        for number, future in futures.items():
            data = future.result(timeout=max(0.0, deadline - time.monotonic()))
            lo = max(offset, number * size)
            hi = min(offset + len(target), number * size + len(data))
            target[lo - offset:hi - offset] = data[lo - number * size:hi - number * size]

    def close(self) -> None:
        for _ in self._threads:
            self._tasks.put(None)

    def _forget_failed_locked(self, checksum: str) -> None:
        """Drop CHECKSUM's kept pieces if the file failed its checksum since they were fetched."""
        since = self._valid_since.get(checksum)
        if since is not None and self.fetcher.failed_since(checksum, since):
            self._kept.drop(checksum)
            del self._valid_since[checksum]

    def _work(self) -> None:
        while (task := self._tasks.get()) is not None:
            self._run(task)

    def _run(self, task: _Task) -> None:
        content, size = task.content, self.piece_size
        checksum, count = content.checksum, len(task.futures)
        start = task.first * size
        length = min(count * size, content.size - start)
        try:
            data = self.fetcher.repo.read_range(content.record, content.entry, start, length)
            if len(data) != length:
                raise OSError(5, f"short read of {content.entry.path}: {len(data)} of {length} bytes")
            self.fetcher.stats.count_fetch(len(data))
            view = memoryview(data)
            pieces = {task.first + i: view[i * size:(i + 1) * size] for i in range(count)}
            with self._lock:
                # Under the lock that readers drop failed files' pieces under: kept pieces
                # are never of a fetch begun before a failure.
                if self.fetcher.failed_since(checksum, task.serial):
                    raise StaleFetch(f"content {checksum} failed its checksum during this fetch")
                self._kept.add(checksum, pieces)
                self._valid_since.setdefault(checksum, task.serial)
                self._valid_since[checksum] = min(self._valid_since[checksum], task.serial)
                for number in pieces:
                    self._inflight.pop((checksum, number), None)
        except BaseException as exc:  # handed to every waiter, who maps it to an errno
            self.fetcher.stats.count_error(exc)
            log.warning("fetch of %s pieces %d+%d failed: %s", content.entry.path, task.first, count, exc)
            with self._lock:
                for i in range(count):
                    self._inflight.pop((checksum, task.first + i), None)
            for future in task.futures:
                future.set_exception(exc)
            return
        for number, future in zip(pieces, task.futures):
            future.set_result(pieces[number])
