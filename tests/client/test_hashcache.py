"""The hash cache and the folder scan: an unchanged file is not read again; the scan's rules."""

from __future__ import annotations

import hashlib
import os

import pytest

from eotdlfs.client import hashcache
from eotdlfs.client.hashcache import HashCache
from eotdlfs.client.ingest.sources import scan_folder


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EOTDLFS_CACHE_DIR", str(tmp_path / "cache"))
    c = HashCache()
    yield c
    c.close()


@pytest.fixture
def reads(monkeypatch):
    """The paths sha1_file reads."""
    seen: list[str] = []
    real = hashcache.sha1_file

    def counting(path):
        seen.append(str(path))
        return real(path)

    monkeypatch.setattr(hashcache, "sha1_file", counting)
    return seen


def test_the_cache_lives_in_the_overridden_dir(cache, tmp_path):
    assert cache.path == tmp_path / "cache" / "hashes.sqlite"


def test_rescanning_reads_only_the_changed_file(cache, reads, tmp_path):
    folder = tmp_path / "src"
    (folder / "sub").mkdir(parents=True)
    for i in range(20):
        (folder / "sub" / f"{i}.txt").write_text(str(i))
    first = scan_folder(folder, cache)
    assert len(reads) == 20
    reads.clear()
    changed = folder / "sub" / "7.txt"
    changed.write_text("seven, changed")
    os.utime(changed, ns=(1, 1))  # a different mtime_ns even on coarse clocks
    second = scan_folder(folder, cache)
    assert reads == [str(changed)]
    by_path = {s.path: s for s in second}
    assert by_path["sub/7.txt"].checksum == hashlib.sha1(b"seven, changed").hexdigest()
    assert [s.path for s in first] == [s.path for s in second]


def test_scan_includes_hidden_files_follows_file_links_and_not_dir_links(cache, tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / ".hidden").write_text("h")
    (tmp_path / "outside.txt").write_text("o")
    (folder / "link.txt").symlink_to(tmp_path / "outside.txt")
    (folder / "loop").symlink_to(folder)
    sources = {s.path: s for s in scan_folder(folder, cache)}
    assert set(sources) == {".hidden", "link.txt"}
    assert sources["link.txt"].checksum == hashlib.sha1(b"o").hexdigest()
    assert sources["link.txt"].size == 1


def test_a_dangling_link_is_an_error_naming_it(cache, tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "dead").symlink_to(tmp_path / "nowhere")
    with pytest.raises(OSError, match="dead: dangling symlink"):
        scan_folder(folder, cache)


def test_an_unwritable_cache_only_costs_rehashing(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("EOTDLFS_CACHE_DIR", str(blocker / "sub"))  # cannot be a directory
    c = HashCache()
    key = (str(blocker), 1, blocker.stat().st_mtime_ns)
    assert c.digests([key]) == {key: hashlib.sha1(b"x").hexdigest()}


def test_lookup_by_keys_and_by_folder_agree(cache, tmp_path):
    inside, outside = tmp_path / "dir" / "a", tmp_path / "dir0"  # 'dir0' sorts right after 'dir/'
    inside.parent.mkdir()
    inside.write_text("a")
    outside.write_text("b")
    keys = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in (inside, outside)]
    cache.digests(keys)
    assert set(cache.lookup(keys)) == set(keys)
    assert set(cache.lookup(keys, under=str(tmp_path / "dir"))) == {keys[0]}
