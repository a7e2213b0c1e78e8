"""The block store: blocks written from page-aligned memory (O_DIRECT) or from plain bytes
read back exactly, also from a new cache object; a file system refusing O_DIRECT still stores;
a block damaged on disk is a miss, never bytes."""

from __future__ import annotations

import errno
import gc
import mmap
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import diskcache

from eotdlfs.fs.block_cache import BlockCache
from eotdlfs.fs.block_index import INDEX_CACHE_KIB, INSERT_ROWS
from eotdlfs.fs.fork_gate import SQLITE_GATE

BS = 1 << 20


def aligned(data: bytes) -> memoryview:
    """DATA in fresh page-aligned memory, as the HTTP client hands a fetched range over."""
    view = memoryview(mmap.mmap(-1, len(data), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS))
    view[:] = data
    return view


def test_blocks_from_aligned_memory_and_from_bytes_read_back_exactly(tmp_path):
    whole, short, plain = os.urandom(BS), os.urandom(12_345), os.urandom(BS)
    cache = BlockCache(tmp_path / "c", 1 << 30, BS)
    assert cache.put("sum", 0, aligned(whole))
    assert cache.put("sum", 1, aligned(short))  # a final block: not a multiple of 4 KiB
    assert cache.put("other", 0, plain)
    assert [cache.read_block("sum", 0), cache.read_block("sum", 1), cache.read_block("other", 0)] == [whole, short, plain]
    cache.close()
    again = BlockCache(tmp_path / "c", 1 << 30, BS)
    assert again.load_block("sum", 0) == whole
    assert again.volume() >= 2 * BS + len(short)
    again.close()


def test_a_file_system_refusing_o_direct_still_gets_every_block(tmp_path, monkeypatch):
    real_open, direct_tries = os.open, []

    def refusing_open(path, flags, mode=0o777, **kw):  # fault injection: tmpfs-like EINVAL
        if flags & os.O_DIRECT:
            direct_tries.append(path)
            raise OSError(errno.EINVAL, "Invalid argument", path)
        return real_open(path, flags, mode, **kw)

    monkeypatch.setattr(os, "open", refusing_open)
    cache = BlockCache(tmp_path / "c", 1 << 30, BS)
    blocks = [os.urandom(BS) for _ in range(3)]
    for index, data in enumerate(blocks):
        assert cache.put("sum", index, aligned(data))
    assert [cache.read_block("sum", i) for i in range(3)] == blocks
    assert len(direct_tries) == 1  # refused once, then remembered
    cache.close()


def test_a_failed_block_write_leaves_no_file_and_no_entry(tmp_path, monkeypatch):
    cache = BlockCache(tmp_path / "c", 1 << 30, BS)
    real_write = os.write

    def full_disk(fd, data):  # fault injection: the cache disk fills up mid-block
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    assert not cache.put("sum", 0, aligned(os.urandom(BS)))
    monkeypatch.setattr(os, "write", real_write)
    assert cache.read_block("sum", 0) is None and cache.stats()["write_errors"] == 1
    assert not [p for p in (tmp_path / "c").rglob("*.val")]
    cache.close()


def test_blocks_stored_together_are_all_or_nothing(tmp_path, monkeypatch):
    cache = BlockCache(tmp_path / "c", 1 << 30, BS)
    blocks = {i: aligned(os.urandom(BS)) for i in range(4)}
    assert cache.put_blocks("sum", blocks)
    assert [cache.read_block("sum", i) for i in range(4)] == [bytes(b) for b in blocks.values()]
    real_write, calls = os.write, []

    def fails_third(fd, data):  # fault injection: the disk fills up on the third block
        calls.append(fd)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", fails_third)
    assert not cache.put_blocks("other", {i: aligned(os.urandom(BS)) for i in range(4)})
    monkeypatch.setattr(os, "write", real_write)
    assert all(cache.read_block("other", i) is None for i in range(4))
    assert len(list((tmp_path / "c").rglob("*.val"))) == 4  # only the first four blocks' files
    cache.close()


def test_a_block_damaged_on_disk_is_dropped_and_a_miss(tmp_path, caplog):
    cache = BlockCache(tmp_path / "c", 1 << 30, BS)
    blocks = [os.urandom(BS), os.urandom(BS), os.urandom(777)]
    assert cache.put_blocks("sum", {0: aligned(blocks[0]), 1: blocks[1], 2: blocks[2]})
    data_files = [p for p in (tmp_path / "c").rglob("*") if p.is_file() and not p.name.startswith("cache.db")]
    assert len(data_files) == 3
    for path in data_files[:2]:  # a flipped byte
        with open(path, "r+b") as f:
            f.seek(500)
            byte = f.read(1)
            f.seek(500)
            f.write(bytes([byte[0] ^ 1]))
    os.truncate(data_files[2], 100)  # a short file
    assert [cache.load_block("sum", i) for i in range(3)] == [None, None, None]
    assert cache.stats()["damaged_blocks"] == 3 and cache.stats()["misses"] == 3
    assert not [p for p in (tmp_path / "c").rglob("*") if p.is_file() and not p.name.startswith("cache.db")]
    assert "failed its check" in caplog.text
    assert cache.put("sum", 0, blocks[0]) and cache.load_block("sum", 0) == blocks[0]
    cache.close()


def test_a_damaged_index_is_set_aside_and_the_cache_starts_empty(tmp_path, caplog):
    """A failing disk can damage the cache's SQLite index as well as its blocks; the blocks are
    only a cache, so the mount starts with an empty one (keeping the damaged folder for a look)
    rather than refusing to start."""
    cache = BlockCache(tmp_path / "c", 1 << 30, BS)
    assert cache.put("sum", 0, os.urandom(BS))
    cache.close()
    index = tmp_path / "c" / "cache.db"
    with open(index, "r+b") as f:  # garbage over the SQLite header and the first pages
        f.write(os.urandom(8192))
    again = BlockCache(tmp_path / "c", 1 << 30, BS)
    assert again.load_block("sum", 0) is None
    assert again.put("sum", 0, b"x" * 10) and again.load_block("sum", 0) == b"x" * 10
    again.close()
    (aside,) = tmp_path.glob("c.damaged-*")
    assert (aside / "cache.db").exists() and "index is damaged" in caplog.text
    # only the index is kept: the blocks it named went (the damaged folder kept them, up to the
    # cache's whole size on its disk for good, outside its limit)
    assert not [p for p in aside.rglob("*") if p.is_file() and not p.name.startswith("cache.db")]
    assert block_file_bytes(tmp_path / "c") == 10


def block_file_bytes(directory: Path) -> int:
    """The bytes of every file under DIRECTORY but the index."""
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file() and not p.name.startswith("cache.db"))


def test_a_cache_whose_index_was_deleted_keeps_none_of_the_blocks_it_left(tmp_path, caplog):
    """`rm CACHE/blocks/cache.db*` (a user clearing a database that seemed stuck): the block files
    stayed, named by no index, so never read nor evicted, and took their room outside the size
    limit for good."""
    cache = BlockCache(tmp_path / "c", 1 << 30, BS)
    assert cache.put_blocks("sum", {0: os.urandom(BS), 1: os.urandom(BS)}) and cache.put("other", 0, os.urandom(BS))
    cache.close()
    assert block_file_bytes(tmp_path / "c") == 3 * BS
    for part in (tmp_path / "c").glob("cache.db*"):
        part.unlink()
    (tmp_path / "c" / "mine.txt").write_text("not the cache's: kept")
    again = BlockCache(tmp_path / "c", 1 << 30, BS)
    assert again.load_block("sum", 0) is None and block_file_bytes(tmp_path / "c") == len("not the cache's: kept")
    assert again.put("sum", 0, b"y" * 10) and again.load_block("sum", 0) == b"y" * 10
    assert again.volume() >= 10 and block_file_bytes(tmp_path / "c") == 10 + len("not the cache's: kept")
    again.close()
    assert "had no index: removed the block files it left" in caplog.text


def test_pieces_kept_in_the_index_are_checked_and_read_back_after_close(tmp_path, caplog):
    """Small blocks (pieces) stored inline, many per transaction: no file each, the same
    CRC32C check on read-back, found by a new cache object on the folder."""
    pieces = [("sum", f"p{i}", os.urandom(64 << 10)) for i in range(40)] + [("other", "p0", os.urandom(100))]
    cache = BlockCache(tmp_path / "c", 1 << 30, BS)
    assert cache.put_inline(pieces)
    assert not [p for p in (tmp_path / "c").rglob("*") if p.is_file() and not p.name.startswith("cache.db")]
    cache.close()
    again = BlockCache(tmp_path / "c", 1 << 30, BS)
    assert [again.load_block(c, i) for c, i, _ in pieces] == [d for _, _, d in pieces]
    assert again.volume() >= 40 * (64 << 10)
    with again._cache.transact():  # damage one piece's stored bytes (a failing disk under the index)
        again._cache._sql("UPDATE Cache SET value = ? WHERE key = ?", (b"x" * (64 << 10), "sum:p7"))
    assert again.load_block("sum", "p7") is None and again.stats()["damaged_blocks"] == 1
    assert "failed its check" in caplog.text and ("sum", "p7") not in again
    again.close()


def test_a_miss_is_a_read_that_never_waits_for_a_writer(tmp_path):
    """A cold piece's lookup: diskcache's LRU `get` opens a write transaction even for a
    missing key (a cost per cold piece, and a wait behind any writer); a miss is a read."""
    cache = BlockCache(tmp_path / "c", 1 << 30, BS)
    assert cache.put("sum", 0, os.urandom(100))
    writer = sqlite3.connect(tmp_path / "c" / "cache.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process storing blocks, holding the write lock
    looked = []
    try:
        lookup = threading.Thread(target=lambda: looked.append(cache.load_block("sum", 1)), daemon=True)
        lookup.start()
        lookup.join(5)
        assert looked == [None] and cache.stats()["write_errors"] == 0
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    lookup.join(70)
    cache.close()


def test_a_hit_is_a_read_that_never_waits_for_a_writer(tmp_path):
    """A piece read back while a batch of pieces is being stored (the store's transaction holds
    the index's write lock for tens of ms): diskcache's LRU `get` is a write, which waited
    for it; the read is a plain read and its access time is entered with a later write."""
    cache = BlockCache(tmp_path / "c", 1 << 30, BS)
    data = os.urandom(64 << 10)
    assert cache.put_inline([("sum", "p0", data), ("sum", "p1", os.urandom(100))])
    writer = sqlite3.connect(tmp_path / "c" / "cache.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # a writer holding the write lock
    looked = []
    try:
        lookup = threading.Thread(target=lambda: looked.append(cache.load_block("sum", "p0")), daemon=True)
        lookup.start()
        lookup.join(5)
        assert looked == [data]
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    lookup.join(70)
    # the read counts for the LRU order once the next write is entered: p0 is now the most recent
    assert cache.put_inline([("sum", "p2", os.urandom(100))])
    cache.close()
    index = sqlite3.connect(tmp_path / "c" / "cache.db")
    order = [key for key, in index.execute("SELECT key FROM Cache ORDER BY access_time, rowid")]
    index.close()
    assert order.index("sum:p0") > order.index("sum:p1")


def test_a_threads_first_read_of_the_index_finds_its_connection_opened_ahead(tmp_path, monkeypatch):
    """A thread's first call into the index (a fresh mount's first lookup of a file, on its FUSE
    thread) took a connection of its own, opened with diskcache's pragmas: 0.4-0.7 ms on that
    lookup. It takes one opened ahead, set up alike, and reads through it."""
    cache = BlockCache(tmp_path / "c", 1 << 30, BS)
    assert cache.put("sum", 0, b"x" * 100)
    opened_by: list[str] = []
    connect = sqlite3.connect

    def counted(*args, **kwargs):
        opened_by.append(threading.current_thread().name)
        return connect(*args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", counted)
    deadline = time.monotonic() + 10
    while len(getattr(cache._cache, "_spares", ())) < 2 and time.monotonic() < deadline:  # opened as the mount starts
        time.sleep(0.01)
    seen = []

    def first_reads() -> None:
        seen.append((("sum", 0) in cache, ("sum", 1) in cache, bytes(cache.load_block("sum", 0))))
        seen.append(cache._cache._sql("PRAGMA cache_size").fetchone()[0])

    for name in ("fuse-1", "fuse-2"):
        reader = threading.Thread(target=first_reads, name=name)
        reader.start()
        reader.join(10)
    assert seen == [(True, False, b"x" * 100), -INDEX_CACHE_KIB] * 2
    assert not {"fuse-1", "fuse-2"} & set(opened_by), opened_by
    cache.close()


def test_a_new_index_has_big_pages_and_an_earlier_one_keeps_its_own(tmp_path):
    """A new index is made with 32 KiB pages (a 64 KiB piece in SQLite's default 4 KiB pages
    costs about twice the CPU to store), auto-vacuumed as diskcache makes it (the file shrinks
    as blocks go); an index an earlier version made keeps its 4 KiB pages and serves as before."""
    new = BlockCache(tmp_path / "new", 1 << 30, BS)
    assert [new._cache._sql(f"PRAGMA {name}").fetchone()[0] for name in ("page_size", "auto_vacuum")] == [32 << 10, 1]
    new.close()
    diskcache.Cache(str(tmp_path / "old")).close()  # as an earlier version made it
    old = BlockCache(tmp_path / "old", 1 << 30, BS)
    piece = os.urandom(64 << 10)
    assert old.put_inline([("sum", "p0", piece)]) and old.load_block("sum", "p0") == piece
    assert old._cache._sql("PRAGMA page_size").fetchone()[0] == 4096
    old.close()


def test_a_runs_pieces_share_one_file_and_a_damaged_one_is_a_miss_never_bytes(tmp_path, caplog):
    """Pieces fetched together are stored in one file, each with its own CRC32C: read back
    exactly (also by a new cache object); a flipped byte in one makes it a miss (dropped with its
    file: the run's other pieces are then misses too), never wrong bytes."""
    run = os.urandom(4 << 16)
    cache = BlockCache(tmp_path / "c", 1 << 30, BS)
    assert cache.put_runs([([("sum", f"p{i}") for i in range(4)], [aligned(run)])], 64 << 10)
    files = [p for p in (tmp_path / "c").rglob("*.val")]
    assert len(files) == 1 and files[0].read_bytes() == run
    cache.close()
    again = BlockCache(tmp_path / "c", 1 << 30, BS)
    got = again.load_blocks("sum", [f"p{i}" for i in range(4)])
    assert {key: bytes(data) for key, data in got.items()} == {f"p{i}": run[i << 16:(i + 1) << 16] for i in range(4)}
    with open(files[0], "r+b") as f:  # one flipped byte in the third piece
        f.seek((2 << 16) + 5)
        f.write(bytes([run[(2 << 16) + 5] ^ 0xFF]))
    assert again.load_block("sum", "p2") is None and again.stats()["damaged_blocks"] == 1
    assert "failed its check" in caplog.text
    assert all(bytes(data) == run[int(key[1:]) << 16:(int(key[1:]) + 1) << 16]
               for key, data in again.load_blocks("sum", [f"p{i}" for i in range(4)]).items())
    assert again.put_runs([([("sum", "p2")], [aligned(run[2 << 16:3 << 16])])], 64 << 10)
    assert again.load_block("sum", "p2") == run[2 << 16:3 << 16]
    again.close()


def test_pieces_of_other_files_given_apart_are_one_file_written_whole(tmp_path, monkeypatch):
    """A random reader's pieces (one per fetch, of any files) go into one file with one `writev`,
    not copied together first; a disk that takes part of a write at a time still gets all of it."""
    pieces = [os.urandom(1 << 16) for _ in range(5)]
    real_writev, calls = os.writev, []

    def partial_writev(fd, buffers):  # fault injection: the disk takes at most 100,000 bytes a call
        calls.append(len(buffers))
        budget, parts = 100_000, []
        for buffer in buffers:
            parts.append(memoryview(buffer)[:budget])
            budget -= parts[-1].nbytes
            if budget <= 0:
                break
        return real_writev(fd, parts)

    monkeypatch.setattr(os, "writev", partial_writev)
    cache = BlockCache(tmp_path / "c", 1 << 30, BS)
    keys = [("a", "p3"), ("b", "p0"), ("a", "p9"), ("c", "p1"), ("b", "p7")]
    assert cache.put_runs([(keys, [aligned(piece) for piece in pieces])], 64 << 10)
    files = list((tmp_path / "c").rglob("*.val"))
    assert len(files) == 1 and files[0].read_bytes() == b"".join(pieces) and len(calls) > 1
    assert [cache.load_block(*key) for key in keys] == pieces
    cache.close()


def test_blocks_whose_shared_file_went_with_another_are_dropped_when_read(tmp_path):
    """A fetch's blocks share one file: dropping (or evicting) one of them removes it. The others
    are then misses and leave the index with it (or, lost so by an index made before, as they are
    read): counted as cached, read-ahead would skip them and a file's hashing would wait for them
    as for blocks on their way."""
    run = os.urandom(3 * BS)
    cache = BlockCache(tmp_path / "c", 1 << 30, BS)
    assert cache.put_runs([([("sum", 0), ("sum", 1), ("sum", 2)], [aligned(run)])], BS)
    assert len(list((tmp_path / "c").rglob("*.val"))) == 1
    cache.drop_blocks("sum", [1])
    assert ("sum", 0) not in cache and cache.load_block("sum", 0) is None
    assert cache.stats()["damaged_blocks"] == 0
    assert cache.load_blocks("sum", [0, 2]) == {} and ("sum", 2) not in cache
    assert cache.put("sum", 0, run[:BS]) and cache.load_block("sum", 0) == run[:BS]
    cache.close()


def test_pieces_stored_again_leave_the_file_they_share_with_others(tmp_path):
    """A piece stored again (fetched again by a run overlapping one stored before, or alone) keeps
    its entry: replacing it removed its file, which the other pieces of its run share, and those
    were misses for the next reader (seen: 4 MiB fetched again by a second process)."""
    run = os.urandom(8 << 16)
    cache = BlockCache(tmp_path / "c", 1 << 30, BS)
    assert cache.put_runs([([("sum", f"p{i}") for i in range(6)], [aligned(run[:6 << 16])])], 64 << 10)
    assert cache.put_runs([([("sum", f"p{i}") for i in range(4, 8)], [aligned(run[4 << 16:])])], 64 << 10)
    assert cache.put_inline([("sum", "p2", run[2 << 16:3 << 16])])
    got = cache.load_blocks("sum", [f"p{i}" for i in range(8)])
    assert {key: bytes(data) for key, data in got.items()} == {f"p{i}": run[i << 16:(i + 1) << 16] for i in range(8)}
    cache.close()



def test_a_block_stored_again_replaces_the_one_before_and_its_file(tmp_path):
    """A batch enters its new keys in one INSERT; a block already there goes through diskcache's `set`,
    which replaces its row and removes the file it had (none left behind, none counted twice)."""
    first, second, other = os.urandom(BS), os.urandom(BS), os.urandom(BS)
    cache = BlockCache(tmp_path / "c", 1 << 30, BS)
    assert cache.put_blocks("sum", {0: aligned(first)})
    assert cache.put_blocks("sum", {0: aligned(second), 1: aligned(other)})
    assert [cache.read_block("sum", 0), cache.read_block("sum", 1)] == [second, other]
    assert len(list((tmp_path / "c").rglob("*.val"))) == 2
    assert _counted_beyond_the_files(cache, tmp_path / "c") == 0
    cache.close()


def test_a_miss_asks_the_index_once_a_moment_and_this_processs_store_ends_it(tmp_path):
    """A seeking reader's kernel request asked the index three or four times whether its block was
    there whole: a key found absent is a miss without a lookup for a moment; one this process stores
    is found at once, and one another process stores once the moment is over."""
    cache = BlockCache(tmp_path / "c", 1 << 30, BS)
    statements: list[str] = []
    cache._cache._con.set_trace_callback(statements.append)
    assert ("sum", 0) not in cache and cache.read_block("sum", 0) is None and ("sum", 0) not in cache
    assert sum("FROM Cache" in s for s in statements) == 1, statements
    data = os.urandom(BS)
    assert cache.put("sum", 0, aligned(data))
    assert ("sum", 0) in cache and cache.read_block("sum", 0) == data
    assert ("sum", 1) not in cache
    elsewhere = BlockCache(tmp_path / "c", 1 << 30, BS)  # another process's cache object on the same folder
    assert elsewhere.put("sum", 1, aligned(data))
    assert ("sum", 1) not in cache
    cache._absent.kept_s = 0.0  # the moment is over
    assert ("sum", 1) in cache
    elsewhere.close()
    cache.close()


def _counted_beyond_the_files(cache: BlockCache, directory: Path) -> int:
    """Bytes the cache's size counts (beyond its index's pages) that no file on disk holds."""
    pragma = lambda name: cache._cache._sql(f"PRAGMA {name}").fetchone()[0]  # noqa: E731
    pages = pragma("page_count") * pragma("page_size")
    return cache.volume() - pages - sum(f.stat().st_size for f in directory.rglob("*.val"))


def test_a_run_whose_file_goes_leaves_no_piece_counted_or_stored(tmp_path):
    """Once one piece of a run goes (evicted or dropped), and with it the file the run's pieces
    share, the others go too: they stayed counted in the cache's size (eviction then made room
    no one used, throwing out good blocks), and a run fetched again stored only the piece that went."""
    piece, runs = 64 << 10, {name: os.urandom(4 << 16) for name in ("a", "b", "c", "d")}
    keys = [f"p{i}" for i in range(4)]
    cache = BlockCache(tmp_path / "c", 1 << 30, BS)
    assert cache.put_runs([([(name, k) for k in keys], [aligned(run)]) for name, run in runs.items()], piece)
    cache.drop_blocks("a", ["p1"])
    assert _counted_beyond_the_files(cache, tmp_path / "c") == 0
    assert cache.load_blocks("a", keys) == {}
    assert cache.put_runs([([("a", k) for k in keys], [aligned(runs["a"])])], piece)  # fetched again: all stored
    assert {k: bytes(v) for k, v in cache.load_blocks("a", keys).items()} == {
        k: runs["a"][i * piece:(i + 1) * piece] for i, k in enumerate(keys)}
    cache._evict(2 << 16)  # making room (diskcache's cull, least recently used first) takes whole runs too
    assert _counted_beyond_the_files(cache, tmp_path / "c") == 0
    for name in runs:
        assert len(cache.load_blocks(name, keys)) in (0, 4)
    cache.close()


FORKED_WHILE_BUSY = """
import os, sys, threading
from pathlib import Path
from eotdlfs.fs.block_cache import BlockCache
cache = BlockCache(Path(sys.argv[1]), 1 << 30, 1 << 12)
stop = threading.Event()
for n in range(50):
    cache.put(f"{n:040x}", 0, os.urandom(4096))

def write() -> None:  # a fetch worker storing blocks while the main thread forks
    n = 0
    while not stop.is_set():
        cache.put(f"{n % 50:040x}", n, os.urandom(4096))
        n += 1

def read() -> None:  # a reader (fetch worker, hasher) reading blocks back while the main thread forks
    n = 0
    while not stop.is_set():
        cache.read_blocks(f"{n % 50:040x}", [0])
        n += 1

for _ in range(int(sys.argv[4])):
    threading.Thread(target={"writes": write, "reads": read}[sys.argv[3]], daemon=True).start()
stuck = 0
for _ in range(int(sys.argv[2])):
    pid = os.fork()
    if pid == 0:  # a worker process (multiprocessing's fork): its own cache on the same folder
        opened = threading.Thread(target=lambda: BlockCache(Path(sys.argv[1]), 1 << 30, 1 << 12).put("f" * 40, 0, b"x"),
                                  daemon=True)
        opened.start()
        opened.join(10)
        os._exit(1 if opened.is_alive() else 0)
    _, status = os.waitpid(pid, 0)
    stuck += os.waitstatus_to_exitcode(status) != 0
stop.set()
print(stuck)
"""


def _stuck_forks(directory: Path, forks: int, busy: str, threads: int) -> int:
    """How many of FORKS forked processes could not open the cache in DIRECTORY and store a block
    while THREADS threads of the parent did BUSY ('writes' or 'reads') on it."""
    done = subprocess.run([sys.executable, "-c", FORKED_WHILE_BUSY, str(directory), str(forks), busy, str(threads)],
                          capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def test_a_process_forked_while_the_cache_writes_can_open_it(tmp_path):
    """multiprocessing forks workers while a fetch worker may be inside a write transaction (a
    file's final block is stored after its reader has it): SQLite's lock bookkeeping is copied
    into the child, whose own connection then found the index locked for good ('database is
    locked' after diskcache's 60 s). Forks wait for the write under way."""
    assert _stuck_forks(tmp_path / "c", 6, "writes", 1) == 0, "forked processes could not open the cache"


def test_a_process_forked_while_threads_read_the_cache_can_open_it(tmp_path):
    """Reads of the index run without the write lock (fetch workers, the hasher, the pieces
    writer): a thread inside SQLite when the process forked left one of SQLite's mutexes (the
    unix VFS's, per file and shared by the process's connections) locked in the child for ever,
    and the child's first read of the index hung (a forked fsspec worker, 60 s). Forks wait for
    the reads under way (`fork_gate`)."""
    assert _stuck_forks(tmp_path / "c", 60, "reads", 3) == 0, "forked processes hung on the cache"


def test_a_connection_let_go_is_closed_through_the_fork_gate(tmp_path):
    """A connection is in a reference cycle (with its statement cache), so one let go (a thread's that
    ended: libfuse's come and go) is closed by the garbage collector, in whatever thread runs it next:
    outside the gate, and a fork meanwhile copied SQLite's memory mutex locked into the child, whose
    first connection hung (the fork tests above failed about 1 run in 3 on a busy machine). Its close
    waits while the gate is closed."""
    cache = BlockCache(tmp_path / "c", 1 << 30, BS)
    assert cache.put("sum", 0, aligned(os.urandom(4096)))
    gc.disable()
    try:
        cache._cache._local.__dict__.pop("con")  # as when its thread ends: garbage, in a cycle
        SQLITE_GATE.close()  # a fork under way
        try:
            collector = threading.Thread(target=gc.collect)
            collector.start()
            collector.join(0.5)
            waited = collector.is_alive()
        finally:
            SQLITE_GATE.open()
        collector.join(10)
    finally:
        gc.enable()
        cache.close()
    assert waited, "the garbage collector closed a connection while a fork was under way"


def test_the_thread_that_closed_the_gate_passes_it(tmp_path):
    """The forking thread runs the other fork handlers after closing the gate: a connection the
    garbage collector closes there must not wait for a gate only that thread opens (the fork hung)."""
    cache = BlockCache(tmp_path / "c", 1 << 30, BS)
    assert cache.put("sum", 0, aligned(os.urandom(4096)))
    gc.disable()

    def fork_handlers() -> None:
        SQLITE_GATE.close()
        gc.collect()  # closes the connection let go
        SQLITE_GATE.open()

    try:
        cache._cache._local.__dict__.pop("con")
        forker = threading.Thread(target=fork_handlers, daemon=True)
        forker.start()
        forker.join(5)
        hung = forker.is_alive()
    finally:
        SQLITE_GATE.open()  # let a hung one go: the tests after need the gate
        gc.enable()
        cache.close()
    assert not hung, "the thread that closed the gate waited for it"


def test_a_batch_asks_the_index_for_its_volume_once_and_still_keeps_the_limit(tmp_path):
    """diskcache culls on every entry it enters, asking the index for the volume each time (3
    queries an entry, 9 % of the mount's CPU on random reads): a batch culls once, after its
    last entry, as many entries as it entered, so the size limit still holds."""
    piece, limit = 1 << 16, 4 << 20  # a limit of 64 pieces, and the index's pages
    cache = BlockCache(tmp_path / "c", limit, BS)
    statements: list[str] = []
    cache._cache._con.set_trace_callback(statements.append)
    for batch in range(8):
        statements.clear()
        keys = [("sum", f"p{batch * 16 + i}") for i in range(16)]
        assert cache.put_runs([(keys, [aligned(os.urandom(piece)) for _ in range(16)])], piece)
        assert sum(s.startswith("PRAGMA page_count") for s in statements) == 1
        assert cache.volume() <= limit + 16 * piece
    got = cache.load_blocks("sum", [f"p{i}" for i in range(128)])
    assert len(got) < 128 and all(f"p{112 + i}" in got for i in range(16))  # the oldest went, the newest stay
    cache.close()


def test_a_batchs_rows_go_in_by_one_insert_and_diskcache_still_counts_each(tmp_path):
    """In a transaction an INSERT per row kept a copy of each page it changed (diskcache's triggers
    and unique key make one that may fail part way): 12 temp-file writes per piece stored, 2.4 ms
    per 64 pieces. A batch's rows go in one INSERT per INSERT_ROWS, and diskcache's count and size
    (kept by those triggers) still add up; every piece reads back."""
    count, piece = INSERT_ROWS + 20, 4096
    cache = BlockCache(tmp_path / "c", 1 << 30, BS)
    statements: list[str] = []
    cache._cache._con.set_trace_callback(statements.append)
    run = os.urandom(count * piece)
    assert cache.put_runs([([("sum", f"p{i}") for i in range(count)], [aligned(run)])], piece)
    # Traced as SQLite runs them, with their values; again at each trigger a row fires.
    assert len({s for s in statements if s.startswith("INSERT INTO Cache")}) == 2
    assert len(cache._cache) == count
    assert cache._cache.reset("size", update=False) == count * piece
    got = cache.load_blocks("sum", [f"p{i}" for i in range(count)])
    assert {key: bytes(data) for key, data in got.items()} == {f"p{i}": run[i * piece:(i + 1) * piece]
                                                              for i in range(count)}
    cache.close()
