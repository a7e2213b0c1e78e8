"""Fetching small files ahead of a walker (pystac, `cp -r`, `rsync`, `tar`, a training loop).

A walk opens thousands of files of a few KiB one after another; each cold one cost a round
trip to the server on the walker's path. Two things start a plan: a version's root
`catalog.json` opened (a STAC walk: the version's small `.json` documents are planned), or
`WALK_OPENS` small files of one folder opened in a row, in any order (`cp -r` goes by inode
number, `rsync` and `tar` by name, a loader by its own list): the folder's small files are
planned. A loader drawing files at random from many folders seldom opens four of one folder
in a row, so it starts nothing.

Planned files (one block at most, not cached yet) are fetched in path order, many per request
(`Repository.read_files`), by a few threads, at most `ahead_bytes` fetched and not opened yet
per plan (an eighth of a smaller cache, `context.py`), and for at most `MAX_WALKS` folders at
once (a new one ends the oldest: a walker is in one folder at a time). Each is checked against
its SHA-1, whole, before it enters the block cache (and the fetcher's memory of recent blocks),
so a reader finds it as if it had fetched it itself; one that fails is dropped and read as usual.

An open of a planned file waits for the request bringing it, at most `wait` s; one not asked
for yet is read as usual and left out of the plan. A failed request, or one later than `wait`,
ends fetching ahead for its version for `resume_after` s: readers fetch as they did without it
(a silent server is not waited for twice by every open), and a walk after that plans again (a
server back from a restart serves walks many files per request again). While the readers hold
the server silent (`silent`), opens neither wait nor plan: their reads fail at once, and a walk's
open waited for a request that would not come. `close` stops it at unmount.

Locks. `SmallFilePrefetch._lock` guards the plans, the walks, the streaks and the count of
requests in flight and is a leaf: the repository, the cache and the fetcher are called without it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from eotdlfs.fs.fetcher import BlockFetcher
from eotdlfs.fs.namespace import Namespace, Node
from eotdlfs.fs.pieces import PIECE_SIZE
from eotdlfs.repository import FileEntry, Record, Repository

log = logging.getLogger(__name__)

TRIGGER = "catalog.json"  # the root document of a STAC version
DOCUMENT_SUFFIX = ".json"
WALK_OPENS = 4  # small files of one folder opened in a row that make a walk (a script's few opens do not)
MAX_WALKS = 2  # folders fetched ahead at once
RESUME_AFTER_S = 60.0  # a version's fetching ahead, stopped by a failed or late request, may start again

VersionKey = tuple[str, int]  # (record id, version)
PlanKey = tuple[str, int, "str | None"]  # (record id, version, folder; None: the STAC documents)


@dataclass
class _Plan:
    """One plan's files to fetch, in path order, and where fetching stands."""

    record: Record
    version: int
    entries: list[FileEntry]
    index: dict[str, int]
    cursor: int = 0  # the next entry to ask for
    ahead: int = 0  # bytes asked for and not opened yet
    batches: dict[str, threading.Event] = field(default_factory=dict)  # path -> set once its request ended
    opened: set[str] = field(default_factory=set)  # opened before they were asked for: never asked for
    ended: bool = False


class SmallFilePrefetch:
    def __init__(self, repo: Repository, namespace: Namespace, fetcher: BlockFetcher, workers: int = 2,
                 batch_files: int = 256, batch_bytes: int = 4 << 20, ahead_bytes: int = 32 << 20,
                 wait: float = 10.0, resume_after: float = RESUME_AFTER_S,
                 silent: Callable[[], bool] = lambda: False):
        # Set once.
        self.repo = repo
        self.namespace = namespace
        self.fetcher = fetcher
        self.cache = fetcher.cache
        self.workers = workers
        self.batch_files = batch_files
        self.batch_bytes = min(batch_bytes, ahead_bytes)
        self.ahead_bytes = ahead_bytes
        self.wait = wait
        self.resume_after = resume_after
        self.silent = silent
        self._pool = ThreadPoolExecutor(workers + 1, thread_name_prefix="prefetch")
        self._closed = threading.Event()
        # Guarded by _lock.
        self._lock = threading.Lock()
        self._plans: dict[PlanKey, _Plan | None] = {}  # None: being planned
        self._walks: list[PlanKey] = []  # the folders' plans, oldest first
        self._streaks: dict[VersionKey, tuple[str, set[str]]] = {}  # -> (folder, its small files opened in a row)
        self._stopped: dict[VersionKey, float] = {}  # version -> when its fetching ahead failed or came late
        self._running = 0
        self.fetched = 0  # files stored, for status and tests

    def opened(self, node: Node) -> None:
        """A file of the read-only tree is being opened: start a plan at a catalog or a walk,
        and wait for a planned file's request."""
        entry = node.entry
        if entry is None:
            return
        version = (node.record.id, node.version)
        folder = entry.path.rpartition("/")[0]
        silent = self.silent()  # the plans' books are still kept: they go on once the server answers
        waits = []
        with self._lock:
            if self._closed.is_set() or self._resting(version):
                return
            if not silent and entry.path == TRIGGER and (*version, None) not in self._plans:
                self._start((*version, None), node, DOCUMENT_SUFFIX)
            if not silent and self._walking(version, folder, entry):
                self._start((*version, folder), node, "")
            plans = [plan for plan in (self._plans.get((*version, None)), self._plans.get((*version, folder)))
                     if plan is not None and not plan.ended]
            for plan in plans:
                event = plan.batches.pop(entry.path, None)
                if event is not None:
                    plan.ahead -= entry.size
                    waits.append((plan, event))
                elif plan.index.get(entry.path, -1) >= plan.cursor:
                    plan.opened.add(entry.path)
        if silent:
            return
        for plan in plans:
            self._fill(plan)
        for plan, event in waits:
            if not event.wait(self.wait):
                log.warning("prefetch of %s/%s is %.0f s late: its files are read one by one from now on",
                            plan.record.kind, plan.record.name, self.wait)
                self._stop(plan)

    def close(self) -> None:
        self._closed.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _resting(self, version: VersionKey) -> bool:
        """True while VERSION's fetching ahead is stopped (under _lock)."""
        stopped = self._stopped.get(version)
        if stopped is None:
            return False
        if time.monotonic() - stopped < self.resume_after:
            return True
        del self._stopped[version]
        return False

    def _walking(self, version: VersionKey, folder: str, entry: FileEntry) -> bool:
        """Count ENTRY's open in its folder's streak (under _lock); True once the streak is a walk
        that has no plan."""
        if not 0 < entry.size <= self.cache.block_size or self._plans.get((*version, folder)) is not None:
            return False
        streak = self._streaks.get(version)
        if streak is None or streak[0] != folder:
            streak = self._streaks[version] = (folder, set())
        streak[1].add(entry.path)
        return len(streak[1]) >= WALK_OPENS and (*version, folder) not in self._plans

    def _start(self, key: PlanKey, node: Node, suffix: str) -> None:
        """Plan KEY in the background (under _lock); a folder's plan ends the oldest beyond MAX_WALKS."""
        self._plans[key] = None
        if key[2] is not None:
            self._walks.append(key)
            while len(self._walks) > MAX_WALKS:
                old = self._plans.pop(self._walks.pop(0), None)
                if old is not None:
                    old.ended = True
        self._pool.submit(self._plan, key, node.record, node.version, suffix)

    def _plan(self, key: PlanKey, record: Record, version: int, suffix: str) -> None:
        folder = key[2]
        try:
            tree = self.namespace.tree(record, version)
            paths = (tree.files if folder is None
                     else [f"{folder}/{name}" if folder else name for name in tree.children.get(folder, [])])
            entries = sorted((e for e in map(tree.files.get, paths) if e is not None and e.path.endswith(suffix)
                              and 0 < e.size <= self.cache.block_size), key=lambda e: e.path)
        except Exception as exc:  # the reads go on without a plan
            log.info("no prefetch in %s/%s v%d: %s", record.kind, record.name, version, exc)
            entries = []
        plan = _Plan(record, version, entries, {e.path: i for i, e in enumerate(entries)})
        with self._lock:
            if key not in self._plans or self._plans[key] is not None:
                return  # ended by a newer walk meanwhile
            streak = self._streaks.get(key[:2])
            if streak is not None and streak[0] == folder:  # its walker's opens so far: not asked for
                plan.opened |= streak[1]
            self._plans[key] = plan
        log.info("prefetching %d files of %s/%s v%d%s", len(entries), record.kind, record.name, version,
                 "" if folder is None else f", folder '{folder}'")
        self._fill(plan)

    def _wanted(self, batch: list[FileEntry]) -> list[FileEntry]:
        """BATCH's files neither cached (one index read for all: one each took 1-5 ms a request) nor failed."""
        cached = self.cache.held((entry.checksum, 0) for entry in batch)
        return [entry for entry in batch
                if (entry.checksum, 0) not in cached and not self.fetcher.has_failed(entry.checksum)]

    def _fill(self, plan: _Plan) -> None:
        """Start requests for PLAN's next files, within the workers and the bytes ahead."""
        while True:
            with self._lock:
                if plan.ended or self._closed.is_set() or self._running >= self.workers:
                    return
                batch, size, at = [], 0, plan.cursor
                while at < len(plan.entries) and len(batch) < self.batch_files:
                    entry = plan.entries[at]
                    if entry.path not in plan.opened:
                        if batch and size + entry.size > self.batch_bytes:
                            break
                        batch.append(entry)
                        size += entry.size
                    at += 1
                if not batch or (plan.ahead and plan.ahead + size > self.ahead_bytes):
                    return
                plan.cursor = at
                done = threading.Event()
                for entry in batch:
                    plan.batches[entry.path] = done
                plan.ahead += size
                self._running += 1
            try:
                self._pool.submit(self._fetch, plan, batch, done)
            except RuntimeError:  # closed meanwhile
                done.set()
                return

    def _fetch(self, plan: _Plan, batch: list[FileEntry], done: threading.Event) -> None:
        try:
            # Checked here, not when planning: a walker does not wait for 10,000 lookups to start.
            wanted = self._wanted(batch)
            contents = self.repo.read_files(plan.record, wanted) if wanted else []
            if not self._closed.is_set():  # the cache closes at unmount
                self._store(wanted, contents)
        except Exception as exc:  # readers fetch these themselves
            log.warning("prefetch of %d files of %s/%s failed, stopped: %s", len(batch), plan.record.kind,
                        plan.record.name, exc)
            self._stop(plan)
        finally:
            done.set()
            with self._lock:
                self._running -= 1
        self._fill(plan)

    def _stop(self, plan: _Plan) -> None:
        """End fetching ahead in PLAN's version, its other plans too, for `resume_after` s."""
        version = (plan.record.id, plan.version)
        with self._lock:
            self._stopped[version] = time.monotonic()
            plan.ended = True
            for key in [key for key in self._plans if key[:2] == version]:
                other = self._plans.pop(key)
                if other is not None:
                    other.ended = True
            self._walks = [key for key in self._walks if key[:2] != version]
            self._streaks.pop(version, None)

    def _store(self, batch: list[FileEntry], contents: list) -> None:
        checked = []
        for entry, data in zip(batch, contents):
            if len(data) != entry.size or hashlib.sha1(data).hexdigest() != entry.checksum:
                log.warning("prefetched %s does not match its SHA-1: left to its reader", entry.path)
                continue
            checked.append((entry, memoryview(data)))
        # Files shorter than a piece go in the index, as short pieces do, in one transaction: a
        # block file each cost 2.6 ms, and a request's 256 files kept their walker waiting 0.7 s.
        inline = [(entry.checksum, 0, view) for entry, view in checked if entry.size < PIECE_SIZE]
        if inline:
            self.cache.put_inline(inline)
        for entry, view in checked:
            if entry.size >= PIECE_SIZE:
                self.cache.put(entry.checksum, 0, view)
            self.fetcher.recent.add(entry.checksum, {0: view})
        with self._lock:
            self.fetched += len(checked)
