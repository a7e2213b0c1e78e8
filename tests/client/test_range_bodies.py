"""Range bodies in reused page-aligned memory (eotdlfs.client.pagepool): never while a view of
them is held, used again once none is, given back when reads stop."""

from __future__ import annotations

import ctypes
import gc
import mmap
import time
import weakref

import pytest

from client.helpers import client, make_folder
from eotdlfs.client import pagepool
from eotdlfs.client.api import ApiClient
from eotdlfs.client.bodies import RANGE_BODIES
from eotdlfs.client.ingest import ingest_folder
from eotdlfs.client.settings import Settings

RANGE = RANGE_BODIES.size  # what a mount's range request asks for (8 blocks)


@pytest.fixture
def big_file(repo_server, unique_name, tmp_path, monkeypatch):
    """A published dataset with a file of two ranges and a bit; (an ApiClient, record id, its bytes)."""
    monkeypatch.setenv("EOTDLFS_CACHE_DIR", str(tmp_path / "hash-cache"))
    name = unique_name("bodies")
    folder = make_folder(tmp_path / "src", name, 1)
    blob = bytes(range(251)) * (2 * RANGE // 251 + 100)  # 251: no range starts like another
    (folder / "big.bin").write_bytes(blob)
    ingest_folder(client(repo_server), "datasets", folder)
    api = ApiClient(Settings(repo_server.url, repo_server.token("alice"), None, 30))
    return api, api.record_by_name("datasets", name)["id"], blob


def test_a_range_body_is_used_again_only_once_no_view_of_it_is_left(big_file):
    api, record_id, blob = big_file
    first = api.read_range("datasets", record_id, "big.bin", 1, 0, RANGE)
    mapping = weakref.ref(first.obj)
    held = first[1000:2000]  # a reader's block, a slice of the body
    del first
    gc.collect()
    second = api.read_range("datasets", record_id, "big.bin", 1, RANGE, RANGE)
    assert second.obj is not mapping()  # still held: not overwritten
    assert held == blob[1000:2000] and second == blob[RANGE:2 * RANGE]
    assert ctypes.addressof(ctypes.c_char.from_buffer(second)) % mmap.PAGESIZE == 0  # for O_DIRECT
    del held, second
    gc.collect()
    third = api.read_range("datasets", record_id, "big.bin", 1, 100, RANGE)
    assert third.obj is mapping()  # nobody held it any more: no fresh pages to zero
    assert third == blob[100:100 + RANGE]


def test_a_pool_gives_its_free_mappings_back_when_reads_stop(monkeypatch):
    monkeypatch.setattr(pagepool, "IDLE_S", 0.2)
    pool = pagepool.PagePool(1 << 20, keep=4)
    kept, free = pool.take(), pool.take()
    in_use, given_back = weakref.ref(kept.obj), weakref.ref(free.obj)
    del free
    gc.collect()
    deadline = time.monotonic() + 10
    while pool.kept() > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool.kept() == 1 and (given_back() is None or given_back().closed)
    assert not in_use().closed
    kept[:5] = b"still"  # the mapping in use stays usable
    assert bytes(kept[:5]) == b"still"
