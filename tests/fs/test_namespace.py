"""The mount's tree as data: records, versions, latest, drafts hidden, TTL refresh, offline."""

from __future__ import annotations

import errno

import pytest

from eotdlfs.fs.namespace import DIR, FILE, LINK, Namespace, VersionTree
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
    for missing in ("/datasets/beta", "/datasets/alpha/v3", "/datasets/alpha/v0", "/nope",
                    "/datasets/alpha/v1/none.txt", "/datasets/alpha/latest/a.txt"):
        with pytest.raises(FileNotFoundError) as info:
            ns.resolve(missing)
        assert info.value.errno == errno.ENOENT


def test_drafts_are_hidden(tmp_path):
    repo = MemoryRepository()
    repo.publish("models", "m1", {"w.bin": b"w"})
    repo.publish("models", "m1", {"w.bin": b"w2"}, draft=True)
    repo.publish("models", "only-draft", {"x": b"x"}, draft=True)
    ns = Namespace(repo, tmp_path)
    assert ns.listdir("/models") == ["m1"]
    assert ns.listdir("/models/m1") == ["v1", "latest"]
    assert ns.resolve("/models/m1/latest").target == "v1"


def test_new_versions_appear_after_ttl(repo, tmp_path):
    clock = Clock()
    ns = Namespace(repo, tmp_path, ttl=10, clock=clock)
    assert ns.listdir("/datasets/alpha")[-2] == "v2"
    repo.publish("datasets", "alpha", {"a.txt": b"three"})
    clock.now = 5
    assert "v3" not in ns.listdir("/datasets/alpha")
    clock.now = 11
    assert "v3" in ns.listdir("/datasets/alpha")
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
