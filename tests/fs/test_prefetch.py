"""Small files fetched ahead of a walker (`eotdlfs.fs.prefetch`): a STAC version's documents, a folder's
files; on the in-memory repository."""

from __future__ import annotations

import contextlib
import hashlib
import random
import threading
import time

import pytest

from eotdlfs.fs.context import MountOptions, build_context
from tests.fs.fakes import MemoryRepository

ITEMS = {f"items/item-{i:03d}.json": f'{{"id": "item-{i:03d}"}}'.encode() for i in range(30)}
FILES = {"catalog.json": b'{"type": "Catalog"}', "collection.json": b'{"type": "Collection"}', "data.tif": b"x" * 10,
         **ITEMS}


@contextlib.contextmanager
def published(tmp_path, name: str, files: dict[str, bytes]):
    """(repository, mount context) of dataset NAME holding FILES as v1."""
    repo = MemoryRepository()
    repo.publish("datasets", name, files)
    context = build_context(repo, MountOptions(cache_dir=tmp_path / "cache"))
    try:
        yield repo, context
    finally:
        context.close()


@pytest.fixture
def mounted(tmp_path):
    with published(tmp_path, "walk", FILES) as pair:
        yield pair


def read(context, path: str, name: str = "walk") -> bytes:
    handle = context.tree.open(f"/datasets/{name}/v1/{path}", 0)
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


def test_a_failed_request_stops_fetching_ahead_for_a_while_then_a_walk_plans_again(mounted, monkeypatch):
    repo, context = mounted
    context.prefetch.resume_after = 1.0
    real = repo.read_files
    failing = [True]

    def read_files(record, entries):
        if failing[0]:
            raise OSError("the server went away")
        return real(record, entries)

    monkeypatch.setattr(repo, "read_files", read_files)
    read(context, "catalog.json")
    wait_for(lambda: context.prefetch._stopped)
    failing[0] = False
    read(context, "catalog.json")
    time.sleep(0.2)
    assert context.prefetch.fetched == 0  # still resting
    time.sleep(1.0)
    read(context, "catalog.json")
    wait_for(lambda: context.prefetch.fetched >= len(ITEMS))
    ranges = len(repo.range_calls)
    assert all(read(context, path) == data for path, data in ITEMS.items())
    assert len(repo.range_calls) == ranges


CHIP_PATHS = [f"{folder}/chip-{i:02d}.bin" for folder in ("a", "a-b", "b") for i in range(15)]
CHIPS = {path: (path.encode() * 10)[:100] for path in CHIP_PATHS}  # 100 bytes, each its own


@pytest.fixture
def chips(tmp_path):
    with published(tmp_path, "chips", {**CHIPS, "a/big.bin": b"x" * (2 << 20)}) as pair:
        yield pair


def read_chip(context, path: str) -> bytes:
    return read(context, path, "chips")


def cached(context, path: str) -> bool:
    return (hashlib.sha1(CHIPS[path]).hexdigest(), 0) in context.cache


def folder(name: str) -> list[str]:
    return [path for path in CHIP_PATHS if path.startswith(name + "/")]


def test_four_opens_in_a_folder_in_any_order_fetch_its_other_small_files_in_few_requests(chips):
    repo, context = chips
    context.prefetch.batch_files = 5
    walk = random.Random(3).sample(folder("a"), 15)  # `cp -r` goes by inode number: no order of names
    assert [read_chip(context, path) for path in walk[:4]] == [CHIPS[path] for path in walk[:4]]
    wait_for(lambda: context.prefetch.fetched >= 11)
    asked = [path for call in repo.read_files_calls for path in call]
    assert sorted(asked) == sorted(walk[4:])  # each once, the four opened not again
    assert all(len(call) <= 5 and call == sorted(call) for call in repo.read_files_calls)
    ranges = len(repo.range_calls)
    assert all(read_chip(context, path) == CHIPS[path] for path in walk[4:])
    assert len(repo.range_calls) == ranges  # every later chip came from the cache


def test_opens_spread_over_folders_or_of_one_file_fetch_nothing_ahead(chips):
    """A loader drawing at random from many folders, or a script reading one file again and again."""
    repo, context = chips
    for path in [p for trio in zip(folder("a"), folder("a-b"), folder("b")) for p in trio] + [CHIP_PATHS[0]] * 6:
        assert read_chip(context, path) == CHIPS[path]
    time.sleep(0.2)
    assert repo.read_files_calls == [] and context.prefetch.fetched == 0


def test_while_reads_hold_the_server_silent_a_walk_plans_nothing(chips):
    """Behind a silent server a walk's opens waited for a plan's request that would not come (10 s),
    after their reads had already failed at once."""
    repo, context = chips
    assert context.prefetch.silent == context.reader.server_silent  # the mount's wiring
    context.prefetch.silent = lambda: True
    assert [read_chip(context, path) for path in folder("a")[:6]] == [CHIPS[path] for path in folder("a")[:6]]
    time.sleep(0.2)
    assert repo.read_files_calls == [] and context.prefetch.fetched == 0


def test_a_walk_opened_through_a_silence_goes_on_after_it(chips):
    """Its opens meanwhile still make room in the bytes fetched ahead: the plan is not left full."""
    repo, context = chips
    context.prefetch.batch_files = 1
    context.prefetch.ahead_bytes = 300  # three chips fetched and not opened
    chips_a = folder("a")
    for path in chips_a[:4]:
        read_chip(context, path)
    wait_for(lambda: all(cached(context, path) for path in chips_a[4:7]))
    context.prefetch.silent = lambda: True
    for path in chips_a[4:7]:
        assert read_chip(context, path) == CHIPS[path]
    context.prefetch.silent = lambda: False
    read_chip(context, chips_a[7])
    wait_for(lambda: all(cached(context, path) for path in chips_a[8:11]))


def test_the_bytes_fetched_ahead_are_bounded_and_opens_make_room(chips):
    repo, context = chips
    context.prefetch.batch_files = 1  # the bound then holds to the file
    context.prefetch.ahead_bytes = 300  # three chips fetched and not opened
    chips_a = folder("a")
    for path in chips_a[:4]:
        read_chip(context, path)
    wait_for(lambda: all(cached(context, path) for path in chips_a[4:7]))
    time.sleep(0.2)
    assert not cached(context, chips_a[7])
    read_chip(context, chips_a[4])
    wait_for(lambda: cached(context, chips_a[7]))
    time.sleep(0.2)
    assert not cached(context, chips_a[8])


def test_a_walk_asks_only_for_files_not_cached_yet(tmp_path):
    with published(tmp_path, "chips", CHIPS) as (repo, context):
        for pair in zip(folder("a")[5:10], folder("b")[5:10]):  # by turns: no walk
            assert [read_chip(context, path) for path in pair] == [CHIPS[path] for path in pair]
        assert repo.read_files_calls == []
        context.close()
        context = build_context(repo, MountOptions(cache_dir=tmp_path / "cache"))  # a remount, same cache
        try:
            for path in folder("a")[:4]:
                read_chip(context, path)
            wait_for(lambda: context.prefetch.fetched >= 6)
            asked = sorted(path for call in repo.read_files_calls for path in call)
            assert asked == [folder("a")[4], *folder("a")[10:]]  # 5-9 were cached by the first mount
        finally:
            context.close()


def test_a_third_walk_ends_the_oldest(chips):
    repo, context = chips
    context.prefetch.ahead_bytes = 100  # each plan stops after one chip until it is opened
    context.prefetch.batch_files = 1
    for name in ("a", "a-b", "b"):
        for path in folder(name)[:4]:
            read_chip(context, path)
        wait_for(lambda: cached(context, folder(name)[4]))
    time.sleep(0.2)
    asked = len(repo.read_files_calls)
    read_chip(context, folder("a")[4])  # would make room in a's plan, were it still going
    read_chip(context, folder("b")[4])  # makes room in b's
    wait_for(lambda: cached(context, folder("b")[5]))
    time.sleep(0.2)
    assert [call for call in repo.read_files_calls[asked:]] == [[folder("b")[5]]]


def test_a_small_cache_bounds_the_bytes_fetched_ahead_to_an_eighth_of_it(tmp_path):
    """Files fetched ahead into a cache they do not fit in would be evicted before the walker came."""
    repo = MemoryRepository()
    repo.publish("datasets", "chips", CHIPS)
    context = build_context(repo, MountOptions(cache_dir=tmp_path / "cache", cache_size=8_000))
    try:
        chips_a = folder("a")
        for path in chips_a[:4]:
            read(context, path, "chips")
        wait_for(lambda: context.prefetch.fetched >= 10)  # 1,000 bytes: ten chips
        time.sleep(0.2)
        assert context.prefetch.fetched == 10 and not cached(context, chips_a[-1])
    finally:
        context.close()
