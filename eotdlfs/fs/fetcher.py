"""Fetching blocks from the repository into the block cache, off the FUSE callback threads.

A small pool of worker threads takes fetch tasks from a priority queue: a block a reader is
waiting for goes first, read-ahead after, and one more worker takes only demand fetches.
Each task is one range request covering several consecutive blocks; its blocks are stored
(and kept a while in memory, `RecentBlocks`, for the readers to come) and handed to waiting
readers, then the file's running SHA-1 advances (`verify`), which holds back only the
file's final block. Every block being fetched has one future in the in-flight map, so
concurrent readers of the same block wait on one fetch. Read-ahead is bounded in total
bytes queued or in flight across all open files, so many readers cannot blow up memory.

Locks. `BlockFetcher._lock` guards the in-flight map, the read-ahead budget, the serials and
the failure marks, and is held for map and counter work only, never during a request.
`_failed_at` is written under it; `has_failed` and `check_not_failed` outside `demand` read it
without (a dict lookup; `demand` checks again under the lock before any fetch starts). Order
across objects: a FileVerifier's `lock` -> `BlockFetcher._lock` (hashing asks whether a
block is in flight) -> `SharedLoads._lock`, `RecentBlocks._lock`, `Verifiers._lock` (where hashing
stands, as read blocks are let go) and the BlockCache's locks (a block looked up in `demand`,
which may wait there for another reader's read-back of it); the fetcher never takes a
verifier's lock while holding its own. `SharedLoads._lock` (loads.py) is a leaf, as is
`FetchStats.lock`. An `OpenFile`'s lock (reader.py) is never held while calling in here.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

from eotdlfs.fs.arrival import Arrival
from eotdlfs.fs.block_cache import BlockCache
from eotdlfs.fs.content import Content, FetchStats, StaleFetch, runs
from eotdlfs.fs.drops import Drops
from eotdlfs.fs.loads import SharedLoads
from eotdlfs.fs.range_reads import fetch_range, fetch_ranges
from eotdlfs.fs.recent import RecentBlocks
from eotdlfs.fs.verify import Verifiers
from eotdlfs.repository import Arrived, ContentMismatch, Repository

log = logging.getLogger(__name__)

DEMAND, READ_AHEAD = 0, 1
# Blocks this close to where a file's hashing stands wait for it in memory; blocks further
# ahead (a random reader's) are read back from the cache if hashing ever gets there.
STASH_AHEAD = 32


@dataclass
class _Task:
    content: Content
    first: int
    count: int
    futures: list[Future]
    serial: int = 0
    started: bool = False
    read_ahead_bytes: int = 0
    arrival: Arrival = field(default_factory=Arrival)


class BlockFetcher:
    def __init__(self, repo: Repository, cache: BlockCache, workers: int = 4, request_blocks: int = 8,
                 max_read_ahead_bytes: int = 64 << 20, recent_bytes: int = 48 << 20):
        # Set once.
        self.repo = repo
        self.cache = cache
        self.block_size = cache.block_size
        self.request_blocks = request_blocks
        self.max_read_ahead_bytes = max_read_ahead_bytes
        self.recent = RecentBlocks(recent_bytes)
        self.verifiers = Verifiers(self.recent)
        self.stats = FetchStats()
        # Called with a content whose cached bytes are dropped (it failed its checksum).
        self.on_drop: list[Callable[[Content], None]] = []
        # Guarded by _lock.
        self._lock = threading.Lock()
        self._inflight: dict[tuple[str, int], tuple[Future, _Task]] = {}
        self._read_ahead_bytes = 0
        self._running = 0
        self._serials = itertools.count()
        self._failed_at: dict[str, int] = {}  # checksum -> serial of its last failed check
        self._drops = Drops()  # files whose blocks are being dropped: readers wait for them
        self._queue: queue.PriorityQueue = queue.PriorityQueue()
        self._loads = SharedLoads(cache)  # blocks being read back from the disk cache
        # One more worker takes only demand fetches, so a reader never waits behind read-ahead.
        self._demand_queue: queue.Queue = queue.Queue()
        self._order = itertools.count()
        self._threads = [threading.Thread(target=self._work, args=(self._demand_queue,), name="fetch-demand",
                                          daemon=True)]
        self._threads += [threading.Thread(target=self._work, args=(self._queue,), name=f"fetch-{i}", daemon=True)
                          for i in range(workers)]
        for thread in self._threads:
            thread.start()

    # --- what readers call -------------------------------------------------------------

    def demand(self, content: Content, index: int, opened: int) -> Future:
        """A future of block INDEX (its bytes), fetched now unless already cached or in flight.
        ContentMismatch if the file failed its checksum since OPENED (a `serial()`): a reader
        on its way then must not start fetches of bytes nobody could check any more.

        The caller checks the cache first; this is for a miss."""
        self._drops.wait(content.checksum)
        with self._lock:
            self.check_not_failed(content, opened)
            known = self._inflight.get((content.checksum, index))  # not one begun before a failure: it fails stale
            if known is not None and not self.failed_since(content.checksum, known[1].serial):
                future, task = known
                if not task.started:
                    self._queue_demand_locked(task)
                return future
            # A fetch may have landed between the caller's cache miss and now (it stores
            # blocks before leaving the in-flight map).
            source = self._kept_block_drops_over(content.checksum, index)
            if source is not None:
                done: Future = Future()
                done.set_result(source)
                return done
            task = self._new_task_locked(content, index, 1)
            self._queue_demand_locked(task)
            return task.futures[0]

    def read_ahead(self, content: Content, first: int, end: int, opened: int) -> int:
        """Queue blocks FIRST..END-1 that are neither cached nor in flight, within the total
        read-ahead budget; return the index up to which blocks are now cached or requested.
        Nothing is queued if the file failed its checksum since OPENED."""
        end = min(end, content.block_count(self.block_size))
        self._drops.wait(content.checksum)
        with self._lock:
            room = (self.max_read_ahead_bytes - self._read_ahead_bytes) // self.block_size
            if room <= 0:
                return first
            end = min(end, first + room)
            missing = [i for i in range(first, end) if (content.checksum, i) not in self._inflight]
        missing = [i for i in missing if (content.checksum, i) not in self.cache]
        with self._lock:  # check again: a concurrent reader of this file may have asked meanwhile
            if self.failed_since(content.checksum, opened):
                return first
            missing = [i for i in missing if (content.checksum, i) not in self._inflight]
            for run in runs(missing, self.request_blocks):
                task = self._new_task_locked(content, run[0], len(run))
                task.read_ahead_bytes = len(run) * self.block_size
                self._read_ahead_bytes += task.read_ahead_bytes
                self._queue.put((READ_AHEAD, next(self._order), task))
        return end

    def kept_block(self, checksum: str, index: int) -> memoryview | None:
        """Block INDEX from memory (a recent fetch) or from the disk cache (checked as it is
        read back), once drops of the file are over; None when neither has it."""
        self._drops.wait(checksum)
        return self._kept_block_drops_over(checksum, index)

    def _kept_block_drops_over(self, checksum: str, index: int) -> memoryview | None:
        """`kept_block` for a caller that waited for the file's drops itself."""
        block = self.recent.get(checksum, index)
        if block is not None or (checksum, index) in self._inflight:  # (being fetched: not on disk)
            return block
        return self._loads.load(checksum, index)

    def arrived_part(self, content: Content, index: int, upto: int, timeout: float) -> memoryview | None:
        """The first UPTO bytes of block INDEX as soon as the request fetching it has brought
        them; None when no request is fetching it, or it is the file's final block (which
        waits for the file's SHA-1), or the request ended first (its future then says how).
        StaleFetch if the file failed its checksum since the request was made."""
        checksum, size = content.checksum, self.block_size
        if index == content.block_count(size) - 1:
            return None
        with self._lock:
            known = self._inflight.get((checksum, index))
        if known is None:
            return None
        task = known[1]
        at = (index - task.first) * size
        body = task.arrival.wait(at + upto, timeout)
        if body is None:
            return None
        if self.failed_since(checksum, task.serial):  # what `_check_fresh` keeps from readers
            raise StaleFetch(f"content {checksum} failed its checksum during this fetch")
        return body[at:at + upto]

    def in_flight(self, checksum: str, index: int) -> bool:
        """Whether block INDEX is queued or being fetched (a reader had best wait for it)."""
        with self._lock:
            return (checksum, index) in self._inflight

    def fetched_whole(self, checksum: str, index: int) -> bool:
        """Whether block INDEX is being fetched whole, or was (in memory or the disk cache)."""
        return bool(self.held_whole(checksum, {index}))

    def held_whole(self, checksum: str, indices: set[int]) -> set[int]:
        """Those of INDICES `fetched_whole` says, in one read of the index (a window's tile rows span a few blocks)."""
        with self._lock:
            held = {i for i in indices if (checksum, i) in self._inflight or (checksum, i) in self.recent}
        return held | self.cache.holding(checksum, indices - held)

    def finished_reading(self, checksum: str, indices: list[int]) -> None:
        """A reader read these blocks to their end: memory lets go of them once hashed (the
        kernel keeps their pages; the disk cache keeps the bytes)."""
        with self._lock:  # against `_let_go_read`: whichever comes second lets a block go
            coming = [i for i in indices if (checksum, i) in self._inflight]
            self.recent.finished(checksum, indices, self.verifiers.hashed_until(checksum), coming)

    def _let_go_read(self, checksum: str) -> None:
        """Forget the blocks read to their end before hashing got to them, now hashed."""
        with self._lock:
            self.recent.discard_read(checksum, self.verifiers.hashed_until(checksum))

    def reject(self, content: Content) -> None:
        """CONTENT's bytes failed its SHA-1 outside the fetcher (a copy-up hashed them): fail
        its open readers and drop its blocks, so the next open fetches them again."""
        self._drops.begin(content.checksum)  # before the mark: no reader comes between them
        with self._lock:
            self._failed_at[content.checksum] = next(self._serials)
        self._drop(content)

    def _drop(self, content: Content) -> None:
        """Drop CONTENT's blocks everywhere; ends the drop `_drops.begin` began."""
        try:
            self.recent.drop(content.checksum)
            self.cache.drop_blocks(content.checksum, range(content.block_count(self.block_size)))
            for drop in self.on_drop:
                drop(content)
        finally:
            self._drops.end(content.checksum)

    def serial(self) -> int:
        """A mark in time, for `failed_since`."""
        return next(self._serials)

    def has_failed(self, checksum: str) -> bool:
        """Whether the file ever failed its checksum in this mount."""
        return checksum in self._failed_at

    def failed_since(self, checksum: str, serial: int) -> bool:
        """Whether the file failed its checksum after SERIAL (its readers must not go on)."""
        return self._failed_at.get(checksum, -1) > serial

    def check_not_failed(self, content: Content, opened: int) -> None:
        """ContentMismatch if the file failed its checksum since OPENED, a handle's `serial()`."""
        if self.failed_since(content.checksum, opened):
            raise ContentMismatch(f"{content.entry.path} failed its SHA-1 check")

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no fetch is queued or running."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._inflight and not self._running:
                    return True
            time.sleep(0.01)
        return False

    def close(self, within: float = 2.0) -> None:
        """Stop the workers once the fetches under way are done (within WITHIN s; see `_run`)."""
        self.wait_idle(within)
        self._demand_queue.put((DEMAND, -1, None))
        for _ in self._threads[1:]:
            self._queue.put((DEMAND, -1, None))

    # --- internals ----------------------------------------------------------------------

    def _new_task_locked(self, content: Content, first: int, count: int) -> _Task:
        futures = [Future() for _ in range(count)]
        task = _Task(content, first, count, futures, next(self._serials))
        for offset, future in enumerate(futures):
            self._inflight[(content.checksum, first + offset)] = (future, task)
        return task

    def _queue_demand_locked(self, task: _Task) -> None:
        entry = (DEMAND, next(self._order), task)
        self._demand_queue.put(entry)
        self._queue.put(entry)  # whichever worker is free first takes it

    def _work(self, tasks: queue.Queue) -> None:
        while True:
            _, _, task = tasks.get()
            if task is None:
                return
            with self._lock:
                if task.started:
                    continue
                task.started = True
                self._running += 1
            try:
                self._run(task)
            finally:
                with self._lock:
                    self._running -= 1

    def _run(self, task: _Task) -> None:
        content, size = task.content, self.block_size
        final = content.block_count(size) - 1
        try:
            blocks = self._fetch(task)
            self._check_fresh(task, blocks)
            # Readers get every block but the final one now; hashing must not delay them.
            self._settle(task, {i: b for i, b in blocks.items() if i != final})
            held = self._verify(task, blocks, final)
        except BaseException as exc:  # handed to every waiter, who maps it to an errno
            self._failed(task, exc)
            return
        finally:
            task.arrival.end()
        if final in blocks and not held:
            # Readers first, the disk after (a file and a transaction: as long as a small file's round
            # trip). It stays in flight until stored: a reader coming meanwhile takes these bytes, where
            # memory may have let go of them (read and hashed) and the disk has nothing yet. `close`
            # waits for it: read, then offline, it is there.
            future = task.futures[final - task.first]
            future.set_result(blocks[final])
            try:
                self.cache.put(content.checksum, final, blocks[final])
            finally:
                self._forget(content.checksum, final, future)

    def _check_fresh(self, task: _Task, blocks: dict[int, memoryview]) -> None:
        """Raise StaleFetch, dropping BLOCKS, if the file failed its checksum since TASK was
        made. Called after keeping the blocks: a failure marked later drops them itself."""
        checksum = task.content.checksum
        with self._lock:
            suspect = self.failed_since(checksum, task.serial)
        if suspect:
            self.recent.discard(checksum, blocks)
            self.cache.drop_blocks(checksum, blocks)
            raise StaleFetch(f"content {checksum} failed its checksum during this fetch")

    def _settle(self, task: _Task, blocks: dict[int, memoryview]) -> None:
        """Hand BLOCKS to their readers and take them out of the in-flight map."""
        checksum = task.content.checksum
        with self._lock:
            self._read_ahead_bytes -= task.read_ahead_bytes
            task.read_ahead_bytes = 0
            for index in blocks:
                self._inflight.pop((checksum, index), None)
        for index, data in blocks.items():
            task.futures[index - task.first].set_result(data)

    def fetch_range(self, content: Content, start: int, length: int, progress: Arrived | None = None) -> memoryview:
        """`range_reads.fetch_range` from this fetcher's repository, counted in its stats."""
        return fetch_range(self.repo, self.stats, content, start, length, progress)

    def fetch_ranges(self, content: Content, spans: list[tuple[int, int]]) -> list[memoryview]:
        """`range_reads.fetch_ranges` (their requests in flight at once), as `fetch_range`."""
        return fetch_ranges(self.repo, self.stats, content, spans)

    def _fetch(self, task: _Task) -> dict[int, memoryview]:
        """The task's blocks, fetched in one range request; all but the file's final block
        are stored in the cache, in one file (that one waits for the file's checksum)."""
        content, size = task.content, self.block_size
        start = task.first * size
        length = min(task.count * size, content.size - start)
        view = self.fetch_range(content, start, length, task.arrival.advance)
        final = content.block_count(size) - 1
        blocks = {task.first + offset: view[offset * size:(offset + 1) * size]  # no copy
                  for offset in range(task.count)}
        early = {i: b for i, b in blocks.items() if i != final}
        # Readers and hashing take them from memory, the disk copy bypasses the page cache
        # (O_DIRECT); in memory first, so nobody reads back what the loop just wrote. One file
        # for the request's blocks (they come before the final one, so from its start): a file
        # created per 1 MiB block was 7 % of a cold sequential read's CPU.
        if early:  # (a file's only block is its final one: nothing to store yet)
            self.recent.add(content.checksum, early)
            self.cache.put_runs([([(content.checksum, i) for i in early], [view[:len(early) * size]])], size)
        return blocks

    def _verify(self, task: _Task, blocks: dict[int, memoryview], final: int) -> bool:
        """Advance the file's checksum; True when the final block is now held until the
        blocks before it arrive. Raises ContentMismatch when the file hashed wrong."""
        checksum = task.content.checksum
        verifier = self.verifiers.get(checksum, final + 1)
        # Checked again after taking the verifier: a failure marked later forgets it, so bytes
        # of a fetch begun before a failure never reach the hashing of the next attempt.
        self._check_fresh(task, blocks)

        def available(index: int) -> bool:
            with self._lock:
                if (checksum, index) in self._inflight:
                    return True
            return (checksum, index) in self.cache

        held = False
        try:
            if final in blocks:  # the final block's fate is decided under the lock, waiting for it
                with verifier.lock:
                    complete = verifier.advance_locked(self.cache, blocks, available)
                    waiting = range(verifier.next_index, final)
                    if not complete and all(available(i) for i in waiting):
                        future = task.futures[final - task.first]
                        future.add_done_callback(lambda done: self._forget(checksum, final, done))
                        verifier.held = (blocks[final], future)
                        held = True
                    else:  # stored by `_run` once its readers have it; in memory until then
                        self.recent.add(checksum, {final: blocks[final]})
            # Other blocks never wait for the lock: whoever holds it hashes what we stored
            # (it looks again while `pending` is set), so fetch workers keep fetching.
            for index, data in blocks.items():
                if index != final and 0 <= index - verifier.next_index < STASH_AHEAD:
                    verifier.stash[index] = data
            verifier.pending = True
            while verifier.pending and verifier.lock.acquire(blocking=False):
                try:
                    verifier.pending = False
                    verifier.advance_locked(self.cache, blocks, available)
                finally:
                    verifier.lock.release()
        finally:
            if verifier.finished:
                self.verifiers.forget(verifier)
            self._let_go_read(checksum)
        return held

    def _forget(self, checksum: str, index: int, future: Future) -> None:
        with self._lock:
            if self._inflight.get((checksum, index), (None,))[0] is future:
                del self._inflight[(checksum, index)]

    def _failed(self, task: _Task, exc: BaseException) -> None:
        content = task.content
        self.stats.count_error(exc)
        log.warning("fetch of %s blocks %d+%d failed: %s", content.entry.path, task.first, task.count, exc)
        mismatch = isinstance(exc, ContentMismatch) and not isinstance(exc, StaleFetch)
        if mismatch:
            self._drops.begin(content.checksum)  # before the mark: no reader comes between them
        with self._lock:
            self._read_ahead_bytes -= task.read_ahead_bytes
            task.read_ahead_bytes = 0
            for offset, future in enumerate(task.futures):
                if self._inflight.get((content.checksum, task.first + offset), (None,))[0] is future:
                    del self._inflight[(content.checksum, task.first + offset)]
            if mismatch:
                # Fetches of this file already under way may hold the same bad bytes.
                self._failed_at[content.checksum] = next(self._serials)
        if mismatch:  # after marking: a fetch storing blocks meanwhile drops its own
            self._drop(content)
        verifier = self.verifiers.peek(content.checksum)
        if verifier is not None:  # a held final block must not wait for blocks that will not come
            with verifier.lock:
                if isinstance(exc, ContentMismatch):
                    verifier.fail_held_locked(exc)
                else:
                    verifier.release_held_locked(self.cache)
            if mismatch:  # it may hold bytes (stash, hash state) of fetches begun before the failure
                self.verifiers.forget(verifier)
        for future in task.futures:
            if not future.done():
                future.set_exception(exc)
