"""The mount's tree as data: records, versions, latest, drafts hidden, TTL refresh in the background,
offline, a hanging server, and what a broken server lists against the rules."""

from __future__ import annotations

import errno
import threading
import time
from dataclasses import replace
from typing import Callable

import pytest

from eotdlfs.fs.context import MountOptions, build_context
from eotdlfs.fs.namespace import DIR, FILE, LINK, Namespace, VersionTree
from eotdlfs.metadata import KINDS
from eotdlfs.repository import FileEntry
from tests.fs.fakes import MemoryRepository


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def repo() -> MemoryRepository:
    repo = MemoryRepository()
    repo.publish("datasets", "alpha", {"a.txt": b"one", "sub/deep/b.bin": b"x" * 10})
    repo.publish("datasets", "alpha", {"a.txt": b"two!", "c.csv": b"1,2"})
    return repo


def listdir_once_refreshed(ns: Namespace, path: str, within_s: float = 5.0) -> list[str]:
    """PATH's listing once the refresh its first look starts in the background has ended."""
    first = ns.listdir(path)
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        time.sleep(0.01)
        if ns.listdir(path) != first:
            break
    return ns.listdir(path)


def test_version_tree_builds_every_folder():
    tree = VersionTree.build([FileEntry("x/y/z.txt", 1, "c", 1), FileEntry("x/w.txt", 1, "d", 1),
                              FileEntry("top", 1, "e", 1)])
    assert tree.children[""] == ["top", "x"]
    assert tree.children["x"] == ["w.txt", "y"]
    assert tree.children["x/y"] == ["z.txt"]


def test_paths_resolve_to_files_dirs_and_latest(repo, tmp_path):
    ns = Namespace(repo, tmp_path)
    assert ns.listdir("/") == ["datasets", "models"]
    assert ns.listdir("/datasets") == ["alpha"]
    assert ns.listdir("/datasets/alpha") == ["v1", "v2", "latest"]
    latest = ns.resolve("/datasets/alpha/latest")
    assert (latest.type, latest.target) == (LINK, "v2")
    node = ns.resolve("/datasets/alpha/v1/sub/deep/b.bin")
    assert (node.type, node.size, node.version) == (FILE, 10, 1)
    assert ns.resolve("/datasets/alpha/v1/sub").type == DIR
    assert ns.listdir("/datasets/alpha/v2") == ["a.txt", "c.csv"]
    assert ns.resolve("/datasets/alpha/v2/a.txt").size == 4
    assert ns.resolve("/datasets/alpha/v1").mtime == repo.record("datasets", "alpha").versions[0].created_at.timestamp()
    for missing in ("/datasets/beta", "/datasets/alpha/v3", "/datasets/alpha/v0", "/nope", "/datasets/alpha/v1\n",
                    "/datasets/alpha/v1/none.txt", "/datasets/alpha/latest/a.txt"):
        with pytest.raises(FileNotFoundError) as info:
            ns.resolve(missing)
        assert info.value.errno == errno.ENOENT


def test_drafts_are_hidden(tmp_path):
    repo = MemoryRepository()
    repo.publish("models", "mod-one", {"w.bin": b"w"})
    repo.publish("models", "mod-one", {"w.bin": b"w2"}, draft=True)
    repo.publish("models", "only-draft", {"x": b"x"}, draft=True)
    ns = Namespace(repo, tmp_path)
    assert ns.listdir("/models") == ["mod-one"]
    assert ns.listdir("/models/mod-one") == ["v1", "latest"]
    assert ns.resolve("/models/mod-one/latest").target == "v1"


def test_new_versions_appear_after_ttl(repo, tmp_path):
    clock = Clock()
    ns = Namespace(repo, tmp_path, ttl=10, clock=clock)
    assert ns.listdir("/datasets/alpha")[-2] == "v2"
    repo.publish("datasets", "alpha", {"a.txt": b"three"})
    clock.now = 5
    assert "v3" not in ns.listdir("/datasets/alpha")
    clock.now = 11
    assert "v3" in listdir_once_refreshed(ns, "/datasets/alpha")
    assert ns.resolve("/datasets/alpha/latest").target == "v3"


def test_file_lists_are_kept_on_disk_and_work_offline(repo, tmp_path):
    ns = Namespace(repo, tmp_path)
    ns.listdir("/datasets/alpha/v1")
    repo.offline = True
    again = Namespace(repo, tmp_path)  # a remount while the server is down
    assert again.listdir("/datasets/alpha/v1") == ["a.txt", "sub"]
    assert again.server_reachable is False
    with pytest.raises(Exception):
        again.listdir("/datasets/alpha/v2")  # never listed before: cannot be known


def test_refresh_failure_keeps_the_old_list(repo, tmp_path):
    clock = Clock()
    ns = Namespace(repo, tmp_path, ttl=1, clock=clock)
    assert ns.listdir("/datasets") == ["alpha"]
    repo.offline = True
    clock.now = 5
    assert ns.listdir("/datasets") == ["alpha"]
    calls = repo.list_calls
    assert ns.listdir("/datasets") == ["alpha"]  # no retry storm within the TTL
    assert repo.list_calls == calls


def test_a_version_folder_resolves_without_fetching_its_file_list(repo, tmp_path):
    fetched = []
    files = repo.files
    repo.files = lambda record, version: fetched.append(version) or files(record, version)
    ns = Namespace(repo, tmp_path)
    for name in ns.listdir("/datasets/alpha"):  # `ls -l` of a record looks up every version
        ns.resolve(f"/datasets/alpha/{name}")
    assert fetched == []
    assert ns.listed_file("/datasets/alpha/v1/a.txt") is None  # not loaded: `resolve` answers
    assert ns.listdir("/datasets/alpha/v1") == ["a.txt", "sub"]
    assert fetched == [1]
    entry, mtime = ns.listed_file("/datasets/alpha/v1/a.txt")
    assert (entry.size, mtime) == (3, ns.resolve("/datasets/alpha/v1").mtime)
    assert ns.listed_file("/datasets/alpha/v1/sub") is None  # a folder: `resolve` answers


def test_listings_are_served_when_their_folder_on_disk_cannot_be_written(repo, tmp_path):
    """A full (or otherwise unwritable) cache disk costs keeping listings for the next mount,
    never a listing: a file stands where the state folder should be, so every write fails."""
    blocked = tmp_path / "state"
    blocked.write_text("not a folder")
    ns = Namespace(repo, blocked / "inside")
    assert ns.listdir("/datasets") == ["alpha"]
    assert sorted(ns.listdir("/datasets/alpha/v1")) == ["a.txt", "sub"]
    assert ns.resolve("/datasets/alpha/v2/c.csv").type == FILE


def took(miss: Callable[[], object]) -> float:
    """Seconds MISS took to raise FileNotFoundError."""
    started = time.monotonic()
    with pytest.raises(FileNotFoundError):
        miss()
    return time.monotonic() - started


class HangingRepository(MemoryRepository):
    """A server that accepts and never answers listings until `answer` is set."""

    def __init__(self):
        super().__init__()
        self.answer = threading.Event()
        self.answer.set()
        self.waiting = 0

    def records(self, kind: str):
        self.waiting += 1
        self.answer.wait(10)
        self.waiting -= 1
        return super().records(kind)


def listed_then_hanging(tmp_path, ttl: float, wait: float) -> tuple[HangingRepository, Clock, Namespace]:
    """A namespace that listed record 'alpha', over a server that has stopped answering."""
    repo, clock = HangingRepository(), Clock()
    repo.publish("datasets", "alpha", {"a.txt": b"one"})
    ns = Namespace(repo, tmp_path, ttl=ttl, wait=wait, clock=clock)
    assert ns.listdir("/datasets") == ["alpha"]
    repo.answer.clear()
    return repo, clock, ns


def test_past_the_ttl_the_list_in_hand_is_served_while_one_refresh_runs(tmp_path):
    repo, clock, ns = listed_then_hanging(tmp_path, ttl=1, wait=30)
    repo.publish("datasets", "beta", {"b.txt": b"two"})
    clock.now = 5
    started = time.monotonic()
    for _ in range(20):
        assert ns.listdir("/datasets") == ["alpha"]
    assert time.monotonic() - started < 1
    deadline = time.monotonic() + 5  # the refresh thread may not have reached the server yet
    while repo.waiting == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert repo.waiting == 1  # twenty looks, one refresh in flight
    repo.answer.set()
    assert listdir_once_refreshed(ns, "/datasets") == ["alpha", "beta"]


def test_past_the_ttl_a_name_not_in_the_list_waits_for_the_refresh(repo, tmp_path):
    """A record (or version) published elsewhere is found at its first look past the TTL: it was
    answered from the list in hand (ENOENT), and found only by the next look."""
    clock = Clock()
    ns = Namespace(repo, tmp_path, ttl=1, clock=clock)
    assert ns.listdir("/datasets") == ["alpha"]
    repo.publish("datasets", "beta", {"b.txt": b"two"})
    repo.publish("datasets", "alpha", {"a.txt": b"three"})
    clock.now = 5
    assert ns.resolve("/datasets/beta").type == DIR
    assert ns.listdir("/datasets/beta/v1") == ["b.txt"]
    repo.publish("datasets", "alpha", {"a.txt": b"four"})
    clock.now = 10
    assert ns.resolve("/datasets/alpha/v4").type == DIR
    calls = repo.list_calls
    with pytest.raises(FileNotFoundError):
        ns.resolve("/datasets/gamma")  # within the TTL of the refresh: answered from the list at once
    assert repo.list_calls == calls


def test_a_silent_server_costs_misses_one_bounded_wait_per_ttl(tmp_path):
    repo, clock, ns = listed_then_hanging(tmp_path, ttl=10, wait=1)
    clock.now = 20
    waits = [took(lambda: ns.resolve("/datasets/gamma")) for _ in range(3)]
    assert waits[0] >= 1 and waits[1] < 1 and waits[2] < 1, waits  # misses after the first: no wait
    assert ns.resolve("/datasets/alpha").type == DIR  # a hit: served from the list in hand
    clock.now = 35  # the next TTL: one more bounded wait, on the same refresh
    assert took(lambda: ns.resolve("/datasets/gamma")) >= 1
    assert repo.waiting == 1
    repo.answer.set()


def test_with_no_list_in_hand_a_look_waits_a_bounded_time(repo, tmp_path):
    Namespace(repo, tmp_path).listdir("/datasets")  # a list kept on disk
    hanging = HangingRepository()
    hanging.answer.clear()
    for state_dir, expected in ((tmp_path / "none", None), (tmp_path, ["alpha"])):
        ns = Namespace(hanging, state_dir, wait=0.3)
        started = time.monotonic()
        if expected is None:
            with pytest.raises(TimeoutError, match="within 0.3 s"):
                ns.listdir("/datasets")
        else:
            assert ns.listdir("/datasets") == expected  # remount: the list from before
        assert time.monotonic() - started < 2
    hanging.answer.set()


def test_what_breaks_the_rules_is_left_out_and_logged_once(repo, tmp_path, caplog):
    bad_names = ["evil/name", "..", ".", "", "a\x00b", "tab\there", "x" * 300]
    for name in bad_names:
        repo.publish("datasets", name, {"f.txt": b"f"})
    alpha = repo.record("datasets", "alpha")
    bad_versions = [replace(alpha.versions[0], number=n) for n in (0, -3)]
    repo._records[("datasets", "alpha")] = replace(alpha, versions=alpha.versions + tuple(bad_versions))
    bad_paths = ["../up.txt", "a//b", "/abs", "dot/./x", "ctl\x01", "back\\slash", "y" * 256, ""]
    repo._files[(alpha.id, 1)] += [FileEntry(p, 1, "c" * 40, 1) for p in bad_paths]
    clock = Clock()
    ns = Namespace(repo, tmp_path, ttl=1, clock=clock)
    for _ in range(2):  # a second refresh says nothing new
        assert ns.listdir("/datasets") == ["alpha"]
        assert ns.listdir("/datasets/alpha") == ["v1", "v2", "latest"]
        assert ns.listdir("/datasets/alpha/v1") == ["a.txt", "sub"]
        clock.now += 5
        listdir_once_refreshed(ns, "/datasets", within_s=0.2)
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("left out")]
    assert len(logged) == len(bad_names) + len(bad_versions) + len(bad_paths), logged
    assert any("'evil/name'" in m for m in logged) and any("'../up.txt'" in m for m in logged)
    again = Namespace(repo, tmp_path)  # and the lists kept on disk hold nothing bad either
    repo.offline = True
    assert again.listdir("/datasets") == ["alpha"] and again.listdir("/datasets/alpha/v1") == ["a.txt", "sub"]


def test_first_open_resolves_one_path_without_the_whole_list(repo, tmp_path):
    """A fresh mount answers a path in a version with one small lookup: the whole list (10,000
    files in a big version) comes in the background, and nobody waits for it."""
    listing_may_answer = threading.Event()
    files = repo.files
    repo.files = lambda record, version: listing_may_answer.wait(10) and files(record, version)
    ns = Namespace(repo, tmp_path, wait=2)
    try:
        node = ns.resolve("/datasets/alpha/v1/sub/deep/b.bin")
        assert (node.type, node.size) == (FILE, 10)
        assert ns.resolve("/datasets/alpha/v1/sub").type == DIR
        with pytest.raises(FileNotFoundError):
            ns.resolve("/datasets/alpha/v1/sub/nothing")
    finally:
        listing_may_answer.set()
    assert ns.listdir("/datasets/alpha/v1") == ["a.txt", "sub"]  # the list fetched in the background
    assert repo.file_lists == 1


def test_a_lone_lookup_is_answered_on_the_callers_thread_when_the_repository_can(repo, tmp_path):
    """A lookup the repository answers at once runs on the resolving (FUSE) thread: a hop to a
    fetch thread and back was a third of a fresh mount's lookup. When it cannot (None), `lookup`
    answers from a fetch thread, as before."""
    threads = []

    def at_once(record, version, path):
        threads.append(threading.get_ident())
        return repo.lookup(record, version, path) if path != "sub" else None

    repo.lookup_at_once = at_once
    ns = Namespace(repo, tmp_path, wait=2)
    assert ns.resolve("/datasets/alpha/v1/a.txt").size == 3
    assert ns.resolve("/datasets/alpha/v1/sub").type == DIR  # through `lookup`
    with pytest.raises(FileNotFoundError):
        ns.resolve("/datasets/alpha/v1/nothing")
    assert threads == [threading.get_ident()] * 3


def test_a_server_that_ignores_the_path_filter_sends_the_whole_list_which_is_kept(repo, tmp_path):
    repo.lookup = lambda record, version, path: repo.files(record, version)
    ns = Namespace(repo, tmp_path)
    assert ns.resolve("/datasets/alpha/v1/a.txt").size == 3
    with pytest.raises(FileNotFoundError):
        ns.resolve("/datasets/alpha/v1/nothing")
    assert ns.listdir("/datasets/alpha/v1/sub") == ["deep"]
    assert repo.file_lists == 1


def test_warm_fetches_the_record_lists_before_anyone_looks(repo, tmp_path):
    ns = Namespace(repo, tmp_path)
    ns.warm()
    deadline = time.monotonic() + 5
    while repo.list_calls < len(KINDS) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert repo.list_calls == len(KINDS)
    assert ns.listdir("/datasets") == ["alpha"] and ns.listdir("/models") == []
    assert repo.list_calls == len(KINDS)  # found in hand


def test_closing_lists_the_versions_looked_into_for_an_offline_remount(repo, tmp_path):
    """A mount that opened one file and ended at once still leaves its version's list on disk."""
    ns = Namespace(repo, tmp_path)
    assert ns.resolve("/datasets/alpha/v1/a.txt").size == 3
    ns.close()
    repo.offline = True
    again = Namespace(repo, tmp_path)
    assert again.listdir("/datasets/alpha/v1") == ["a.txt", "sub"]


def test_lists_kept_before_they_were_kept_per_repository_are_dropped(repo, tmp_path):
    """They lay in CACHE/state itself, and a mount of any repository read them when it was down."""
    state = tmp_path / "cache" / "state"
    (state / "listings" / "datasets" / "an-id").mkdir(parents=True)
    (state / "listings" / "datasets" / "an-id" / "v1.rows.json").write_text("[]")
    (state / "records-datasets.json").write_text("[]")
    context = build_context(repo, MountOptions(cache_dir=tmp_path / "cache", api_url="http://127.0.0.1:1/"))
    try:
        assert list(context.namespace.records("datasets")) == ["alpha"]
    finally:
        context.close()
    assert not (state / "records-datasets.json").exists() and not (state / "listings").exists()
    assert [p.name for p in state.glob("*/records-datasets.json")] == ["records-datasets.json"]
