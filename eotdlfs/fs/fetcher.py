"""Fetching blocks from the repository into the block cache, off the FUSE callback threads.

A small pool of worker threads takes fetch tasks from a priority queue: a block a reader is
waiting for goes first, read-ahead after. Each task is one range request covering several
consecutive blocks. Every block being fetched has one future in the in-flight map, so
concurrent readers of the same block wait on one fetch. Read-ahead is bounded in total
bytes queued or in flight across all open files, so many readers cannot blow up memory.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from eotdlfs.fs.block_cache import BlockCache
from eotdlfs.fs.errors import ContentMismatch
from eotdlfs.fs.verify import Verifiers
from eotdlfs.repository import FileEntry, Record, Repository

log = logging.getLogger(__name__)

DEMAND, READ_AHEAD = 0, 1


@dataclass(frozen=True)
class Content:
    """A file's bytes: named by checksum, with the record and entry to fetch them from."""

    record: Record
    entry: FileEntry

    @property
    def checksum(self) -> str:
        return self.entry.checksum

    @property
    def size(self) -> int:
        return self.entry.size

    def block_count(self, block_size: int) -> int:
        return -(-self.entry.size // block_size)


@dataclass
class _Task:
    content: Content
    first: int
    count: int
    futures: list[Future]
    serial: int = 0
    started: bool = False
    read_ahead_bytes: int = 0


@dataclass
class FetchStats:
    bytes_fetched: int = 0
    requests: int = 0
    errors: int = 0
    last_error: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def as_dict(self) -> dict:
        with self.lock:
            return {"bytes_fetched": self.bytes_fetched, "requests": self.requests,
                    "fetch_errors": self.errors, "last_fetch_error": self.last_error}


class BlockFetcher:
    def __init__(self, repo: Repository, cache: BlockCache, workers: int = 4,
                 request_blocks: int = 8, max_read_ahead_bytes: int = 128 << 20):
        # Set once.
        self.repo = repo
        self.cache = cache
        self.block_size = cache.block_size
        self.request_blocks = request_blocks
        self.max_read_ahead_bytes = max_read_ahead_bytes
        self.verifiers = Verifiers(cache)
        self.stats = FetchStats()
        # Guarded by _lock.
        self._lock = threading.Lock()
        self._inflight: dict[tuple[str, int], tuple[Future, _Task]] = {}
        self._read_ahead_bytes = 0
        self._serials = itertools.count()
        self._failed_at: dict[str, int] = {}  # checksum -> serial of its last failed check
        self._queue: queue.PriorityQueue = queue.PriorityQueue()
        self._order = itertools.count()
        self._threads = [threading.Thread(target=self._work, name=f"fetch-{i}", daemon=True)
                         for i in range(workers)]
        for thread in self._threads:
            thread.start()

    # --- what readers call -------------------------------------------------------------

    def demand(self, content: Content, index: int) -> Future:
        """A future of block INDEX (its bytes, or an open cache file), fetched now unless
        already cached or in flight.

        The caller checks the cache first; this is for a miss."""
        with self._lock:
            known = self._inflight.get((content.checksum, index))
            if known is not None:
                future, task = known
                if not task.started:
                    self._queue.put((DEMAND, next(self._order), task))
                return future
            # A fetch may have landed between the caller's cache miss and now (it stores
            # blocks before leaving the in-flight map).
            source = self.cache.open_block(content.checksum, index)
            if source is not None:
                done: Future = Future()
                done.set_result(source)
                return done
            task = self._new_task_locked(content, index, 1)
            self._queue.put((DEMAND, next(self._order), task))
            return task.futures[0]

    def read_ahead(self, content: Content, first: int, end: int) -> int:
        """Queue blocks FIRST..END-1 that are neither cached nor in flight, within the total
        read-ahead budget; return the index up to which blocks are now cached or requested."""
        end = min(end, content.block_count(self.block_size))
        index = first
        while index < end:
            with self._lock:
                if self._read_ahead_bytes >= self.max_read_ahead_bytes:
                    return index
            run_start = index
            while index < end and index - run_start < self.request_blocks and \
                    not self._have(content.checksum, index):
                index += 1
            if index > run_start:
                with self._lock:
                    task = self._new_task_locked(content, run_start, index - run_start)
                    task.read_ahead_bytes = (index - run_start) * self.block_size
                    self._read_ahead_bytes += task.read_ahead_bytes
                    self._queue.put((READ_AHEAD, next(self._order), task))
            else:
                index += 1
        return end

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no fetch is queued or running (tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._inflight:
                    return True
            time.sleep(0.01)
        return False

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put((DEMAND, -1, None))

    # --- internals ----------------------------------------------------------------------

    def _have(self, checksum: str, index: int) -> bool:
        with self._lock:
            if (checksum, index) in self._inflight:
                return True
        return (checksum, index) in self.cache

    def _new_task_locked(self, content: Content, first: int, count: int) -> _Task:
        futures = [Future() for _ in range(count)]
        task = _Task(content, first, count, futures, next(self._serials))
        for offset, future in enumerate(futures):
            self._inflight[(content.checksum, first + offset)] = (future, task)
        return task

    def _work(self) -> None:
        while True:
            _, _, task = self._queue.get()
            if task is None:
                return
            with self._lock:
                if task.started:
                    continue
                task.started = True
            self._run(task)

    def _run(self, task: _Task) -> None:
        content, size = task.content, self.block_size
        final = content.block_count(size) - 1
        try:
            blocks = self._fetch(task)
            held = self._verify(task, blocks, final)
            with self._lock:
                suspect = task.serial < self._failed_at.get(content.checksum, -1)
            if suspect:  # fetched while the file failed its checksum: do not keep these
                self.cache.drop_blocks(content.checksum, blocks)
                raise ContentMismatch(f"content {content.checksum} failed its checksum")
        except BaseException as exc:  # handed to every waiter, who maps it to an errno
            self._failed(task, exc)
            return
        with self._lock:
            self._read_ahead_bytes -= task.read_ahead_bytes
            for index in blocks:
                if not (held and index == final):
                    self._inflight.pop((content.checksum, index), None)
        for offset, future in enumerate(task.futures):
            if not (held and task.first + offset == final):
                future.set_result(blocks[task.first + offset])

    def _fetch(self, task: _Task) -> dict[int, bytes]:
        """The task's blocks, fetched in one range request; all but the file's final block
        are stored in the cache (that one waits for the file's checksum)."""
        content, size = task.content, self.block_size
        start = task.first * size
        length = min(task.count * size, content.size - start)
        data = self.repo.read_range(content.record, content.entry, start, length)
        if len(data) != length:
            raise OSError(5, f"short read of {content.entry.path}: {len(data)} of {length} bytes")
        with self.stats.lock:
            self.stats.bytes_fetched += len(data)
            self.stats.requests += 1
        final = content.block_count(size) - 1
        view, blocks = memoryview(data), {}
        for offset in range(task.count):
            index = task.first + offset
            blocks[index] = data if task.count == 1 else bytes(view[offset * size:(offset + 1) * size])
            if index != final:
                self.cache.put(content.checksum, index, blocks[index])
        return blocks

    def _verify(self, task: _Task, blocks: dict[int, bytes], final: int) -> bool:
        """Advance the file's checksum; True when the final block is now held until the
        blocks before it arrive. Raises ContentMismatch when the file hashed wrong."""
        checksum = task.content.checksum
        verifier = self.verifiers.get(checksum, final + 1)

        def available(index: int) -> bool:
            with self._lock:
                if (checksum, index) in self._inflight:
                    return True
            return (checksum, index) in self.cache

        held = False
        try:
            with verifier.lock:
                complete = verifier.advance_locked(self.cache, blocks, available)
                if final in blocks:
                    waiting = range(verifier.next_index, final)
                    if not complete and all(available(i) for i in waiting):
                        future = task.futures[final - task.first]
                        future.add_done_callback(lambda done: self._forget(checksum, final, done))
                        verifier.held = (blocks[final], future)
                        held = True
                    else:
                        self.cache.put(checksum, final, blocks[final])
        finally:
            if verifier.finished:
                self.verifiers.forget(verifier)
        return held

    def _forget(self, checksum: str, index: int, future: Future) -> None:
        with self._lock:
            if self._inflight.get((checksum, index), (None,))[0] is future:
                del self._inflight[(checksum, index)]

    def _failed(self, task: _Task, exc: BaseException) -> None:
        content = task.content
        with self.stats.lock:
            self.stats.errors += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
        log.warning("fetch of %s blocks %d+%d failed: %s", content.entry.path, task.first, task.count, exc)
        with self._lock:
            self._read_ahead_bytes -= task.read_ahead_bytes
            for offset in range(task.count):
                self._inflight.pop((content.checksum, task.first + offset), None)
            if isinstance(exc, ContentMismatch):
                # Fetches of this file already under way may hold the same bad bytes.
                self._failed_at[content.checksum] = next(self._serials)
        verifier = self.verifiers.peek(content.checksum)
        if verifier is not None:  # a held final block must not wait for blocks that will not come
            with verifier.lock:
                verifier.release_held_locked(self.cache)
        for future in task.futures:
            if not future.done():
                future.set_exception(exc)
