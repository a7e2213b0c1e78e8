"""Block cache, read-ahead and fetcher, through `ContentReader`, against an in-memory repository."""

from __future__ import annotations

import errno
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from eotdlfs.fs.block_cache import BlockCache
from eotdlfs.fs.errors import ContentMismatch, errno_for
from eotdlfs.fs.content import Content, StaleFetch
from eotdlfs.fs.fetcher import BlockFetcher
from eotdlfs.fs import pieces as pieces_module
from eotdlfs.fs.pieces import PieceFetcher, piece_key
from eotdlfs.fs.readahead import ReadAheadWindow
from eotdlfs.fs import reader as reader_module
from eotdlfs.fs.reader import ContentReader
from eotdlfs.repository import Unreachable
from tests.fs.fakes import MemoryRepository

BS = 64 * 1024
PIECE = BS // 8


@pytest.fixture
def setup(tmp_path):
    repo = MemoryRepository()
    data = os.urandom(BS * 20 + 123)
    record = repo.publish("datasets", "big", {"f.bin": data, "same.bin": data, "tiny": b"hi", "empty": b""})
    entries = {e.path: e for e in repo.files(record, 1)}
    made = []

    def make(cache_size=1 << 30, **kw):
        cache = BlockCache(tmp_path / f"blocks{len(made)}", cache_size, BS)
        fetcher = BlockFetcher(repo, cache, workers=3, request_blocks=4)
        reader = ContentReader(fetcher, first_window=2 * BS, max_window=8 * BS, **{"demand_timeout": 10, **kw})
        made.append((cache, fetcher, reader))
        return reader

    yield repo, record, entries, data, make
    for cache, fetcher, reader in made:
        reader.close()
        fetcher.close()
        cache.close()


def read_all(reader, content, chunk=BS // 2):
    handle = reader.open(content)
    parts, offset = [], 0
    while True:
        part = reader.read(handle, offset, chunk)
        if not part:
            break
        parts.append(part)
        offset += len(part)
    handle.close()
    return b"".join(parts)


def test_sequential_read_is_exact_and_fetches_each_byte_once(setup):
    repo, record, entries, data, make = setup
    reader = make()
    assert read_all(reader, Content(record, entries["f.bin"])) == data
    assert repo.bytes_served == len(data)
    assert len(repo.range_calls) < 20  # read-ahead groups blocks into larger requests


def test_sequential_reader_tops_up_read_ahead_in_whole_requests(setup):
    """Once the window is full, each read moves its end by one block; fetching that block
    alone would make a range request per block (and per-request costs dominate)."""
    repo, _, _, _, make = setup
    data = os.urandom(BS * 64)
    record = repo.publish("datasets", "long", {"long.bin": data})
    entry = repo.files(record, 1)[0]
    calls = len(repo.range_calls)
    assert read_all(make(), Content(record, entry), chunk=BS) == data
    assert len(repo.range_calls) - calls <= 64 // 4 + 4  # request_blocks=4: about one per 4 blocks


def test_reads_near_the_end_ask_for_no_read_ahead_past_it(setup, monkeypatch):
    """Once read-ahead reached the file's end, the reads of its last window queue nothing: a
    window reaching past the end asked the fetcher again on every read (two locks and a scan
    each, 256 times at the end of a file read in 128 KiB requests)."""
    repo, _, _, _, make = setup
    data = os.urandom(BS * 64)
    record = repo.publish("datasets", "ending", {"ending.bin": data})
    content = Content(record, repo.files(record, 1)[0])
    reader = make()
    asked = []
    queue = reader.fetcher.read_ahead

    def read_ahead(c, first, end, opened):
        asked.append(first)
        return queue(c, first, end, opened)

    monkeypatch.setattr(reader.fetcher, "read_ahead", read_ahead)
    assert read_all(reader, content, chunk=BS // 8) == data
    assert asked and max(asked) < content.block_count(BS)


def test_a_fetchs_blocks_are_stored_in_one_file_and_read_back_checked(setup, tmp_path):
    """A sequential reader's blocks are stored one file per request, not per block (a file created
    per block was 7 % of a cold read's CPU); each still comes back exactly, checked on its own."""
    repo, record, entries, data, make = setup
    reader = make()
    assert read_all(reader, Content(record, entries["f.bin"])) == data
    reader.fetcher.wait_idle(5)
    blocks = len(data) // BS + 1
    files = list((tmp_path / "blocks0").rglob("*.val"))
    assert len(files) <= blocks // 2 + 1, f"{len(files)} files for {blocks} blocks"
    again = BlockCache(tmp_path / "blocks0", 1 << 30, BS)
    try:
        got = again.load_blocks(entries["f.bin"].checksum, range(blocks))
        assert b"".join(bytes(got[i]) for i in range(blocks)) == data
    finally:
        again.close()


def test_identical_content_shares_blocks_and_survives_a_new_cache_object(setup, tmp_path):
    repo, record, entries, data, make = setup
    reader = make()
    read_all(reader, Content(record, entries["f.bin"]))
    served = repo.bytes_served
    assert read_all(reader, Content(record, entries["same.bin"])) == data
    assert repo.bytes_served == served
    assert reader.fetcher.wait_idle(10)  # a final block is stored once its readers have it
    reopened = ContentReader(BlockFetcher(repo, BlockCache(tmp_path / "blocks0", 1 << 30, BS)))
    assert read_all(reopened, Content(record, entries["f.bin"])) == data
    assert repo.bytes_served == served


def test_random_reads_fetch_only_their_blocks(setup):
    repo, record, entries, data, make = setup
    reader = make()
    handle = reader.open(Content(record, entries["f.bin"]))
    rng = random.Random(7)
    for _ in range(5):
        offset = rng.randrange(BS * 2, len(data) - 100)
        assert reader.read(handle, offset, 100) == data[offset:offset + 100]
    assert repo.bytes_served <= 5 * 2 * BS  # each read costs at most the blocks it touches
    assert len({c for c, _, _ in repo.range_calls}) == 1


def test_a_seeking_read_fetches_only_the_pieces_it_spans(setup):
    """A COG reader's jump gets the bytes it reads (in small pieces), not whole blocks and
    read-ahead: GDAL on a remote file fetches no more."""
    repo, record, entries, data, make = setup
    piece = BS // 8
    reader = make(piece_size=piece)
    handle = reader.open(Content(record, entries["f.bin"]))
    # Jumps; the last read spans a block boundary, the one after it follows on.
    for offset, size in ((7 * BS + 100, 4096), (3 * BS + 2000, 4096), (12 * BS - 10, 4096), (12 * BS + 4086, 100)):
        assert reader.read(handle, offset, size) == data[offset:offset + size]
    assert reader.fetcher.wait_idle(10)
    assert repo.bytes_served == 4 * piece  # whole blocks and read-ahead would be 4 * BS and more
    checksum = entries["f.bin"].checksum
    assert not any((checksum, i) in reader.cache for i in range(21))  # no whole block is cached


def test_pieces_are_kept_in_the_block_cache_for_the_next_mount(setup, tmp_path):
    repo, record, entries, data, make = setup
    reader = make(piece_size=BS // 8)
    offset = 9 * BS + 3000
    assert reader.read(reader.open(Content(record, entries["f.bin"])), offset, 5000) == data[offset:offset + 5000]
    stored = (entries["f.bin"].checksum, piece_key(offset // (BS // 8)))
    deadline = time.monotonic() + 10
    while stored not in reader.cache and time.monotonic() < deadline:  # stored after the reader has them
        time.sleep(0.01)
    served = repo.bytes_served
    cache = BlockCache(tmp_path / "blocks0", 1 << 30, BS)
    reopened = ContentReader(BlockFetcher(repo, cache), piece_size=BS // 8)
    try:
        handle = reopened.open(Content(record, entries["same.bin"]))  # the same bytes: the same pieces
        assert reopened.read(handle, offset, 5000) == data[offset:offset + 5000]
        assert repo.bytes_served == served
    finally:
        reopened.close()
        reopened.fetcher.close()
        cache.close()


def test_seeking_reads_leave_the_whole_file_checked(setup):
    """Pieces never feed the file's SHA-1: a whole read after them still fails on bad bytes,
    and pieces fetched before the failure are not served after it."""
    repo, record, entries, data, make = setup
    content = Content(record, entries["f.bin"])
    repo.corrupt.add(content.checksum)  # the first byte of every range comes back flipped
    reader = make(piece_size=BS // 8)
    offset = 5 * BS + BS // 8  # where a piece begins: its first byte is the bad one
    assert reader.read(reader.open(content), offset, 100) != data[offset:offset + 100]
    with pytest.raises(ContentMismatch):
        read_all(reader, content)
    repo.corrupt.clear()
    assert reader.read(reader.open(content), offset, 100) == data[offset:offset + 100]
    assert read_all(reader, content) == data


def test_small_and_empty_files(setup):
    repo, record, entries, data, make = setup
    reader = make()
    assert read_all(reader, Content(record, entries["tiny"])) == b"hi"
    assert read_all(reader, Content(record, entries["empty"])) == b""
    handle = reader.open(Content(record, entries["tiny"]))
    assert reader.read(handle, 5, 10) == b""


def test_concurrent_readers_of_one_block_share_one_fetch(setup):
    repo, record, entries, data, make = setup
    repo.delay = 0.2
    reader = make()
    content = Content(record, entries["f.bin"])
    results, offset = [], BS * 10 + 5

    def one():
        handle = reader.open(content)
        results.append(reader.read(handle, offset, 1000))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [data[offset:offset + 1000]] * 8
    assert len(repo.range_calls) == 1


def test_corrupt_content_is_eio_at_the_end_and_not_kept(setup):
    repo, record, entries, data, make = setup
    repo.corrupt.add(entries["f.bin"].checksum)
    reader = make()
    with pytest.raises(ContentMismatch) as info:
        read_all(reader, Content(record, entries["f.bin"]))
    assert errno_for(info.value) == 5
    assert reader.fetcher.wait_idle(10)
    cache = reader.cache
    assert not any((entries["f.bin"].checksum, i) in cache for i in range(21))
    repo.corrupt.clear()
    assert read_all(reader, Content(record, entries["f.bin"])) == data


def test_offline_cached_reads_work_uncached_fail(setup):
    repo, record, entries, data, make = setup
    reader = make()
    handle = reader.open(Content(record, entries["f.bin"]))
    assert reader.read(handle, 0, 100) == data[:100]
    repo.offline = True
    assert reader.read(handle, 10, 100) == data[10:110]
    with pytest.raises(Unreachable) as info:
        reader.read(handle, BS * 18, 100)
    assert errno_for(info.value) == errno.EIO  # a plain I/O error, not ENOTCONN (a broken mount)
    repo.offline = False
    assert reader.read(handle, BS * 18, 100) == data[BS * 18:BS * 18 + 100]


def test_lru_eviction_keeps_the_cache_within_its_limit(setup):
    repo, record, entries, data, make = setup
    reader = make(cache_size=4 * BS)
    assert read_all(reader, Content(record, entries["f.bin"])) == data
    assert reader.cache.volume() <= 8 * BS


def test_read_ahead_window_grows_only_for_sequential_readers():
    window = ReadAheadWindow(first_window=100, max_window=800)
    assert window.advise(0, 10) == (10, 10)  # one read proves nothing
    assert window.advise(10, 10) == (20, 20)  # nor does a short run (a header)
    assert window.advise(20, 30) == (50, 150)  # half a window read in order: read-ahead starts
    assert window.advise(50, 10) == (60, 160)  # the window grows only as the reader consumes it
    assert window.advise(60, 40) == (100, 300)
    assert window.advise(100, 100) == (200, 600)
    assert window.advise(200, 200) == (400, 1200)  # capped at 800
    assert window.advise(400, 400) == (800, 1600)
    assert window.advise(750, 10) == (760, 1560)  # a small step back is reordering, not a seek
    assert not window.seeking  # a run from the file's start is never fetched in pieces
    assert window.advise(10 ** 9, 60)[1] - (10 ** 9 + 60) == 0  # a far jump: no read-ahead
    assert window.seeking
    # Then it must prove itself again, over a whole window (a COG reader's row of tiles does not).
    assert window.advise(10 ** 9 + 60, 10)[1] - (10 ** 9 + 70) == 0
    assert window.advise(10 ** 9 + 70, 30)[1] - (10 ** 9 + 100) == 100
    assert not window.seeking


def test_random_reads_keep_no_blocks_in_memory_for_hashing(setup):
    repo, record, entries, data, make = setup
    reader = make()
    content = Content(record, entries["f.bin"])
    handle = reader.open(content)
    for block in (5, 9, 3):
        assert reader.read(handle, block * BS, 10) == data[block * BS:block * BS + 10]
    assert reader.fetcher.wait_idle(10)
    verifier = reader.fetcher.verifiers.peek(content.checksum)
    assert verifier is None or not verifier.stash


def test_a_hanging_fetch_fails_the_readers_after_the_first_at_once(setup):
    """The kernel reads a page again after a failed read-ahead: the second callback must not
    wait a whole bound of its own for the same hanging fetch."""
    repo, record, entries, data, make = setup
    reader = make(demand_timeout=1.0)
    repo.delay = 4.0  # a server that takes far longer than the bound
    handle = reader.open(Content(record, entries["f.bin"]))
    for most_s in (2.0, 0.5):
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            reader.read(handle, 0, 100)
        assert time.monotonic() - started < most_s
    repo.delay = 0.0
    handle.close()


def test_behind_a_silent_server_other_files_reads_fail_at_once_between_short_probes(setup, monkeypatch):
    """A walker (`cp -r`) behind a silent server waited a whole bound per file; now the first file
    costs the bound, a probe every few seconds costs half a second, the reads between fail at once."""
    repo, record, entries, data, make = setup
    monkeypatch.setattr(reader_module, "SILENT_PROBE_EVERY_S", 1.5)
    reader = make(demand_timeout=1.0)
    repo.delay = 4.0
    first, other = (reader.open(Content(record, entries[path])) for path in ("f.bin", "tiny"))
    with pytest.raises(TimeoutError):
        reader.read(first, 0, 100)
    started = time.monotonic()
    with pytest.raises(TimeoutError):  # the probe: asked, not answered within its half second
        reader.read(other, 0, 2)
    assert 0.4 < time.monotonic() - started < 0.8
    started = time.monotonic()
    with pytest.raises(Unreachable, match="has not answered reads"):
        reader.read(other, 0, 2)
    assert time.monotonic() - started < 0.1 and errno_for(Unreachable("x")) == errno.EIO
    repo.delay = 0.0
    assert reader.fetcher.wait_idle(10)  # the fetches that hung end
    time.sleep(reader_module.SILENT_PROBE_EVERY_S)  # past the next probe's time
    far = 15 * BS
    assert reader.read(first, far, 10) == data[far:far + 10]  # the next probe: answered
    first.close()
    other.close()


def test_once_a_probe_is_answered_reads_wait_their_whole_bound_again(setup, monkeypatch):
    repo, record, entries, data, make = setup
    reader = make(demand_timeout=2.0)
    repo.delay = 8.0
    handle = reader.open(Content(record, entries["f.bin"]))
    with pytest.raises(TimeoutError):
        reader.read(handle, 0, 100)
    repo.delay = 0.0
    tiny = reader.open(Content(record, entries["tiny"]))
    assert reader.read(tiny, 0, 2) == b"hi"  # the server is back: the probe is served at once
    repo.delay = 0.8  # slower than a probe's wait, well within the bound
    far = reader.open(Content(record, entries["same.bin"]))
    assert reader.read(far, 10 * BS, 10) == data[10 * BS:10 * BS + 10]
    for h in (handle, tiny, far):
        h.close()


def test_a_seeking_read_across_a_block_boundary_is_one_request(setup):
    """Its pieces on both sides are asked for at once: a request per block made the reader
    wait for two round trips in a row (1 in 8 of the kernel's 128 KiB requests crosses a
    1 MiB block boundary)."""
    repo, record, entries, data, make = setup
    reader = make(piece_size=BS // 8)
    handle = reader.open(Content(record, entries["f.bin"]))
    assert reader.read(handle, 3 * BS + 100, 100) == data[3 * BS + 100:3 * BS + 200]
    calls = len(repo.range_calls)
    offset = 12 * BS - 3000
    assert reader.read(handle, offset, 6000) == data[offset:offset + 6000]
    assert len(repo.range_calls) == calls + 1
    assert repo.bytes_served == 3 * (BS // 8)  # no more than the pieces read


def test_a_reader_gets_its_bytes_before_the_rest_of_the_request(setup):
    """A read-ahead request brings several blocks; a reader waiting for the first copies its
    bytes as soon as they arrive, not once the whole body has (a 1 MiB kernel request waited
    for the whole of an 8 MiB request before)."""
    repo, record, entries, data, make = setup
    reader = make(demand_timeout=3.0)
    content = Content(record, entries["f.bin"])
    handle = reader.open(content)
    repo.stall_at = BS + BS // 2  # a block and a half of a four-block request, then nothing
    try:
        reader.fetcher.read_ahead(content, 0, 4, handle.opened)
        assert reader.read(handle, 0, BS) == data[:BS]
        assert reader.read(handle, BS, BS // 2) == data[BS:BS + BS // 2]
        with pytest.raises(TimeoutError):  # not arrived: waits for the request, within the bound
            reader.read(handle, BS + BS // 2, BS // 2)
        assert not reader.fetcher.wait_idle(0.2)  # the request is still stalled: nothing came from elsewhere
    finally:
        repo.stall_at = None
        repo.resume.set()
    assert reader.fetcher.wait_idle(10)
    assert reader.read(handle, BS + BS // 2, 2 * BS) == data[BS + BS // 2:3 * BS + BS // 2]
    assert len(repo.range_calls) == 1
    handle.close()


def test_blocks_read_before_they_were_hashed_leave_memory_once_hashed(setup):
    """A reader copies a request's bytes as they arrive and finishes its first blocks before
    the request ends, when hashing gets to them: they were then left in memory until the bound
    pushed them out, pinning request buffers the reader was done with."""
    repo, record, entries, data, make = setup
    reader = make(demand_timeout=3.0)
    content = Content(record, entries["f.bin"])
    handle = reader.open(content)
    repo.stall_at = BS + BS // 2  # the request brings a block and a half, then waits
    try:
        reader.fetcher.read_ahead(content, 0, 4, handle.opened)
        assert reader.read(handle, 0, BS) == data[:BS]  # block 0 read to its end, not hashed yet
        assert reader.fetcher.verifiers.hashed_until(content.checksum) == 0
    finally:
        repo.stall_at = None
        repo.resume.set()
    assert reader.fetcher.wait_idle(10)
    assert reader.fetcher.verifiers.hashed_until(content.checksum) >= 4
    assert (content.checksum, 0) not in reader.fetcher.recent
    assert all((content.checksum, i) in reader.fetcher.recent for i in (1, 2, 3))  # not read yet: kept
    handle.close()


def test_a_second_reader_while_the_final_block_is_being_stored_fetches_nothing(setup):
    """A file's final block reaches its reader before the cache disk; memory lets go of it once
    read and hashed. A second reader coming while it is still being stored took neither copy and
    fetched it again (found as 4 KiB too many in the eight-readers test)."""
    repo, record, entries, data, make = setup
    reader = make()
    content = Content(record, entries["f.bin"])
    real_put, storing = reader.cache.put, threading.Event()

    def slow_put(checksum, index, block):
        if index == content.block_count(BS) - 1:
            storing.set()
            time.sleep(1.0)
        return real_put(checksum, index, block)

    reader.cache.put = slow_put
    assert read_all(reader, content) == data
    assert storing.wait(5)
    assert read_all(reader, content) == data  # while the final block is still on its way to the disk
    assert repo.bytes_served == len(data)


def test_a_read_just_after_a_checksum_failure_waits_for_the_bad_blocks_to_go(setup):
    """The file's blocks are dropped after it fails its checksum, which takes a while (a
    slow disk here): a reader opened meanwhile must not read the bad blocks still cached."""
    repo, record, entries, data, make = setup
    content = Content(record, entries["f.bin"])
    repo.corrupt.add(content.checksum)  # the first byte of every range comes back flipped
    reader = make()
    real_drop = reader.cache.drop_blocks

    def slow_drop(checksum, indices):
        time.sleep(1.0)
        real_drop(checksum, indices)

    reader.cache.drop_blocks = slow_drop
    failed = []
    first = threading.Thread(target=lambda: failed.append(pytest.raises(ContentMismatch, read_all, reader, content)))
    first.start()
    deadline = time.monotonic() + 10
    while not reader.fetcher.has_failed(content.checksum) and time.monotonic() < deadline:
        time.sleep(0.001)
    repo.corrupt.clear()
    assert read_all(reader, content) == data
    first.join(10)
    assert failed


def test_pieces_are_stored_in_batches_in_a_file_each_and_surely_at_close(setup, tmp_path):
    """A file (and a transaction) per 8 KiB piece was most of a cold seeking read's CPU, and so,
    later, was writing them into the cache's index (every page twice: WAL, checkpoint): a batch's
    pieces go side by side into one file, and those still waiting at close are stored."""
    repo, record, entries, data, make = setup
    piece = BS // 8
    reader = make(piece_size=piece)
    handle = reader.open(Content(record, entries["f.bin"]))
    offsets = random.Random(7).sample(range(BS, 19 * BS, piece), 30)  # neither first nor last block
    for offset in offsets:
        assert reader.read(handle, offset + 10, 4000) == data[offset + 10:offset + 4010]
    reader.close()  # at once: the pieces are stored by close, not some time after
    files = [p for p in (tmp_path / "blocks0").rglob("*") if p.is_file() and not p.name.startswith("cache.db")]
    assert 1 <= len(files) <= len(offsets) // 5 and sum(p.stat().st_size for p in files) == len(offsets) * piece
    served = repo.bytes_served
    cache = BlockCache(tmp_path / "blocks0", 1 << 30, BS)
    reopened = ContentReader(BlockFetcher(repo, cache), piece_size=piece)
    try:
        handle = reopened.open(Content(record, entries["same.bin"]))  # the same bytes: the same pieces
        for offset in offsets:
            assert reopened.read(handle, offset + 10, 4000) == data[offset + 10:offset + 4010]
        assert repo.bytes_served == served
    finally:
        reopened.close()
        reopened.fetcher.close()
        cache.close()


def test_a_multi_range_reads_requests_go_together_from_the_readers_own_thread(setup):
    """A window's tile rows are asked of the repository in one `read_ranges` call, on the reader's thread:
    on fetch threads each request hopped there and back, and the threads took the GIL from each other."""
    repo, record, entries, data, make = setup
    reader = make()
    content = Content(record, entries["f.bin"])
    calls, read_ranges = [], repo.read_ranges
    repo.read_ranges = lambda record, entry, spans: (calls.append((threading.current_thread(), spans)),
                                                      read_ranges(record, entry, spans))[1]
    rows = [(BS + i * 6 * BS + 100, memoryview(bytearray(BS))) for i in range(3)]
    reader.pieces.read_ranges(content, reader.fetcher.serial(), rows, time.monotonic() + 10)
    assert [bytes(target) for _, target in rows] == [data[offset:offset + BS] for offset, _ in rows]
    assert [(thread, len(spans)) for thread, spans in calls] == [(threading.current_thread(), 3)]


def test_the_tiles_fetched_for_a_batch_are_stored_in_one_file(setup, tmp_path, monkeypatch):
    """Tile-sized fetches (a window's rows, each RUN_FILE_BYTES or more) waiting together are stored
    side by side in one file: a file per fetch was a new inode, and often a new folder, per row read
    (ext4's inode search was 5 % of a cold `eotdl://` window reader's CPU). Each piece reads back."""
    repo, record, entries, data, make = setup
    monkeypatch.setattr(pieces_module, "STORE_QUIET_S", 60)  # one batch, stored at close (48 pieces wait)
    piece = BS // 4
    reader = make(piece_size=piece)
    content = Content(record, entries["f.bin"])
    rows = [(BS + i * 6 * BS, memoryview(bytearray(4 * BS))) for i in range(3)]  # 256 KiB each, apart
    reader.pieces.read_ranges(content, reader.fetcher.serial(), rows, time.monotonic() + 10)
    assert [bytes(target) for _, target in rows] == [data[offset:offset + 4 * BS] for offset, _ in rows]
    reader.close()
    files = [p for p in (tmp_path / "blocks0").rglob("*") if p.is_file() and not p.name.startswith("cache.db")]
    assert len(files) == 1 and files[0].stat().st_size == 12 * BS, files
    cache = BlockCache(tmp_path / "blocks0", 1 << 30, BS)
    try:
        keys = [piece_key(n) for offset, _ in rows for n in range(offset // piece, (offset + 4 * BS) // piece)]
        got = cache.load_blocks(content.checksum, keys)
        assert b"".join(bytes(got[key]) for key in keys) == b"".join(data[o:o + 4 * BS] for o, _ in rows)
    finally:
        cache.close()


def read_pieces(pieces, content, data, piece, numbers):
    """Read 100 bytes at the start of each of these pieces, one request each, checking them."""
    for number in numbers:
        target = memoryview(bytearray(100))
        pieces.read_into(content, pieces.fetcher.serial(), number * piece, target, time.monotonic() + 10)
        assert target == data[number * piece:number * piece + 100]


def delay_cache_writes(fetcher, wait) -> list:
    """Fault: a cache disk that takes its time (WAIT() before each batch is stored); the list of the
    keys stored, filled as they are."""
    stored, put_runs = [], fetcher.cache.put_runs

    def delayed_put_runs(runs, piece_size):
        wait()
        stored.extend(key for keys, _ in runs for key in keys)
        put_runs(runs, piece_size)

    fetcher.cache.put_runs = delayed_put_runs
    return stored


def pieces_behind_a_slow_disk(setup, wait, **options):
    """A PieceFetcher of PIECE-byte pieces whose cache disk WAITs before each batch (`delay_cache_writes`):
    it, the content of f.bin, and the keys stored as they are."""
    repo, record, entries, data, make = setup
    fetcher = make().fetcher
    stored = delay_cache_writes(fetcher, wait)
    return PieceFetcher(fetcher, PIECE, **options), Content(record, entries["f.bin"]), stored


def test_pieces_are_stored_once_their_readers_pause_or_too_many_wait(setup, monkeypatch):
    """A batch stored between a burst's windows took the GIL, a core and the disk from its readers
    (0.05-0.1 s of 50 cold COG windows on the mount): pieces wait while fetches keep bringing more,
    and are stored in one batch once none came for STORE_QUIET_S, or as soon as STORE_AT_BYTES wait."""
    repo, record, entries, data, make = setup
    monkeypatch.setattr(pieces_module, "STORE_QUIET_S", 0.4)
    stored_at: list[float] = []
    pieces, content, stored = pieces_behind_a_slow_disk(setup, lambda: stored_at.append(time.monotonic()))
    try:
        for number in range(10, 30):  # a burst: a fetch every 50 ms, for a second
            read_pieces(pieces, content, data, PIECE, [number])
            time.sleep(0.05)
        last_read = time.monotonic()
        assert stored_at == []
        deadline = last_read + 10
        while not stored_at and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(stored_at) == 1 and stored_at[0] >= last_read + 0.3, [t - last_read for t in stored_at]
        assert sorted(key for _, key in stored) == sorted(piece_key(n) for n in range(10, 30))
    finally:
        pieces.close()
    few = PieceFetcher(pieces.fetcher, PIECE, unstored_bytes=8 * PIECE)  # stores once 4 pieces wait
    stored_at.clear()
    try:
        started = time.monotonic()
        read_pieces(few, content, data, PIECE, range(40, 44))
        while not stored_at and time.monotonic() < started + 10:
            time.sleep(0.01)
        assert stored_at and stored_at[0] - started < 0.3  # long before the pause of 0.4 s would end
    finally:
        few.close()


def test_pieces_waiting_for_a_stalled_cache_write_are_bounded_and_readers_go_on(setup):
    """Pieces wait in memory to be stored behind the reads; behind a cache disk slower than the
    network they piled up without bound (each pinning its request's buffer). Past the bound a
    stalled disk is waited for once (STORE_WAIT), then the oldest are let go unstored, and
    readers never wait for the disk."""
    repo, record, entries, data, make = setup
    piece = PIECE
    disk_free = threading.Event()
    pieces, content, stored = pieces_behind_a_slow_disk(setup, lambda: disk_free.wait(20), unstored_bytes=4 * piece)
    try:
        started = time.monotonic()
        read_pieces(pieces, content, data, piece, range(10, 40))  # none of the final block
        assert time.monotonic() - started < 10  # far below the stalled writes' 20 s
    finally:
        disk_free.set()
        pieces.close()
    # the batch the writer took when the bound was reached (the bound and one fetch at most),
    # and what waited within the bound (plus a piece per worker adding as it was checked)
    assert 0 < len(stored) <= (4 + 1) + (4 + 4)
    assert pieces.let_go == 30 - len(stored)
    assert [key for _, key in stored][-4:] == [piece_key(n) for n in range(36, 40)]  # the newest are kept


def test_pieces_behind_a_slow_cache_disk_are_all_stored(setup):
    """A cache disk slower than the network, but working: pieces over the bound wait for the
    writer (their fetch worker does, after its readers have their bytes) instead of being let
    go, which cost a next process 11 MB of 103 in the eotdl:// COG bench."""
    repo, record, entries, data, make = setup
    piece = PIECE
    slow = lambda: time.sleep(0.2)  # noqa: E731  slow, and gets there
    pieces, content, stored = pieces_behind_a_slow_disk(setup, slow, unstored_bytes=4 * piece)
    try:
        read_pieces(pieces, content, data, piece, range(10, 40))
    finally:
        pieces.close()
    assert sorted(key for _, key in stored) == sorted(piece_key(n) for n in range(10, 40))


EXITS_WITHOUT_CLOSE = """
import os, sys, time
from pathlib import Path
from eotdlfs.fs.block_cache import BlockCache
from eotdlfs.fs.content import Content, StaleFetch
from eotdlfs.fs.fetcher import BlockFetcher
from eotdlfs.fs import reader as reader_module
from eotdlfs.fs.reader import ContentReader
from tests.fs.fakes import MemoryRepository
repo = MemoryRepository()
record = repo.publish("datasets", "big", {"f.bin": bytes(range(256)) * (20 * 256 + 1)})
content = Content(record, repo.files(record, 1)[0])
cache = BlockCache(Path(sys.argv[1]), 1 << 30, 1 << 16)
if sys.argv[2] == "slow-disk":  # the writer is still storing a batch when the script ends
    put_runs = cache.put_runs
    cache.put_runs = lambda *args: (time.sleep(0.5), put_runs(*args))
reader = ContentReader(BlockFetcher(repo, cache), piece_size=8192)
handle = reader.open(content)
for offset in range(3 << 16, 9 << 16, 5 << 13):
    assert len(reader.read(handle, offset, 100)) == 100
if sys.argv[2] == "slow-disk":
    time.sleep(0.4)
print(repo.bytes_served)
"""


@pytest.mark.parametrize("disk", ["quick-disk", "slow-disk"])
def test_pieces_read_by_a_process_that_exits_without_closing_are_stored(tmp_path, disk):
    """An `eotdl://` script may end without closing its connection: its pieces still reach
    the cache (stored at exit), so the next process reading the same windows fetches nothing;
    also when the writer is storing a batch as the script ends (its thread was cut off)."""
    runs = [subprocess.run([sys.executable, "-c", EXITS_WITHOUT_CLOSE, str(tmp_path / "c"), mode],
                           capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[2])
            for mode in (disk, "quick-disk")]
    assert [run.returncode for run in runs] == [0, 0], runs[0].stderr + runs[1].stderr
    assert int(runs[0].stdout) > 0 and int(runs[1].stdout) == 0


def hangs_then_fails(calls: list):
    """Fault: a fetch that hangs 0.8 s, then fails as one behind a silent server does; each noted in CALLS."""
    def fetch(*args, **kwargs):
        calls.append(time.monotonic())
        time.sleep(0.8)
        raise Unreachable("cannot reach the repository (timed out)")
    return fetch


def test_a_block_whose_fetch_hung_and_failed_fails_again_at_once(setup, monkeypatch):
    """Behind a silent server the kernel's second callback for one `read` (it reads a page again
    after a failed read-ahead) started a fetch of its own and waited a whole bound more: 18.7 s
    for one read with a bound of 10. A fetch that fails fast is tried again at once, and so is one
    through another open (a user trying again once the server is back: it fetched nothing for 2 s,
    and the same mount's next `cat` failed)."""
    repo, record, entries, data, make = setup
    reader = make(demand_timeout=1.0)
    calls = []

    handle = reader.open(Content(record, entries["f.bin"]))
    with monkeypatch.context() as patch:
        patch.setattr(repo, "read_range", hangs_then_fails(calls))
        with pytest.raises(Unreachable):
            reader.read(handle, 0, 100)
        started = time.monotonic()
        with pytest.raises(Unreachable):
            reader.read(handle, 0, 100)
        assert time.monotonic() - started < 0.3 and len(calls) == 1
    again = reader.open(Content(record, entries["f.bin"]))
    assert reader.read(again, 0, 100) == data[:100]  # the server is back: another open fetches at once
    again.close()
    time.sleep(reader_module.HUNG_FAILURE_KEPT_S)
    assert reader.read(handle, 0, 100) == data[:100]  # and so does this one, later
    handle.close()


def test_a_seeking_read_whose_pieces_hung_and_failed_fails_again_at_once(setup, monkeypatch):
    """As a block's: the kernel's second callback after a failed read started a piece fetch of its
    own behind the silent server (`dd skip=20` took two timeouts, 120 s with the default 60 s)."""
    repo, record, entries, data, make = setup
    reader = make(demand_timeout=1.0)
    calls = []

    handle = reader.open(Content(record, entries["f.bin"]))
    assert reader.read(handle, 0, 100) == data[:100]
    far = 12 * BS + 5
    with monkeypatch.context() as patch:
        patch.setattr(repo, "read_range", hangs_then_fails(calls))
        with pytest.raises(Unreachable):
            reader.read(handle, far, 100)
        started = time.monotonic()
        with pytest.raises(Unreachable):
            reader.read(handle, far, 100)
        assert time.monotonic() - started < 0.3 and len(calls) == 1
    time.sleep(reader_module.HUNG_FAILURE_KEPT_S)
    assert reader.read(handle, far, 100) == data[far:far + 100]  # the server is back: fetched again
    handle.close()


def test_behind_a_silent_server_pieces_already_held_are_read_between_probes(setup, monkeypatch):
    """What is cached stays readable while the server is silent: a seeking read whose pieces are
    held must not fail at once as the reads that need the server do."""
    repo, record, entries, data, make = setup
    reader = make(demand_timeout=1.0)
    handle = reader.open(Content(record, entries["f.bin"]))
    far, other = 12 * BS + 5, 16 * BS + 5
    assert reader.read(handle, 0, 100) == data[:100]
    assert reader.read(handle, far, 100) == data[far:far + 100]  # pieces, held from now on
    assert reader.fetcher.wait_idle(10)
    calls = []
    with monkeypatch.context() as patch:
        patch.setattr(repo, "read_range", hangs_then_fails(calls))
        with pytest.raises(Unreachable):
            reader.read(handle, other, 100)  # hangs 0.8 s of the 1 s bound: the server is silent
        with pytest.raises(TimeoutError):
            reader.read(handle, other + BS, 100)  # the probe, not answered within its wait
        again = reader.open(Content(record, entries["f.bin"]))
        assert reader.read(again, 0, 100) == data[:100]
        assert reader.read(again, far, 100) == data[far:far + 100]  # between probes, from what is held
        asked = len(calls)
        started = time.monotonic()
        with pytest.raises(Unreachable, match="has not answered reads"):  # held pieces did not end the silence
            reader.read(again, other + 2 * BS, 100)
        assert time.monotonic() - started < 0.1 and len(calls) == asked  # and nothing was queued for the server
        again.close()
    handle.close()


def test_behind_a_silent_server_a_multi_range_read_fails_at_once_between_probes(setup, monkeypatch):
    """A multi-range read (GDAL's tile rows through `eotdl://`) waited a whole read timeout every time
    behind a silent server; it keeps the hold as single reads do, and its held ranges still serve."""
    repo, record, entries, data, make = setup
    reader = make(demand_timeout=1.0)
    handle = reader.open(Content(record, entries["f.bin"]))
    held = [3 * BS + 7, 5 * BS + 9]
    targets = [memoryview(bytearray(3000)) for _ in held]
    assert reader.read(handle, 0, 100) == data[:100]
    reader.read_ranges(handle, list(zip(held, targets)))
    assert [bytes(t) for t in targets] == [data[o:o + 3000] for o in held]
    calls = []
    with monkeypatch.context() as patch:
        patch.setattr(repo, "read_range", hangs_then_fails(calls))
        patch.setattr(repo, "read_ranges", hangs_then_fails(calls))
        with pytest.raises(Unreachable):
            reader.read(handle, 12 * BS, 100)  # the server is silent
        started = time.monotonic()
        with pytest.raises(TimeoutError):  # a probe: on the workers, waited for half a second, not the bound
            reader.read_ranges(handle, [(14 * BS + 1, memoryview(bytearray(10))), (15 * BS, memoryview(bytearray(10)))])
        assert time.monotonic() - started < 0.7
        asked = len(calls)
        started = time.monotonic()
        with pytest.raises(Unreachable, match="has not answered reads"):
            reader.read_ranges(handle, [(16 * BS + 1, memoryview(bytearray(10))), (17 * BS, memoryview(bytearray(10)))])
        assert time.monotonic() - started < 0.1 and len(calls) == asked
        again = [memoryview(bytearray(3000)) for _ in held]
        reader.read_ranges(handle, list(zip(held, again)))  # between probes, from what is held
        assert [bytes(t) for t in again] == [data[o:o + 3000] for o in held]
    assert reader.fetcher.wait_idle(10)
    handle.close()


def test_a_multi_range_read_never_waits_for_a_stalled_cache_write(setup):
    """A multi-range read's first request runs on the reader's own thread; past the bound of pieces
    waiting to be stored, that thread waited for the writer (STORE_WAIT, 2 s) with its bytes in hand."""
    repo, record, entries, data, make = setup
    piece = PIECE
    disk_free = threading.Event()
    pieces, content, _ = pieces_behind_a_slow_disk(setup, lambda: disk_free.wait(20), unstored_bytes=2 * piece)
    try:
        for first in range(10, 40, 3):  # each call a single run: all on this thread
            target = memoryview(bytearray(2 * piece))
            started = time.monotonic()
            pieces.read_ranges(content, pieces.fetcher.serial(), [(first * piece, target)], time.monotonic() + 10)
            assert time.monotonic() - started < pieces_module.STORE_WAIT / 2
            assert bytes(target) == data[first * piece:(first + 2) * piece]
        assert pieces.let_go > 0  # the disk stays stalled: memory is bounded, at twice the bound
    finally:
        disk_free.set()
        pieces.close()


def test_pieces_waiting_to_be_stored_are_served_when_no_longer_kept(setup):
    """A second reader of pieces the writer has not stored yet, and that the kept pieces (bounded)
    have let go, fetched them again: a second process reading a COG's windows fetched 320 KiB in
    CI, behind a cache disk busy with the first's batch. They are served from where they wait."""
    repo, record, entries, data, make = setup
    piece = PIECE
    disk_free = threading.Event()
    pieces, content, stored = pieces_behind_a_slow_disk(setup, lambda: disk_free.wait(20), kept_bytes=2 * piece)
    try:
        read_pieces(pieces, content, data, piece, range(10, 40))
        time.sleep(pieces_module.STORE_QUIET_S * 3)  # the writer has taken a batch and waits for the disk
        served = repo.bytes_served
        read_pieces(pieces, content, data, piece, range(10, 40))
        assert repo.bytes_served == served
    finally:
        disk_free.set()
        pieces.close()
    assert sorted(key for _, key in stored) == sorted(piece_key(n) for n in range(10, 40))


def test_a_burst_of_multi_range_reads_behind_a_busy_cache_disk_loses_no_piece(setup):
    """A reader's own thread never waits for the writer; it let the oldest pieces go as soon as those
    waiting passed the bound, so a burst of windows faster than one batch's write cost a next process
    its fetches again. It lets pieces go only past twice the bound, behind a disk that stays stalled."""
    repo, record, entries, data, make = setup
    piece = PIECE
    busy = lambda: time.sleep(0.3)  # noqa: E731  busy, and gets there
    pieces, content, stored = pieces_behind_a_slow_disk(setup, busy, unstored_bytes=4 * piece)
    try:
        for first in (10, 17):  # 6 pieces waiting: past the bound, within twice it
            target = memoryview(bytearray(3 * piece))
            pieces.read_ranges(content, pieces.fetcher.serial(), [(first * piece, target)], time.monotonic() + 10)
            assert bytes(target) == data[first * piece:(first + 3) * piece]
    finally:
        pieces.close()
    assert pieces.let_go == 0
    assert sorted(key for _, key in stored) == sorted(piece_key(n) for n in (*range(10, 13), *range(17, 20)))


def test_a_reader_opened_after_a_checksum_failure_does_not_join_a_fetch_begun_before_it(setup):
    """Found in CI: right after a corrupt read's EIO, the user's next read joined a fetch of the
    same block begun before the failure, which then failed as stale: EIO again, the server fine."""
    repo, record, entries, data, make = setup
    reader = make()
    fetcher, content = reader.fetcher, Content(record, entries["f.bin"])
    repo.stall_at = 10  # the fetch of block 0 brings 10 bytes, then waits
    before = fetcher.demand(content, 0, fetcher.serial())
    deadline = time.monotonic() + 10
    while not repo.range_calls and time.monotonic() < deadline:
        time.sleep(0.01)
    fetcher.reject(content)  # the file failed its SHA-1 meanwhile (another fetch's bytes)
    repo.stall_at = None
    try:
        after = fetcher.demand(content, 0, fetcher.serial())  # a reader opened after the failure
        assert bytes(after.result(timeout=10)) == data[:BS]
    finally:
        repo.resume.set()
    with pytest.raises(StaleFetch):
        before.result(timeout=10)
