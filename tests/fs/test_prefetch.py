"""A STAC version's documents fetched ahead of a walker (`eotdlfs.fs.prefetch`), on the in-memory repository."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest

from eotdlfs.fs.context import MountOptions, build_context
from tests.fs.fakes import MemoryRepository

ITEMS = {f"items/item-{i:03d}.json": f'{{"id": "item-{i:03d}"}}'.encode() for i in range(30)}
FILES = {"catalog.json": b'{"type": "Catalog"}', "collection.json": b'{"type": "Collection"}', "data.tif": b"x" * 10,
         **ITEMS}


@pytest.fixture
def mounted(tmp_path):
    repo = MemoryRepository()
    repo.publish("datasets", "walk", FILES)
    context = build_context(repo, MountOptions(cache_dir=tmp_path / "cache"))
    try:
        yield repo, context
    finally:
        context.close()


def read(context, path: str) -> bytes:
    handle = context.tree.open(f"/datasets/walk/v1/{path}", 0)
    try:
        return context.reader.read(handle, 0, 1 << 20)
    finally:
        context.tree.release(handle)


def wait_for(condition, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "not within the bound"
        time.sleep(0.01)


def test_opening_the_catalog_fetches_every_small_document_in_few_requests(mounted):
    repo, context = mounted
    context.prefetch.batch_files = 8
    read(context, "catalog.json")
    wait_for(lambda: context.prefetch.fetched >= len(ITEMS) + 1)  # the catalog too, unless its reader came first
    assert all(len(call) <= 8 for call in repo.read_files_calls)
    asked = {p for call in repo.read_files_calls for p in call}
    assert {"collection.json", *ITEMS} <= asked and "data.tif" not in asked
    ranges = len(repo.range_calls)
    assert all(read(context, path) == data for path, data in ITEMS.items())
    assert len(repo.range_calls) == ranges  # every item came from the cache


def test_a_document_that_fails_its_sha1_is_not_kept_and_its_reader_fetches_it(mounted):
    repo, context = mounted
    bad = "items/item-007.json"
    repo.corrupt_in_bulk.add(hashlib.sha1(ITEMS[bad]).hexdigest())
    read(context, "catalog.json")
    wait_for(lambda: context.prefetch.fetched >= len(ITEMS))  # all but the bad one (the catalog maybe)
    ranges = len(repo.range_calls)
    assert read(context, bad) == ITEMS[bad]
    assert len(repo.range_calls) == ranges + 1


def test_nothing_is_fetched_ahead_without_the_catalog_nor_after_unmount(mounted):
    repo, context = mounted
    read(context, "items/item-000.json")
    context.prefetch.close()
    read(context, "catalog.json")
    time.sleep(0.2)
    assert repo.read_files_calls == [] and context.prefetch.fetched == 0


def test_a_late_request_is_waited_for_once_then_documents_are_read_one_by_one(mounted, monkeypatch):
    repo, context = mounted
    context.prefetch.wait = 1.0
    release = threading.Event()
    monkeypatch.setattr(repo, "read_files", lambda record, entries: release.wait(30) and [])
    read(context, "catalog.json")
    wait_for(lambda: context.prefetch._running)  # the request hangs
    start = time.monotonic()
    for path in ("collection.json", "items/item-000.json", "items/item-001.json"):
        assert read(context, path) == FILES[path]
    waited = time.monotonic() - start
    release.set()
    assert 1.0 <= waited < 2.5  # one wait, not one per open
