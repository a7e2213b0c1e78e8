"""Content-addressed block store on disk: blocks of file bytes keyed by (SHA-1, block index).

Built on `diskcache` so the size limit, LRU eviction and crash safety come from a well-kept
library. Every block is stored in a file (`disk_min_file_size=0`; the blocks of one fetch share
one, `put_runs`), so a reader gets an open file and reads it with `os.pread`, which releases the
GIL. Identical files in different versions or records share blocks because the key is the
content's checksum.

Small blocks (a seeking reader's 64 KiB pieces) share files too, a tile's or a stored batch's
(one `writev`): a file and a transaction per piece were most of a cold seeking read's CPU; in
the index itself (`put_inline`: diskcache's inline values, in `volume()`) every page is written
twice (WAL, checkpoint), 45 % of the mount's CPU on random 4 KiB reads. Only a piece shorter
than the others goes there.

Blocks in page-aligned memory are written with O_DIRECT (`_BlockDisk`): a cold read hands
its readers the fetched bytes from memory, so pushing a second copy of every byte through
the page cache would only cost fresh pages (on this project's VMs, 2.7 CPU-s per GiB
against 0.3 for O_DIRECT) and evict pages someone still reads.

Every block is stored with its CRC32C (diskcache's `tag` column) and checked when it is
read back from disk: a block that fails (a flipped bit, a truncated file, a block cached by
a version without checks) is dropped and is a cache miss, so the caller fetches it again.
The check costs about 0.04 CPU-s per GiB (`block_check_cpu_s_per_GiB` of
scripts/bench_mount.py); readers then copy from the checked bytes in memory.

The cache never takes the last of its disk: before writing it evicts until the write leaves
`reserve_bytes` free, so staging (under the same cache dir by default) can still record a
`mkdir`, `rm` or small file on a disk the cache has filled.

A block read back is a plain read of its row (never waiting behind a write transaction); its
access time, for the LRU order, is entered with the next write (`_touch`). A key found absent
is a miss without a lookup for a moment (`absent_keys`).

A process forking (multiprocessing's workers) waits for the writes under way: SQLite's lock
bookkeeping is copied into the child, and a write transaction copied mid-way left the child's
own connection to the index locked out for good. It waits for the reads under way too
(`fork_gate`): a SQLite mutex copied locked hung the child's first read of the index.

Locks. `_db` serialises calls into diskcache that write (and is held across a fork), and is
taken before `SQLITE_GATE`, which every call into the index passes; `_lock` guards the hit, miss, error
and damage counters and the access times not entered yet; `_room` guards the bytes being
written and is taken before `_db` (eviction makes room under it). Callers (fetcher,
verifier) may hold their own locks when they call in; nothing here calls out while holding one.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import threading
import time
import weakref
from pathlib import Path
from typing import Iterable, Sequence

import crc32c
import diskcache

from eotdlfs.fs.absent_keys import AbsentKeys
from eotdlfs.fs.block_disk import _BlockDisk, _InlineBlock, _WrittenBlock
from eotdlfs.fs.block_index import open_failure_advice, open_index
from eotdlfs.fs.fork_gate import SQLITE_GATE

DEFAULT_BLOCK_SIZE = 1 << 20
# Left free on the cache's disk: the larger of these two (mountpoint-s3 keeps 5 % free too).
RESERVE_FRACTION = 0.05
MIN_RESERVE_BYTES = 16 << 20
# What a full or broken cache disk raises: OSError (ENOSPC) from block files, sqlite3 errors
# ('database or disk is full') from the index, diskcache.Timeout from a locked index.
CACHE_ERRORS = (OSError, sqlite3.Error, diskcache.Timeout)

log = logging.getLogger(__name__)


TOUCH_BATCH = 256  # access times noted before a reader enters them itself

def block_key(checksum: str, index: int) -> str:
    return f"{checksum}:{index}"


def block_crc(data: bytes | memoryview) -> int:
    """The CRC32C stored with a block (hardware-assisted; releases the GIL on large buffers)."""
    return crc32c.crc32c(data)


def reserve_bytes(st: os.statvfs_result) -> int:
    """What the block cache leaves free on a disk of ST."""
    return max(MIN_RESERVE_BYTES, int(st.f_blocks * st.f_frsize * RESERVE_FRACTION))


_open_caches: weakref.WeakSet = weakref.WeakSet()


def _hold_sqlite() -> None:
    for cache in list(_open_caches):  # every `_db` before the gate: a writer inside it holds its `_db`
        cache._db.acquire()
    SQLITE_GATE.close()


def _release_writes() -> None:
    for cache in list(_open_caches):
        if cache._db.locked():
            cache._db.release()


def _release_in_parent() -> None:
    SQLITE_GATE.open()
    _release_writes()


def _release_in_child() -> None:
    SQLITE_GATE.reset_in_child()
    _release_writes()


os.register_at_fork(before=_hold_sqlite, after_in_parent=_release_in_parent, after_in_child=_release_in_child)


class BlockCache:
    """Blocks of BLOCK_SIZE bytes (the last block of a file may be shorter) in DIRECTORY."""

    def __init__(self, directory: Path, size_limit: int, block_size: int = DEFAULT_BLOCK_SIZE):
        self.block_size = block_size
        try:
            with SQLITE_GATE:
                self._cache = open_index(directory, size_limit)
        except sqlite3.OperationalError as exc:
            # A full disk, an I/O error or a lock held: the index is not damaged, and a new one
            # would meet the same disk, so the cache is kept and the mount refused in one line.
            raise OSError(errno.EIO, f"cannot open the block cache in {directory} ({exc}); "
                          + open_failure_advice(exc, directory, MIN_RESERVE_BYTES)) from exc
        except sqlite3.DatabaseError as exc:
            # Blocks are only a cache: a damaged index (a failing disk) costs refetching, not a mount.
            # The index is kept for a look; the blocks it named go (`open_index`), not their room.
            aside = directory.with_name(f"{directory.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
            aside.mkdir(exist_ok=True)
            for part in directory.glob(f"{diskcache.core.DBNAME}*"):
                os.replace(part, aside / part.name)
            log.error("the block cache's index is damaged (%s): moved to %s, starting empty", exc, aside)
            with SQLITE_GATE:
                self._cache = open_index(directory, size_limit)
        # One diskcache call at a time: threads queue here (waking at once) instead of in
        # SQLite's busy handler, which sleeps for milliseconds between retries.
        self._db = threading.Lock()
        _open_caches.add(self)
        # Guarded by _lock: counters for `status`.
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.write_errors = 0
        self.last_error: str | None = None
        self.damaged = 0
        self._touched: dict[str, float] = {}  # key -> when read back, not yet entered (`_touch`)
        self._absent = AbsentKeys()  # misses without asking the index again
        # Guarded by _room: bytes being written, which the disk's free space does not show yet.
        self._room = threading.Lock()
        self._writing = 0

    def load_block(self, checksum: str, index: int | str) -> memoryview | None:
        """The block's checked bytes for a reader, or None when it is not cached or failed its
        check (counts a hit or a miss)."""
        return self.load_blocks(checksum, [index]).get(index)

    def load_blocks(self, checksum: str, indices: Sequence[int | str]) -> dict[int | str, memoryview]:
        """`load_block` of each of INDICES at once: the checked bytes of those cached, by index."""
        found = self.read_blocks(checksum, indices)
        with self._lock:
            self.hits += len(found)
            self.misses += len(indices) - len(found)
        return found

    def read_block(self, checksum: str, index: int | str) -> memoryview | None:
        """The block's bytes read from disk and checked against their CRC32C; None when the
        block is not cached, or failed its check (then it is dropped)."""
        return self.read_blocks(checksum, [index]).get(index)

    def read_blocks(self, checksum: str, indices: Sequence[int | str]) -> dict[int | str, memoryview]:
        """`read_block` of each of INDICES: one plain read of the index for them all (a seeking
        reader's tile is a dozen pieces, and a lookup each was most of a warm window's time); their
        access times, for the LRU order, are entered later, with the next write (`_touch`)."""
        keys = {block_key(checksum, index): index for index in indices}
        found = {}
        for key, mode, filename, value, crc, size in self._held_rows("key, mode, filename, value, tag, size", keys):
            data = self._read_back(checksum, keys[key], mode, filename, value, crc, size)
            if data is not None:
                self._touch(key)
                found[keys[key]] = data
        return found

    def _read_back(self, checksum: str, index: int | str, mode: int, filename: str | None, value: bytes | int | None,
                   crc: int | None, size: int) -> memoryview | None:
        """The bytes of one entry of the index (kept in it, in its file, or at VALUE in a run's file), checked."""
        try:
            handle = self._cache.disk.fetch(mode, filename, value, True)
        except OSError:  # its file is gone (evicted since the lookup, or with another block of its run): a miss,
            self.drop_blocks(checksum, [index])  # and no longer counted as cached (readers and hashing wait for those)
            return None
        if isinstance(handle, bytes):  # a block kept in the index (`put_inline`)
            data = handle
        else:
            try:
                with handle:
                    data = handle.read() if value is None else os.pread(handle.fileno(), size, value)
            except OSError as exc:  # a failing disk: the block is as good as damaged
                return self._damaged(checksum, index, str(exc))
        if crc is None:
            return self._damaged(checksum, index, "no CRC32C stored with it")
        if block_crc(data) != crc:
            return self._damaged(checksum, index, f"CRC32C mismatch, {len(data)} bytes")
        return memoryview(data)

    def _damaged(self, checksum: str, index: int, why: str) -> None:
        """Drop a block that failed its check (the caller fetches it again) and say so."""
        self.drop_blocks(checksum, [index])
        with self._lock:
            self.damaged += 1
            count = self.damaged
        if count == 1 or count % 1000 == 0:
            log.warning("cached block %s of %s failed its check (%s); dropped and fetched again"
                        " (%d damaged blocks so far)", index, checksum, why, count)

    def _touch(self, key: str) -> None:
        """Note that KEY was read, for the LRU order: entered with the next write transaction, or
        by a reader once many are waiting and no write is under way (a warm-only workload)."""
        with self._lock:
            self._touched[key] = time.time()
            many = len(self._touched) >= TOUCH_BATCH
        if many and self._db.acquire(blocking=False):
            try:
                with SQLITE_GATE, self._cache.transact():
                    self._enter_touches()
            except CACHE_ERRORS as exc:
                self._failed(exc)
            finally:
                self._db.release()

    def _enter_touches(self) -> None:
        """Enter the access times noted by `_touch` (in the caller's transaction, `_db` held)."""
        with self._lock:
            touched, self._touched = self._touched, {}
        if touched:
            self._cache._con.executemany("UPDATE Cache SET access_time = ? WHERE key = ? AND raw = 1",
                                         [(when, key) for key, when in touched.items()])

    def __contains__(self, item: tuple[str, int]) -> bool:
        return bool(self.holding(item[0], [item[1]]))

    def holding(self, checksum: str, indices: Iterable[int | str]) -> set[int | str]:
        """Those of INDICES whose blocks the index holds, in one read."""
        return {index for _, index in self.held((checksum, index) for index in indices)}

    def held(self, blocks: Iterable[tuple[str, int | str]]) -> set[tuple[str, int | str]]:
        """Those of BLOCKS (checksum, index), of any files, that the index holds, in one read."""
        keys = {block_key(checksum, index): (checksum, index) for checksum, index in blocks}
        return {keys[key] for (key,) in self._held_rows("key", keys)}

    def _held_rows(self, columns: str, keys: Iterable[str]) -> list[tuple]:
        """COLUMNS (the key first) of the index's rows of KEYS, in one plain read (WAL readers never wait
        for writers, so a miss costs a read), keys found absent a moment ago not asked again (`absent_keys`);
        none when the index fails (damaged under the mount: misses)."""
        asked, mark = self._absent.may_hold(keys)
        if not asked:
            return []
        try:
            rows = self._rows(columns, asked)
        except CACHE_ERRORS as exc:
            self._failed(exc)
            return []
        self._absent.note(set(asked).difference(row[0] for row in rows), mark)
        return rows

    def put(self, checksum: str, index: int, data: bytes | memoryview) -> bool:
        """Store a block; False when the cache cannot take it (disk full): the caller has the
        bytes anyway, so a full cache costs speed, never a read."""
        return self.put_blocks(checksum, {index: data})

    def put_blocks(self, checksum: str, blocks: dict[int, bytes | memoryview]) -> bool:
        """Store BLOCKS (index -> bytes) as `put` does, entered in one transaction."""
        disk: _BlockDisk = self._cache.disk
        nbytes = sum(memoryview(data).nbytes for data in blocks.values())
        written = []
        try:
            if not self._make_room(nbytes):
                raise OSError(errno.ENOSPC, "no room beyond the disk's reserve, even after evicting")
            try:
                for index, data in blocks.items():  # outside the lock: a block takes a millisecond
                    written.append((block_key(checksum, index), disk.write_block(data), block_crc(data)))
            finally:
                with self._room:
                    self._writing -= nbytes
            self._enter(written)
        except CACHE_ERRORS as exc:
            for _, block, _ in written:
                disk.remove(block.filename)
            self._failed(exc)
            return False
        return True

    def put_inline(self, blocks: list[tuple[str, int | str, bytes | memoryview]]) -> bool:
        """Store BLOCKS (checksum, index, bytes), of any files, in the index itself, in one
        transaction; False as `put`. For small blocks (pieces): a file of its own per block
        cost a file create and an O_DIRECT write, most of a cold seeking read's CPU."""
        stored = self._stored([block_key(checksum, index) for checksum, index, _ in blocks])
        entries = [(block_key(checksum, index), _InlineBlock(memoryview(data).cast("B")), block_crc(data))
                   for checksum, index, data in blocks if block_key(checksum, index) not in stored]
        nbytes = sum(entry.data.nbytes for _, entry, _ in entries)
        try:
            if not self._make_room(nbytes):
                raise OSError(errno.ENOSPC, "no room beyond the disk's reserve, even after evicting")
            try:
                self._enter(entries)
            finally:
                with self._room:
                    self._writing -= nbytes
        except CACHE_ERRORS as exc:
            self._failed(exc)
            return False
        return True

    def put_runs(self, runs: list[tuple[list[tuple[str, int | str]], list[memoryview]]], piece_size: int) -> bool:
        """Store RUNS (keys, parts): each run's parts one after the other in one file (as `put_blocks`),
        as pieces of PIECE_SIZE entered under its KEYS (checksum, index), each with its CRC32C, in one
        transaction; False as `put`. Every part but the last is whole pieces. When eviction or a drop
        removes a piece's file, its run's other pieces are misses (dropped as read)."""
        disk: _BlockDisk = self._cache.disk
        stored = self._stored([block_key(*key) for keys, _ in runs for key in keys])
        runs = [run for run in runs if any(block_key(*key) not in stored for key in run[0])]
        runs = [(keys, [memoryview(part).cast("B") for part in parts]) for keys, parts in runs]
        nbytes = sum(part.nbytes for _, parts in runs for part in parts)
        written, entries = [], []
        try:
            if not self._make_room(nbytes):
                raise OSError(errno.ENOSPC, "no room beyond the disk's reserve, even after evicting")
            try:
                for keys, parts in runs:  # outside the lock, as in `put_blocks`
                    written.append(disk.write_block(parts))
                    pieces = [part[at:at + piece_size] for part in parts for at in range(0, part.nbytes, piece_size)]
                    for at, key, piece in zip(range(0, written[-1].size, piece_size), keys, pieces):
                        if block_key(*key) in stored:
                            continue
                        entries.append((block_key(*key), _WrittenBlock(written[-1].filename, piece.nbytes, at),
                                        block_crc(piece)))
            finally:
                with self._room:
                    self._writing -= nbytes
            self._enter(entries)
        except CACHE_ERRORS as exc:
            for block in written:
                disk.remove(block.filename)
            self._failed(exc)
            return False
        return True

    def _stored(self, keys: list[str]) -> set[str]:
        """Which of KEYS the index holds. A piece stored again keeps its entry: replacing it would
        remove its file, which the other pieces of its run share (`put_runs`)."""
        try:
            return {key for (key,) in self._rows("key", keys)}
        except CACHE_ERRORS as exc:  # an index damaged under the mount: the store fails as it comes
            self._failed(exc)
            return set()

    def _rows(self, columns: str, keys: list[str]) -> list[tuple]:
        """COLUMNS of the index's rows of KEYS (a plain read)."""
        with SQLITE_GATE:
            return self._cache.rows(columns, keys)

    def _enter(self, entries: list) -> None:
        """Enter ENTRIES (key, stored value, CRC32C) in one transaction, with the access times noted."""
        with self._db, SQLITE_GATE, self._cache.transact():
            self._enter_touches()
            self._cache.set_many(entries)
        self._absent.entered(key for key, _, _ in entries)

    def _make_room(self, nbytes: int) -> bool:
        """Evict least-recently-used blocks until NBYTES more leave the reserve free on the
        cache's disk, and count them as being written; False when they cannot fit."""
        with self._room:
            short = nbytes + self._writing - self._spare()
            if short > 0:
                self._evict(short)
                short = nbytes + self._writing - self._spare()
            if short > 0:
                return False
            self._writing += nbytes
            return True

    def _spare(self) -> int:
        """Free bytes on the cache's disk beyond the reserve (negative when in the reserve)."""
        st = os.statvfs(self._cache.directory)
        return st.f_bavail * st.f_frsize - reserve_bytes(st)

    def _evict(self, nbytes: int) -> None:
        """Evict least-recently-used blocks worth NBYTES, by diskcache's own cull under a
        lowered size limit (in memory only: the stored limit stays)."""
        with self._db, SQLITE_GATE:
            limit = self._cache.size_limit
            self._cache.reset("size_limit", max(0, self._cache.volume() - nbytes), update=False)
            try:
                self._cache.cull()
            finally:
                self._cache.reset("size_limit", limit, update=False)

    def _failed(self, exc: BaseException) -> None:
        """A store, lookup or drop the cache's disk refused: the reader has (or fetches) the bytes."""
        with self._lock:
            self.write_errors += 1
            self.last_error = str(exc)
            first = self.write_errors == 1
        if first or self.write_errors % 1000 == 0:
            log.warning("the block cache failed (%d errors so far: reads fetch from the server instead): %s",
                        self.write_errors, exc)

    def drop_blocks(self, checksum: str, indices) -> None:
        try:
            for index in indices:
                with self._db, SQLITE_GATE:
                    self._cache.delete(block_key(checksum, index))
        except CACHE_ERRORS as exc:  # left in place, still failing its check, or found later
            self._failed(exc)

    def volume(self) -> int:
        with SQLITE_GATE:
            return self._cache.volume()

    @property
    def size_limit(self) -> int:
        return int(self._cache.size_limit)

    def stats(self) -> dict[str, int]:
        try:
            used: int | None = self.volume()
        except CACHE_ERRORS as exc:
            used = None
            self._failed(exc)
        with self._lock:
            return {"hits": self.hits, "misses": self.misses, "write_errors": self.write_errors,
                    "last_error": self.last_error, "damaged_blocks": self.damaged, "bytes_used": used,
                    "size_limit": self.size_limit, "block_size": self.block_size}

    def close(self) -> None:
        try:  # the access times noted since the last write
            with self._db, SQLITE_GATE, self._cache.transact():
                self._enter_touches()
        except CACHE_ERRORS as exc:
            self._failed(exc)
        with SQLITE_GATE:
            self._cache.close()
