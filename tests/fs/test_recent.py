"""Recently fetched blocks kept in memory: bounded in bytes, oldest out first, per file."""

from __future__ import annotations

from eotdlfs.fs.recent import RecentBlocks


def block(n: int) -> memoryview:
    return memoryview(bytes(n))


def test_the_oldest_blocks_go_first_once_over_the_limit():
    recent = RecentBlocks(limit_bytes=300)
    recent.add("a", {0: block(100), 1: block(100)})
    recent.add("a", {2: block(100), 3: block(100)})
    assert ("a", 0) not in recent and recent.get("a", 0) is None
    assert all(("a", i) in recent for i in (1, 2, 3))


def test_discard_and_drop_forget_only_what_they_name():
    recent = RecentBlocks(limit_bytes=10_000)
    recent.add("a", {0: block(10), 1: block(10)})
    recent.add("b", {0: block(10)})
    recent.discard("a", [0])
    assert recent.get("a", 0) is None and recent.get("a", 1) is not None
    recent.drop("a")
    assert ("a", 1) not in recent and ("b", 0) in recent
    recent.add("b", {1: block(9_990)})  # the bytes of forgotten blocks no longer count
    assert ("b", 0) in recent and ("b", 1) in recent


def test_the_bound_counts_each_request_buffer_once_and_whole():
    """Blocks are slices of their request's buffer; one kept block keeps all of it alive."""
    recent = RecentBlocks(limit_bytes=250)
    first, second = memoryview(bytes(200)), memoryview(bytes(200))
    recent.add("a", {0: first[:100], 1: first[100:]})  # one buffer of 200: within the bound
    assert ("a", 0) in recent and ("a", 1) in recent
    recent.add("a", {2: second[:10]})  # a second buffer: 400 > 250, the first goes
    assert ("a", 0) not in recent and ("a", 1) not in recent and ("a", 2) in recent
