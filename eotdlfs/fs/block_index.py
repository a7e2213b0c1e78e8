"""The block cache's index (`block_cache`): diskcache's SQLite file, with bigger pages when new,
the pieces of a run (one file, `BlockCache.put_runs`) going together, and each thread's
connection opened ahead (`_Index`).

Locks. `_Index._spares_wanted` guards its spare connections and `_closing`; it is a leaf, and
no SQLite call is made under it."""

from __future__ import annotations

import logging
import os
import re
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterator

import diskcache

from eotdlfs.cachedir import free_bytes
from eotdlfs.fs.block_disk import _BlockDisk
from eotdlfs.fs.fork_gate import SQLITE_GATE

# Pages of a new index: a 64 KiB piece in 4 KiB pages (SQLite's default) is 17 pages, each
# written to the WAL and checkpointed on its own, ~250 us of CPU per piece stored; in 32 KiB
# pages ~105 us. Caches made before keep their pages (SQLite fixes them when a file is made).
INDEX_PAGE_SIZE = 32 << 10
# SQLite's page cache per connection, in KiB (diskcache's 8,192 pages, sized for 4 KiB pages)
INDEX_CACHE_KIB = 32 << 10
_BLOCK_FOLDER = re.compile(r"^[0-9a-f]{2}\Z")  # `_BlockDisk.filename`: XX/REST.val
SPARE_CONNECTIONS = 2  # a fresh mount's first file: the lookup's FUSE thread, the fetch worker that stores it
# A spare taken is replaced this long after: at once, opening it took the GIL from the thread
# that took one, in the middle of the first read it was taken for (0.5 ms more than no spare).
REPLACE_SPARE_AFTER_S = 0.2
PARAMETERS = 999  # SQLite's limit on a statement's parameters in old builds
LOOKUP_BATCH = 500  # keys per lookup
# Rows entered by one INSERT, not one statement each: in a transaction a statement that may fail part way
# (an INSERT, with diskcache's triggers on Cache and its unique key) keeps each page it changes in a
# statement journal, a copy of a 32 KiB page per row and index (12 writes to a temp file per row); the
# pieces of a COG window took 2.4 ms per 64 rows, in one statement 0.8.
INSERT_ROWS = PARAMETERS // 9

log = logging.getLogger(__name__)


def open_index(directory: Path, size_limit: int) -> diskcache.Cache:
    """The block cache's diskcache index in DIRECTORY, made with its pages and pragmas when new."""
    index = directory / diskcache.core.DBNAME
    if not index.exists():
        directory.mkdir(parents=True, exist_ok=True)
        _drop_unindexed_files(directory)
        made = sqlite3.connect(index)
        try:  # these hold once the file is in WAL mode, before diskcache makes its tables
            # Not waiting for the disk while the index is empty: 8 of a new index's 16 syncs, 20-40 ms
            # of the first read of a new cache dir (eotdl:// in a fresh container). One damaged in a
            # crash meanwhile is set aside and made again (`BlockCache`), as any damaged index is.
            made.execute("PRAGMA synchronous = OFF")
            made.execute(f"PRAGMA page_size = {INDEX_PAGE_SIZE}")
            made.execute("PRAGMA auto_vacuum = FULL")  # diskcache's: the file shrinks as blocks go
            made.execute("PRAGMA journal_mode = wal")
        finally:
            made.close()
    # Pages are read with pread, not through diskcache's 64 MiB memory map (`sqlite_mmap_size`): a
    # page the disk fails to read is then an error SQLite reports, where through the map it was a
    # SIGBUS that killed the mount (tests/reliability/test_failing_disk.py).
    cache = _Index(str(directory), disk=_BlockDisk, size_limit=size_limit,
                   eviction_policy="least-recently-used", disk_min_file_size=0, cull_limit=16,
                   sqlite_cache_size=-INDEX_CACHE_KIB, sqlite_mmap_size=0)
    # The pieces of a run share its file (`put_runs`; a piece's row alone has both a file and a
    # value, its offset): when one piece goes (evicted, dropped), diskcache removes the file, so
    # its row's siblings go in the same statement. Left behind, they stayed counted in the
    # cache's size (eviction then threw out good blocks to make room no one used), and a run
    # fetched again stored only the piece that went (`_stored`), its siblings misses for good.
    cache._sql("CREATE INDEX IF NOT EXISTS Cache_run_file ON Cache(filename)"
               " WHERE filename IS NOT NULL AND value IS NOT NULL")  # pieces only: not a block's, not an inline one's
    cache._sql("CREATE TRIGGER IF NOT EXISTS Cache_run_pieces_go_together AFTER DELETE ON Cache FOR EACH ROW"
               " WHEN OLD.filename IS NOT NULL AND OLD.value IS NOT NULL BEGIN"
               " DELETE FROM Cache WHERE filename = OLD.filename AND value IS NOT NULL; END")
    return cache


def _batches(items: list, size: int) -> Iterator[list]:
    """ITEMS in consecutive slices of at most SIZE (a statement's parameters are bounded)."""
    return (items[lo:lo + size] for lo in range(0, len(items), size))


def _drop_unindexed_files(directory: Path) -> None:
    """Remove the block files in DIRECTORY, whose index is about to be made new: no index names
    them, so nothing would ever read or evict them, and a cache whose index was deleted (or set
    aside as damaged) kept up to its whole size of them on its disk for good, outside its limit."""
    folders = [entry for entry in directory.iterdir() if entry.is_dir() and _BLOCK_FOLDER.match(entry.name)]
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    if folders:
        log.warning("the block cache in %s had no index: removed the block files it left (%d folders)",
                    directory, len(folders))


SQLITE_BUSY, SQLITE_IOERR, SQLITE_FULL = 5, 10, 13  # primary result codes (sqlite3.h)


def open_failure_advice(exc: sqlite3.Error, directory: Path, full_below: int) -> str:
    """What to do about a cache in DIRECTORY whose index SQLite cannot open (EXC), in words. A
    full disk often comes as an I/O error too (the WAL cannot be made), so its room is looked at."""
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    free = free_bytes(directory)
    if (free is not None and free < full_below) or code == SQLITE_FULL:
        return "its disk is full: free some room or choose another --cache-dir"
    if code == SQLITE_IOERR:
        return "its disk fails to read or write: choose a --cache-dir on another disk"
    if code == SQLITE_BUSY:
        return "another process holds it: choose another --cache-dir"
    return "is its disk full or failing? free some room or choose another --cache-dir"


class _GatedConnection(sqlite3.Connection):
    """A connection to the index closed through the fork gate, also by the garbage collector. A
    connection is in a reference cycle (with its statement cache), so the one of a thread that ended
    is closed by a collection, in whatever thread runs one next, outside any gate: a fork meanwhile
    copied SQLite's memory mutex locked into the child, whose first connection hung for good (gdb:
    `sqlite3Malloc`; the fork tests of test_block_cache failed about 1 run in 3 on a busy machine)."""

    _gate = SQLITE_GATE  # kept here: a collection at the interpreter's exit may find the module emptied
    _opened = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._opened = True

    def close(self) -> None:
        with self._gate:
            super().close()

    def __del__(self) -> None:
        # One whose opening failed (a failing disk) has nothing to close, and sqlite3 would
        # raise for it, logged as "Exception ignored in" with a traceback at each failure.
        if self._opened:
            self.close()


class _Index(diskcache.Cache):
    """diskcache's Cache, whose threads find their SQLite connection opened (diskcache's pragmas
    set) by a thread of its own: opening one took 0.4-0.7 ms of a thread's first call, which on a
    fresh mount was the first file's lookup. A thread keeps the one it takes, as diskcache's own.
    Not across a fork: the child opens its own (SQLite connections must not cross one). Every
    connection of this process is ours (`_GatedConnection`), diskcache's first one too."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._spares_pid = os.getpid()
        self._spares_wanted = threading.Condition()
        self._spares: list[sqlite3.Connection] = []  # guarded by _spares_wanted
        self._closing = False  # guarded by _spares_wanted
        made = self._local.__dict__.pop("con", None)  # diskcache's own, for its set-up: one of ours instead
        if made is not None:
            made.close()
        threading.Thread(target=self._open_spares, name="index-connections", daemon=True).start()

    @property
    def _con(self) -> sqlite3.Connection:
        local = self._local
        if getattr(local, "con", None) is None and getattr(self, "_spares_pid", None) == os.getpid():
            with self._spares_wanted:
                con = self._spares.pop() if self._spares else None
                if con is not None:
                    self._spares_wanted.notify()
            local.pid, local.con = self._spares_pid, con if con is not None else self._connect_spare()
        return super()._con

    def rows(self, columns: str, keys: list[str]) -> list[tuple]:
        """COLUMNS of the rows of KEYS, in batches of parameters SQLite takes (in the caller's transaction,
        if it has one)."""
        rows: list[tuple] = []
        for batch in _batches(keys, LOOKUP_BATCH):
            rows += self._sql(f"SELECT {columns} FROM Cache WHERE raw = 1 AND key IN ({','.join('?' * len(batch))})",
                              batch).fetchall()
        return rows

    def set_many(self, entries: list[tuple[str, object, object]]) -> None:
        """`set(key, value, read=True, tag=tag)` of each of ENTRIES (key, value, tag) in one transaction
        (the caller's, if it has one): the new keys in one INSERT of the rows `set` makes (its SELECT, INSERT
        and cull per entry, in Python, were most of storing a cold COG window's pieces, on the readers' GIL),
        a key already there through `set` (it replaces the row and removes the old file); then diskcache's
        cull, as many entries as entered, as `set` culls after each."""
        now, rows = time.time(), {}
        for key, value, tag in entries:
            db_key, raw = self._disk.put(key)
            size, mode, filename, db_value = self._disk.store(value, True, key=key)
            rows[key] = (db_key, raw, now, now, tag, size, mode, filename, db_value)
        with self._transact() as (sql, cleanup):
            present = {key for (key,) in self.rows("key", list(rows))}
            for batch in _batches([row for key, row in rows.items() if key not in present], INSERT_ROWS):
                self._con.execute(
                    "INSERT INTO Cache(key, raw, store_time, expire_time, access_time, access_count, tag, size, mode,"
                    " filename, value) VALUES " + ",".join(["(?, ?, ?, NULL, ?, 0, ?, ?, ?, ?, ?)"] * len(batch)),
                    [value for row in batch for value in row])
            limit = self.cull_limit
            self.reset("cull_limit", 0, update=False)
            try:
                for key, value, tag in entries:
                    if key in present:
                        self.set(key, value, read=True, tag=tag)
            finally:
                self.reset("cull_limit", limit, update=False)
            self._cull(now, sql, cleanup, max(limit, len(entries)))

    def close(self) -> None:
        """This thread's connection; at the cache's end (in its own process), the spare ones too."""
        super().close()
        if getattr(self, "_spares_pid", None) != os.getpid():
            return
        with self._spares_wanted:
            self._closing = True
            spares, self._spares = self._spares, []
            self._spares_wanted.notify()
        for con in spares:
            con.close()

    def _open_spares(self) -> None:
        while True:
            with self._spares_wanted:
                replacing = len(self._spares) >= SPARE_CONNECTIONS
                while not self._closing and len(self._spares) >= SPARE_CONNECTIONS:
                    self._spares_wanted.wait()
                if self._closing:
                    return
            if replacing:
                time.sleep(REPLACE_SPARE_AFTER_S)
            try:
                with SQLITE_GATE:
                    con = self._connect_spare()
            except sqlite3.Error as exc:  # each thread opens its own then, as diskcache does
                log.debug("no spare connection to the block index: %s", exc)
                return
            with self._spares_wanted:
                if not self._closing:
                    self._spares.append(con)
                    continue
            con.close()
            return

    def _connect_spare(self) -> sqlite3.Connection:
        """A connection any one thread may take, set up as diskcache sets up its own (`Cache._con`)."""
        con = sqlite3.connect(os.path.join(self.directory, diskcache.core.DBNAME), timeout=self.timeout,
                              isolation_level=None, check_same_thread=False, factory=_GatedConnection)
        self._local.pid, self._local.con = os.getpid(), con  # `reset` sets pragmas on this thread's connection
        try:
            for key, value in con.execute("SELECT key, value FROM Settings").fetchall():
                if key.startswith("sqlite_"):
                    self.reset(key, value, update=False)
        except BaseException:
            con.close()
            raise
        finally:
            del self._local.con
        return con
