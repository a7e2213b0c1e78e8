"""A seeking reader's bytes, fetched as its reads come, in small aligned pieces.

A read far from its handle's last one (`ReadAheadWindow.seeking`) of a block neither cached
nor being fetched gets no whole block and no read-ahead: the pieces of PIECE_SIZE bytes it
spans are fetched in one range request, as GDAL fetches one tile of a Cloud-Optimized
GeoTIFF; when the file's tile layout is known (`tiles`), a read at a tile's start fetches
the whole tile in that request. A multi-range read (GDAL asks a file object for a window's
tile rows at once) fetches the pieces missing from all its ranges at once (`read_ranges`).
A whole 1 MiB block (with the read-ahead that a sequential run earns) fetched 2.8 times the
bytes GDAL's /vsicurl/ does for random windows, and made the reader wait for them.

Pieces are kept in memory (bounded, oldest out first) for the reads next to them, and in the
block cache under keys of their own (`piece_key`), with the same CRC32C check on read-back
as blocks, so a second reader, or the next mount, does not fetch them again. They are
stored behind the reads, in batches, one transaction each, a batch's whole pieces side by side
in one file (`BlockCache.put_runs`): once the readers pause (`STORE_QUIET_S`: a batch stored
between a burst's windows took the GIL, a core and the disk from them, 0.05-0.1 s of a 50-window
run on the mount), or once `STORE_AT_BYTES` wait; those still waiting are stored at `close`.
Until a batch is in the cache its pieces are served from where they wait (`_unstored`, and the
batch being written, `_in_store`), so a second reader finds every piece fetched even when the
kept pieces have moved on. Those waiting are bounded in bytes (`unstored_bytes`): behind a cache
disk slower than the network a fetch worker waits for the writer once, then the oldest are let
go unstored (a later reader fetches them again; counted, `pieces_let_go` in status), so neither
memory nor the reader waits for the disk. A reader's own thread never waits, and lets pieces go
only past twice the bound: a busy disk lagging behind a burst must not cost the next reader.
Pieces never feed the file's running SHA-1: the end-to-end check is of whole-file reads, which
do not seek, and the reader never takes a file's final block in pieces, so the final block still
waits for the file's checksum. When a file fails its checksum its pieces are dropped with its
blocks (`BlockFetcher.on_drop`), and pieces of a fetch begun before the failure are not kept.

Locks. `PieceFetcher._lock` guards the kept pieces, the in-flight map and the drop serials,
and is held for map work only, never during a request or a cache read. Under it the kept
pieces' RecentBlocks lock (a leaf) is taken and the fetcher asked for serials and failure
marks (no lock of the fetcher's is taken). `_dropped` is also read without it at the start
of `read_into` (a dict lookup; a stale answer costs one more `_drop`).
`_storing` (a leaf, also taken under `_lock` to find a waiting piece) guards the pieces waiting
to be stored and the batch being stored; the store itself runs outside it.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
import weakref
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Iterable

from eotdlfs.fs.content import Content, StaleFetch, runs
from eotdlfs.fs.fetcher import BlockFetcher
from eotdlfs.fs.recent import RecentBlocks

log = logging.getLogger(__name__)

PIECE_SIZE = 64 << 10
KEPT_BYTES = 32 << 20
LONGEST_REQUEST = 32  # pieces: 2 MiB
NEAR_PIECES = 1  # a multi-range read's missing pieces this far apart are fetched in one request
# Fetched pieces are stored in batches, one transaction each: once no fetch brought any for this long
# (and surely at `close`), sooner once this many bytes wait. Until then they are served from memory.
STORE_QUIET_S = 0.1
STORE_AT_BYTES = 32 << 20
# A script's (eotdl://): what still waits is stored as it exits, with O_DIRECT, and its exit waits for
# that (~35 ms for 32 MiB); stored along the way, it overlaps the reads (50 COG windows: 702 -> 687 ms,
# medians of 30 alternated runs). A mount stores between bursts instead, which its readers feel less.
SCRIPT_STORE_AT_BYTES = 4 << 20
RUN_FILE_BYTES = 256 << 10  # pieces fetched this many bytes at a time are stored at their places (`store_waiting`)
CLOSE_WAIT = 5.0  # for the fetches under way at close
STORE_WAIT = 2.0  # how long a fetch worker waits for the writer to take the queue, once per stall
UNSTORED_BYTES = 2 * STORE_AT_BYTES  # pieces waiting to be stored, at most (each pins its request's buffer)


# Fetchers with pieces maybe not stored yet: an `eotdl://` script may end without closing
# its connection, and the next process should find the windows it read.
_open_fetchers: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _store_all_waiting() -> None:
    # Closed, not just emptied: the writer may be storing a batch it took, and a daemon thread
    # is cut off at exit (that batch was lost, and the next process fetched it again).
    for fetcher in list(_open_fetchers):
        fetcher.close()


def piece_key(number: int) -> str:
    """The block-cache index of a file's NUMBER-th piece: apart from its blocks' (numbers)."""
    return f"p{number}"


@dataclass
class _Task:
    content: Content
    first: int
    futures: list[Future]
    serial: int


class PieceFetcher:
    def __init__(self, fetcher: BlockFetcher, piece_size: int = PIECE_SIZE, kept_bytes: int = KEPT_BYTES,
                 workers: int = 4, unstored_bytes: int = UNSTORED_BYTES, store_at: int = STORE_AT_BYTES):
        # Set once.
        self.fetcher = fetcher
        self.cache = fetcher.cache
        self.piece_size = piece_size
        self.unstored_limit = unstored_bytes
        self._store_at = min(store_at, unstored_bytes // 2)
        # Guarded by _lock.
        self._lock = threading.Lock()
        self._kept = RecentBlocks(kept_bytes)  # (checksum, piece number) -> bytes
        self._inflight: dict[tuple[str, int], Future] = {}
        self._dropped: dict[str, int] = {}  # checksum -> serial at which its last drop began
        # Worker threads, so a reader waits for a silent server no longer than its own deadline.
        self._tasks: queue.Queue = queue.Queue()
        self._threads = [threading.Thread(target=self._work, name=f"fetch-piece-{i}", daemon=True)
                         for i in range(workers)]
        # Guarded by _storing: pieces fetched and not stored yet, (checksum, number) -> (bytes, serial,
        # the bytes of the fetch they came in), oldest first, a fetch's pieces one after the other;
        # and the batch being written, until it is in the cache.
        self._storing = threading.Condition()
        self._unstored: dict[tuple[str, int], tuple[memoryview, int, memoryview]] = {}
        self._in_store: dict[tuple[str, int], tuple[memoryview, int, memoryview]] = {}
        self._unstored_bytes = 0
        self.let_go = 0  # pieces never stored: the disk was stalled (for status)
        self._closing = False
        self._last_queued = 0.0  # when pieces last joined those waiting (`STORE_QUIET_S`)
        self._stalled = False  # the writer took no batch within STORE_WAIT: pieces over the bound go
        self._threads.append(threading.Thread(target=self._write_behind, name="store-pieces", daemon=True))
        for thread in self._threads:
            thread.start()
        fetcher.on_drop.append(self._drop)
        _open_fetchers.add(self)

    def read_into(self, content: Content, opened: int, offset: int, target: memoryview, deadline: float,
                  until: int = 0, refused: BaseException | None = None) -> bool:
        """Fill TARGET with CONTENT's bytes from OFFSET (all within the file), fetching the
        pieces it spans that are neither kept nor being fetched, and those on to byte UNTIL
        (the end of the tile being read: the kernel's next requests for it find it coming,
        not a round trip each); waits until DEADLINE, for TARGET's pieces only. REFUSED (the
        server is silent and not being asked now): held pieces serve, missing ones fail with it
        at once. Whether a fetch of this call's brought some of TARGET's pieces (the server answered)."""
        size = self.piece_size
        first, last = offset // size, (offset + len(target) - 1) // size
        fetch_last = max(last, (until - 1) // size)
        futures, tasks = self._claim(content, opened, range(first, fetch_last + 1))
        self._start(tasks, refused)
        self._copy_out(futures, offset, target, deadline)
        return any(task.first <= last and task.first + len(task.futures) > first for task in tasks)

    def read_ranges(self, content: Content, opened: int, ranges: list[tuple[int, memoryview]], deadline: float,
                    refused: BaseException | None = None, queued: bool = False) -> bool:
        """Fill each (offset, target) of RANGES (within the file) with CONTENT's bytes there: a multi-range
        read's (GDAL's tile rows of a window, asked for at once). The pieces missing from all of them are
        fetched at once, in as few requests as they allow (pieces NEAR_PIECES apart go in one, with the
        pieces between), all in flight at once from this thread (`Repository.read_ranges`): on worker
        threads, each request hopped there and back, and the threads took the GIL from each other
        (50 cold COG windows through eotdl://: 0.26 s; 0.22 on this thread one after the other).
        Waits until DEADLINE; QUEUED: the requests go to the workers (this thread would wait for them
        a whole read timeout, not until DEADLINE); REFUSED: as `read_into`. Whether it fetched any."""
        size = self.piece_size
        ranges = [(offset, target) for offset, target in ranges if len(target)]
        wanted = sorted({number for offset, target in ranges
                         for number in range(offset // size, (offset + len(target) - 1) // size + 1)})
        between = [n for a, b in zip(wanted, wanted[1:]) if b - a <= NEAR_PIECES + 1 for n in range(a + 1, b)]
        futures, tasks = self._claim(content, opened, sorted(wanted + between))
        if queued or refused is not None:
            self._start(tasks, refused)
        elif tasks:  # their failure is their futures', raised by the copy
            self._run_together(tasks, may_wait=False)
        for offset, target in ranges:
            self._copy_out(futures, offset, target, deadline)
        return bool(tasks)

    def _start(self, tasks: list[_Task], refused: BaseException | None) -> None:
        """Queue TASKS for the workers, or fail them with REFUSED at once (no error counted: nothing was asked)."""
        for task in tasks:
            if refused is None:
                self._tasks.put(task)
            else:
                self._failed(task, refused, asked=False)

    def _claim(self, content: Content, opened: int, numbers: Iterable[int]) -> tuple[dict[int, Future], list[_Task]]:
        """The futures of CONTENT's pieces NUMBERS (sorted): settled for those kept in memory or
        the block cache, shared with the fetch under way for those being fetched, and for the others
        settled by the returned tasks, one per run of them (not queued yet)."""
        checksum = content.checksum
        futures: dict[int, Future] = {}
        mine: list[int] = []
        if self.fetcher.failed_since(checksum, self._dropped.get(checksum, -1)):
            self._drop(content)  # a reader opened after a failure may come before the fetcher drops
        with self._lock:
            self.fetcher.check_not_failed(content, opened)
            serial = self.fetcher.serial()
            for number in numbers:
                future = self._inflight.get((checksum, number))
                if future is None:
                    future = Future()
                    data = self._kept.get(checksum, number)
                    if data is None:
                        data = self._waiting(checksum, number)
                    if data is not None:
                        future.set_result(data)
                    else:
                        self._inflight[(checksum, number)] = future
                        mine.append(number)
                futures[number] = future
        missing = self._load(checksum, {number: futures[number] for number in mine}, serial)
        return futures, [_Task(content, run[0], [futures[n] for n in run], serial)
                         for run in runs(missing, LONGEST_REQUEST)]

    def _waiting(self, checksum: str, number: int) -> memoryview | None:
        """The piece if it waits to be stored or is being stored (the caller holds `_lock`)."""
        with self._storing:
            found = self._unstored.get((checksum, number)) or self._in_store.get((checksum, number))
        return None if found is None else found[0]

    def _copy_out(self, futures: dict[int, Future], offset: int, target: memoryview, deadline: float) -> None:
        """Copy into TARGET the bytes from OFFSET of the pieces FUTURES bring, waiting until DEADLINE."""
        size = self.piece_size
        for number in range(offset // size, (offset + len(target) - 1) // size + 1):
            data = futures[number].result(timeout=max(0.0, deadline - time.monotonic()))
            lo = max(offset, number * size)
            hi = min(offset + len(target), number * size + len(data))
            target[lo - offset:hi - offset] = data[lo - number * size:hi - number * size]

    def close(self) -> None:
        """Stop the workers and store the pieces not stored yet (a remount finds them)."""
        for _ in self._threads[:-1]:
            self._tasks.put(None)
        deadline = time.monotonic() + CLOSE_WAIT  # their fetches under way queue pieces to store too
        for worker in self._threads[:-1]:
            worker.join(max(0.0, deadline - time.monotonic()))
        with self._storing:
            self._closing = True
            self._storing.notify()
        self._threads[-1].join(timeout=60)

    def _load(self, checksum: str, futures: dict[int, Future], serial: int) -> list[int]:
        """Settle the FUTURES (by piece number) of the pieces read back from the block cache
        (checked; one index lookup for all); the numbers of the others: not there, or all if the
        file failed its checksum since SERIAL (they may be of before)."""
        if not futures:
            return []
        keys = {piece_key(number): number for number in futures}
        found = {keys[key]: data for key, data in self.cache.load_blocks(checksum, list(keys)).items()}
        with self._lock:
            if self.fetcher.failed_since(checksum, serial):
                return list(futures)
            self._kept.add(checksum, found)
            for number in found:
                self._inflight.pop((checksum, number), None)
        for number, data in found.items():
            futures[number].set_result(data)
        return [number for number in futures if number not in found]

    def _drop(self, content: Content) -> None:
        """CONTENT failed its checksum: forget its pieces, in memory and in the block cache."""
        began = self.fetcher.serial()
        with self._lock:
            self._kept.drop(content.checksum)
            with self._storing:  # no reader gets them; those being written are dropped after, as stale
                for key in [key for key in self._unstored if key[0] == content.checksum]:
                    self._unstored_bytes -= len(self._unstored.pop(key)[0])
                self._in_store = {key: value for key, value in self._in_store.items() if key[0] != content.checksum}
        pieces = content.block_count(self.piece_size)
        self.cache.drop_blocks(content.checksum, [piece_key(n) for n in range(pieces)])
        with self._lock:
            self._dropped[content.checksum] = max(began, self._dropped.get(content.checksum, -1))

    def _work(self) -> None:
        while (task := self._tasks.get()) is not None:
            self._run(task)

    def _run(self, task: _Task, may_wait: bool = True) -> None:
        self._run_together([task], may_wait)

    def _run_together(self, tasks: list[_Task], may_wait: bool = True) -> None:
        """Fetch TASKS (of one content), their requests in flight at once, and settle their futures."""
        content, size = tasks[0].content, self.piece_size
        spans = [(task.first * size, min(len(task.futures) * size, content.size - task.first * size)) for task in tasks]
        try:
            views = self.fetcher.fetch_ranges(content, spans)
        except BaseException as exc:  # handed to every waiter, who maps it to an errno
            for task in tasks:
                self._failed(task, exc)
            return
        for task, view in zip(tasks, views):
            self._settle(task, view, may_wait)

    def _settle(self, task: _Task, view: memoryview, may_wait: bool) -> None:
        checksum, size = task.content.checksum, self.piece_size
        pieces = {task.first + i: view[i * size:(i + 1) * size] for i in range(len(task.futures))}
        with self._lock:
            stale = self.fetcher.failed_since(checksum, task.serial)
            if not stale:
                self._kept.add(checksum, pieces)
                for number in pieces:
                    self._inflight.pop((checksum, number), None)
        if stale:
            self._failed(task, StaleFetch(f"content {checksum} failed its checksum during this fetch"))
            return
        for number, future in zip(pieces, task.futures):
            future.set_result(pieces[number])
        self._store(checksum, pieces, task.serial, view, may_wait)

    def _failed(self, task: _Task, exc: BaseException, asked: bool = True) -> None:
        count = len(task.futures)
        if asked:
            self.fetcher.stats.count_error(exc)
            log.warning("fetch of %s pieces %d+%d failed: %s", task.content.entry.path, task.first, count, exc)
        with self._lock:
            for i in range(count):
                self._inflight.pop((task.content.checksum, task.first + i), None)
        for future in task.futures:
            future.set_exception(exc)

    def _store(self, checksum: str, pieces: dict[int, memoryview], serial: int, fetched: memoryview,
               may_wait: bool = True) -> None:
        """Queue PIECES (FETCHED in one request) for the block cache, after their readers have them
        (a disk write costs a random reader about as much as its fetch). A reader's own thread (not
        MAY_WAIT) never waits for the writer: past twice the bound the oldest pieces go unstored at once."""
        with self._storing:
            first = not self._unstored
            # Never a piece already waiting: `_claim` serves those from here instead of fetching them.
            self._unstored.update(((checksum, n), (piece, serial, fetched)) for n, piece in pieces.items())
            self._unstored_bytes += sum(len(piece) for piece in pieces.values())
            if may_wait and self._unstored_bytes > self.unstored_limit and not self._stalled:
                # The writer is behind (a batch arrives faster than the last one was written): this
                # worker, whose readers have their bytes, waits for it to take the queue, so a
                # disk slower than the network slows fetching, not drops pieces a next process
                # would fetch again. A stalled disk is waited for once, until it takes a batch.
                self._storing.notify_all()
                deadline = time.monotonic() + STORE_WAIT
                while self._unstored_bytes > self.unstored_limit and not self._closing \
                        and (left := deadline - time.monotonic()) > 0:
                    self._storing.wait(left)
                self._stalled = self._unstored_bytes > self.unstored_limit
            bound = self.unstored_limit if may_wait else 2 * self.unstored_limit
            while self._unstored_bytes > bound:  # the disk is stalled: let the oldest go
                self._unstored_bytes -= len(self._unstored.pop(next(iter(self._unstored)))[0])
                self.let_go += 1
            self._last_queued = time.monotonic()
            if first or self._unstored_bytes >= self._store_at:  # the wait for a pause starts; or no pause
                self._storing.notify()

    def _write_behind(self) -> None:
        """Store queued pieces in batches: one transaction for many pieces, not one each."""
        while True:
            with self._storing:
                while not self._closing and not self._unstored:  # an idle mount: no wake-ups
                    self._storing.wait()
                while not self._closing and self._unstored_bytes < self._store_at \
                        and (left := self._last_queued + STORE_QUIET_S - time.monotonic()) > 0:
                    self._storing.wait(left)
                closing = self._closing
            self.store_waiting()
            if closing:
                _open_fetchers.discard(self)
                return

    def store_waiting(self) -> None:
        """Store the pieces waiting to be stored: whole pieces side by side in one file (those fetched
        RUN_FILE_BYTES or more at a time, a tile, at their places in their fetch's bytes), any shorter
        one in the index itself (or, at a tile's end, after its tile in a file of its own)."""
        with self._storing:
            batch, self._unstored, self._unstored_bytes = self._unstored, {}, 0
            self._in_store = batch  # replaced, never changed in place: the loops below read it unlocked
            self._stalled = False
            self._storing.notify_all()  # workers waiting for room
        if not batch:
            return
        fetches: dict[int, tuple[str, memoryview, list]] = {}  # by the fetch's buffer: its pieces waiting
        for (checksum, n), (piece, _, fetched) in batch.items():
            fetches.setdefault(id(fetched), (checksum, fetched, []))[2].append((n, piece))
        runs, whole, inline = [], [], []
        for checksum, fetched, pieces in fetches.values():
            # A whole fetch only: its pieces lie in its bytes at their places (the oldest waiting may
            # have been let go, `unstored_limit`)
            if fetched.nbytes >= RUN_FILE_BYTES and len(pieces) == -(-fetched.nbytes // self.piece_size):
                keys = [(checksum, piece_key(n)) for n, _ in pieces]
                if fetched.nbytes % self.piece_size:  # the file's end: its short piece after its others
                    runs.append((keys, [fetched]))
                else:
                    whole.append((keys, fetched))
            else:
                for n, piece in pieces:
                    if piece.nbytes == self.piece_size:
                        whole.append(([(checksum, piece_key(n))], piece))
                    else:
                        inline.append((checksum, piece_key(n), piece))
        if whole:  # one file: a file per fetch was a new inode (and often a new folder) per tile row read
            runs.append(([key for keys, _ in whole for key in keys], [part for _, part in whole]))
        try:
            if runs:
                self.cache.put_runs(runs, self.piece_size)
            if inline:
                self.cache.put_inline(inline)
            # Checked after storing: a failure marked later drops these pieces itself.
            stale = [key for key, (_, serial, _) in batch.items() if self.fetcher.failed_since(key[0], serial)]
            for checksum, n in stale:
                self.cache.drop_blocks(checksum, [piece_key(n)])
        finally:  # stored, or never will be: either way no longer served from here
            with self._storing:
                if self._in_store is batch:
                    self._in_store = {}
