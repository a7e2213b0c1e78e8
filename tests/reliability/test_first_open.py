"""A fresh mount's first open of a file: what it asks the server for, and what it waits for.

`scripts/bench` times it (`first_small`, `first_byte`); these tests pin down the behaviour
behind the figures, on a real server and a real mount.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest

from eotdlfs.app.mount import AHEAD_NOT_OPENED, FirstBlocksAhead
from eotdlfs.client.api import ApiClient
from eotdlfs.client.repository import ApiRepository
from eotdlfs.client.settings import Settings
from eotdlfs.fs.block_cache import BlockCache
from eotdlfs.fs.content import Content
from eotdlfs.fs.fetcher import BlockFetcher
from eotdlfs.fs.nodes import FILE, Node
from eotdlfs.fs.reader import ContentReader
from reliability.conftest import Proxied
from reliability.faultproxy import FaultProxy
from tests.fs.datasets import ingest, write_metadata

NAME = "first-open"
SMALL = "d/e/small.bin"
BIG = "big.bin"
MANY = [f"many/f{i}.bin" for i in range(AHEAD_NOT_OPENED + 2)]
WITHIN_S = 10.0


@pytest.fixture(scope="module")
def seeded(module_server: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Dataset 'first-open' v1: a 4 KiB file two folders down, a file of four blocks, and a few
    more small files (MANY)."""
    folder = tmp_path_factory.mktemp(NAME) / NAME
    (folder / "d" / "e").mkdir(parents=True)
    (folder / "many").mkdir()
    write_metadata(folder, NAME)
    rng = random.Random(16)
    files = {SMALL: rng.randbytes(4096), BIG: rng.randbytes(3 * 1024 * 1024 + 5)}
    files.update((path, rng.randbytes(4096)) for path in MANY)
    for path, data in files.items():
        (folder / path).write_bytes(data)
    ingest(module_server, folder)
    return files


def downloads_after(server: Any, before: int, count: int) -> int:
    """The server's route-9 downloads once COUNT more than BEFORE were made, or after WITHIN_S."""
    deadline = time.monotonic() + WITHIN_S
    while server.stats()["downloads"] < before + count and time.monotonic() < deadline:
        time.sleep(0.02)
    return server.stats()["downloads"]


def test_a_file_looked_up_alone_has_its_first_block_on_its_way_before_its_open(module_server, seeded,
                                                                               mount_factory) -> None:
    """A fresh mount looks a file up alone (its version's list is not in hand yet); the file's
    first block (a small file whole) is then fetched at once, from the lookup's thread: the open
    and the read at the file's start the kernel sends right after find it arrived or arriving,
    and no byte is fetched twice."""
    mount = mount_factory(module_server)
    version = mount.path / "datasets" / NAME / "v1"
    before = module_server.stats()["downloads"]
    assert (version / SMALL).stat().st_size == 4096  # a lookup, no open
    assert (version / BIG).stat().st_size == len(seeded[BIG])
    assert downloads_after(module_server, before, 2) == before + 2
    assert (version / SMALL).read_bytes() == seeded[SMALL]
    with open(version / BIG, "rb") as f:
        assert f.read(65536) == seeded[BIG][:65536]
    time.sleep(0.5)  # the read-ahead the kernel's requests earned (blocks 1-2) ends
    assert mount.status()["fetch"]["bytes_fetched"] <= len(seeded[SMALL]) + len(seeded[BIG])


def test_lookups_with_no_open_after_them_stop_fetching_first_blocks(module_server, seeded, mount_factory) -> None:
    """A lookup cannot tell a `stat` from an open: a script testing which of many paths exist, on
    a fresh mount, fetched the first block (up to 1 MiB) of each. Past AHEAD_NOT_OPENED files
    fetched so and not opened, lookups fetch nothing."""
    mount = mount_factory(module_server)
    version = mount.path / "datasets" / NAME / "v1"
    before = module_server.stats()["downloads"]
    for path in MANY:
        assert (version / path).stat().st_size == 4096  # lookups, no open
    downloads_after(module_server, before, AHEAD_NOT_OPENED)
    time.sleep(0.5)  # time for more, if more were on their way
    # (fewer if the version's list came first: its paths are no lone lookups)
    assert 1 <= module_server.stats()["downloads"] - before <= AHEAD_NOT_OPENED
    assert (version / MANY[-1]).read_bytes() == seeded[MANY[-1]]


def test_an_open_lets_lookups_fetch_first_blocks_again(module_server, seeded, tmp_path: Path, monkeypatch) -> None:
    """Each file fetched ahead and then opened gives the next lookup's head start back, and so does
    time: a stat long ago says nothing of what the lookups of now are for."""
    monkeypatch.setattr("eotdlfs.app.mount.AHEAD_FORGET_S", 1.0)
    api = ApiClient(Settings(module_server.url, None, None))
    repo = FirstBlocksAhead(api)
    cache = BlockCache(tmp_path / "blocks", 1 << 30)
    repo.fetcher = fetcher = BlockFetcher(repo, cache)
    try:
        record = repo.record("datasets", NAME)
        before = module_server.stats()["downloads"]
        entries = [repo.lookup_at_once(record, 1, path)[0] for path in MANY[:AHEAD_NOT_OPENED + 1]]
        assert fetcher.wait_idle(WITHIN_S)
        assert module_server.stats()["downloads"] - before == AHEAD_NOT_OPENED
        repo.opened(Node(FILE, 0.0, entries[0].size, record, 1, entries[0]))
        repo.lookup_at_once(record, 1, MANY[-1])
        assert fetcher.wait_idle(WITHIN_S)
        assert module_server.stats()["downloads"] - before == AHEAD_NOT_OPENED + 1
        assert (entries[AHEAD_NOT_OPENED].checksum, 0) not in cache
        time.sleep(1.1)
        repo.lookup_at_once(record, 1, MANY[AHEAD_NOT_OPENED])
        assert fetcher.wait_idle(WITHIN_S)
        assert (entries[AHEAD_NOT_OPENED].checksum, 0) in cache
    finally:
        fetcher.close()
        cache.close()
        api.close()


def test_the_record_lists_are_in_hand_when_the_mount_is_ready(module_server, seeded, mount_factory) -> None:
    """The mount waits (a bounded while) for the record lists it asked for at start before the
    kernel sees it: the first lookup of a dataset does not wait for them. They came after the
    mount was ready on a loaded machine, and the first open waited."""
    with FaultProxy(module_server.url) as proxy:
        records = proxy.inject("slow", r"^/datasets$", method="GET", delay=1.5)
        mount = mount_factory(Proxied(proxy.url, module_server.token))
        try:
            start = time.monotonic()
            assert (mount.path / "datasets" / NAME).is_dir()
            took = time.monotonic() - start
        finally:
            proxy.clear()
            mount.unmount()
    assert records.hits >= 1
    assert took < 0.5, f"the first lookup of a dataset waited {took:.2f} s for the record list"


class SlowCacheDisk(BlockCache):
    """A block cache whose writes take STALL_S (a busy cache disk)."""

    STALL_S = 3.0

    def put_blocks(self, checksum: str, blocks: dict) -> bool:
        time.sleep(self.STALL_S)
        return super().put_blocks(checksum, blocks)


def test_a_small_files_bytes_reach_its_reader_before_the_cache_disk(module_server, seeded, tmp_path: Path) -> None:
    """A file's final block is handed to its readers once the file hashed right, and written to
    the cache after: the write (a file, a transaction) took as long as the small file's whole
    round trip, on the path of every first read. It is in the cache after."""
    api = ApiClient(Settings(module_server.url, None, None))
    repo = ApiRepository(api)
    cache = SlowCacheDisk(tmp_path / "blocks", 1 << 30)
    fetcher = BlockFetcher(repo, cache)
    reader = ContentReader(fetcher, demand_timeout=WITHIN_S)
    try:
        record = repo.record("datasets", NAME)
        content = Content(record, next(e for e in repo.files(record, 1) if e.path == SMALL))
        handle = reader.open(content)
        start = time.monotonic()
        assert reader.read(handle, 0, 65536) == seeded[SMALL]
        took = time.monotonic() - start
        assert fetcher.wait_idle(WITHIN_S)
        assert (content.checksum, 0) in cache
        assert took < SlowCacheDisk.STALL_S, f"the reader waited {took:.2f} s for the cache disk"
    finally:
        reader.close()
        fetcher.close()
        cache.close()
        api.close()
