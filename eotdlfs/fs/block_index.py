"""The block cache's index (`block_cache`): diskcache's SQLite file, with bigger pages when new,
and the pieces of a run (one file, `BlockCache.put_runs`) going together."""

from __future__ import annotations

import logging
import re
import shutil
import sqlite3
from pathlib import Path

import diskcache

from eotdlfs.fs.block_disk import _BlockDisk

# Pages of a new index: a 64 KiB piece in 4 KiB pages (SQLite's default) is 17 pages, each
# written to the WAL and checkpointed on its own, ~250 us of CPU per piece stored; in 32 KiB
# pages ~105 us. Caches made before keep their pages (SQLite fixes them when a file is made).
INDEX_PAGE_SIZE = 32 << 10
# SQLite's page cache per connection, in KiB (diskcache's 8,192 pages, sized for 4 KiB pages)
INDEX_CACHE_KIB = 32 << 10
_BLOCK_FOLDER = re.compile(r"^[0-9a-f]{2}\Z")  # `_BlockDisk.filename`: XX/REST.val

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
    cache = diskcache.Cache(str(directory), disk=_BlockDisk, size_limit=size_limit,
                            eviction_policy="least-recently-used", disk_min_file_size=0, cull_limit=16,
                            sqlite_cache_size=-INDEX_CACHE_KIB)
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
