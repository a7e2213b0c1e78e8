"""Fetching a STAC version's small documents ahead of a walker (pystac, a training script).

A walk of a catalog opens thousands of JSON documents of a few KiB one after another; each
cold one cost a round trip to the server on the walker's path. When a version's root
`catalog.json` is opened, its small `.json` files (one block at most, not cached yet) are
fetched in path order, many per request (`Repository.read_files`), by a few threads, at
most `ahead_bytes` fetched and not yet opened. Each is checked against its SHA-1, whole,
before it enters the block cache (and the fetcher's memory of recent blocks), so a reader
finds it as if it had fetched it itself; one that fails is dropped and read as usual.

An open of a planned document waits for the request bringing it, at most `wait` s; one the
plan has not reached yet is read as usual and the plan goes on after it (the walker went
ahead, or another way). A failed request, or one later than `wait`, ends the plan: readers
fetch as they did without it (a silent server is not waited for twice by every open).
`close` stops it at unmount.

Locks. `DocumentPrefetch._lock` guards the plans and the count of requests in flight and is
a leaf: the repository, the cache and the fetcher are called without it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from eotdlfs.fs.fetcher import BlockFetcher
from eotdlfs.fs.namespace import Namespace, Node
from eotdlfs.repository import FileEntry, Record, Repository

log = logging.getLogger(__name__)

TRIGGER = "catalog.json"  # the root document of a STAC version
DOCUMENT_SUFFIX = ".json"


@dataclass
class _Plan:
    """One version's documents to fetch, in order, and where fetching stands."""

    record: Record
    entries: list[FileEntry]
    index: dict[str, int]
    cursor: int = 0  # the next entry to ask for
    ahead: int = 0  # bytes asked for and not opened yet
    batches: dict[str, threading.Event] = field(default_factory=dict)  # path -> set once its request ended
    ended: bool = False


class DocumentPrefetch:
    def __init__(self, repo: Repository, namespace: Namespace, fetcher: BlockFetcher, workers: int = 2,
                 batch_files: int = 256, batch_bytes: int = 4 << 20, ahead_bytes: int = 32 << 20,
                 wait: float = 10.0):
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
        self._pool = ThreadPoolExecutor(workers + 1, thread_name_prefix="prefetch")
        self._closed = threading.Event()
        # Guarded by _lock.
        self._lock = threading.Lock()
        self._plans: dict[tuple[str, int], _Plan | None] = {}  # None: being planned
        self._running = 0
        self.fetched = 0  # documents stored, for status and tests

    def opened(self, node: Node) -> None:
        """A file of the read-only tree is being opened: start a version's plan at its
        catalog, and wait for a planned document's request."""
        if node.entry is None:
            return
        key = (node.record.id, node.version)
        with self._lock:
            known = key in self._plans
            plan = self._plans.get(key)
            if not known and node.entry.path == TRIGGER and not self._closed.is_set():
                self._plans[key] = None
                self._pool.submit(self._plan, node.record, node.version)
            if plan is None or plan.ended:
                return
            event = plan.batches.pop(node.entry.path, None)
            if event is not None:
                plan.ahead -= node.entry.size
            elif plan.index.get(node.entry.path, -1) >= plan.cursor:
                plan.cursor = plan.index[node.entry.path] + 1  # the walker went ahead: go on from there
        self._fill(plan)
        if event is not None and not event.wait(self.wait):
            log.warning("prefetch of %s/%s is %.0f s late: its documents are read one by one from now on",
                        plan.record.kind, plan.record.name, self.wait)
            with self._lock:
                plan.ended = True

    def close(self) -> None:
        self._closed.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _plan(self, record: Record, version: int) -> None:
        try:
            tree = self.namespace.tree(record, version)
            entries = sorted((e for e in tree.files.values() if self._wanted(e)), key=lambda e: e.path)
        except Exception as exc:  # the reads go on without a plan
            log.info("no prefetch of %s/%s v%d: %s", record.kind, record.name, version, exc)
            entries = []
        plan = _Plan(record, entries, {e.path: i for i, e in enumerate(entries)})
        with self._lock:
            self._plans[(record.id, version)] = plan
        log.info("prefetching %d documents of %s/%s v%d", len(entries), record.kind, record.name, version)
        self._fill(plan)

    def _wanted(self, entry: FileEntry) -> bool:
        return (entry.path.endswith(DOCUMENT_SUFFIX) and 0 < entry.size <= self.cache.block_size
                and not self.fetcher.has_failed(entry.checksum) and (entry.checksum, 0) not in self.cache)

    def _fill(self, plan: _Plan) -> None:
        """Start requests for PLAN's next documents, within the workers and the bytes ahead."""
        while True:
            with self._lock:
                if plan.ended or self._closed.is_set() or self._running >= self.workers:
                    return
                batch, size, at = [], 0, plan.cursor
                while at < len(plan.entries) and len(batch) < self.batch_files:
                    entry = plan.entries[at]
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
            contents = self.repo.read_files(plan.record, batch)
            if not self._closed.is_set():  # the cache closes at unmount
                self._store(batch, contents)
        except Exception as exc:  # readers fetch these themselves
            log.warning("prefetch of %d documents of %s/%s failed, stopped: %s", len(batch), plan.record.kind,
                        plan.record.name, exc)
            with self._lock:
                plan.ended = True
        finally:
            done.set()
            with self._lock:
                self._running -= 1
        self._fill(plan)

    def _store(self, batch: list[FileEntry], contents: list) -> None:
        for entry, data in zip(batch, contents):
            if len(data) != entry.size or hashlib.sha1(data).hexdigest() != entry.checksum:
                log.warning("prefetched %s does not match its SHA-1: left to its reader", entry.path)
                continue
            view = memoryview(data)
            self.cache.put(entry.checksum, 0, view)
            self.fetcher.recent.add(entry.checksum, {0: view})
            with self._lock:
                self.fetched += 1
