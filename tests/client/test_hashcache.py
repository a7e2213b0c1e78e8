"""The hash cache and the folder scan: an unchanged file is not read again; the scan's rules."""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest

from eotdlfs.client import hashcache
from eotdlfs.client.hashcache import HashCache, file_key
from eotdlfs.client.ingest.sources import RefusedSymlink, scan_folder
from client.helpers import OUTSIDE_LINKS, make_outside_link


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


@pytest.mark.parametrize("how", ["cp -p", "mv over it", "written in place"])
def test_other_bytes_of_the_same_size_behind_the_same_mtime_are_hashed_again(cache, reads, tmp_path, how):
    """`cp -p`, `touch -r`, `tar x` or a pipeline fixing its outputs' times: the size and mtime were the
    cache's whole key, so the old digest was taken, the ingest said "nothing changed" and the old
    bytes stayed published."""
    folder = tmp_path / "src"
    folder.mkdir()
    data = folder / "data.txt"
    data.write_bytes(b"AAAA-version-one")
    scan_folder(folder, cache)
    other = tmp_path / "other.txt"
    other.write_bytes(b"BBBB-version-two")
    st = data.stat()
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    if how == "cp -p":
        subprocess.run(["cp", "-p", str(other), str(data)], check=True)
    elif how == "mv over it":
        os.replace(other, data)
    else:
        data.write_bytes(b"BBBB-version-two")
        os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (data.stat().st_size, data.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    reads.clear()
    (found,) = scan_folder(folder, cache)
    assert reads == [str(data)] and found.checksum == hashlib.sha1(b"BBBB-version-two").hexdigest()


def test_scan_includes_hidden_files_and_follows_links_that_stay_inside_as_cp_rL_would(cache, tmp_path):
    folder = tmp_path / "src"
    (folder / "sub").mkdir(parents=True)
    (folder / ".hidden").write_text("h")
    (folder / "data.txt").write_text("d")
    (folder / "sub" / "f.txt").write_text("f")
    (folder / "alias.txt").symlink_to("data.txt")
    (folder / "sub" / "up.txt").symlink_to("../data.txt")
    (folder / "subalias").symlink_to(folder / "sub")  # absolute, but inside
    (folder / "chain.txt").symlink_to("alias.txt")
    sources = {s.path: s for s in scan_folder(folder, cache)}
    assert set(sources) == {".hidden", "data.txt", "alias.txt", "chain.txt", "sub/f.txt", "sub/up.txt",
                            "subalias/f.txt", "subalias/up.txt"}
    d = hashlib.sha1(b"d").hexdigest()
    assert {sources[p].checksum for p in ("data.txt", "alias.txt", "chain.txt", "sub/up.txt", "subalias/up.txt")} == {d}
    assert sources["subalias/f.txt"].checksum == hashlib.sha1(b"f").hexdigest()
    # the engine gets the file a link leads to, never the link
    assert sources["alias.txt"].local_path == sources["sub/up.txt"].local_path == folder / "data.txt"
    assert not any(s.local_path.is_symlink() for s in sources.values())


@pytest.mark.parametrize("case", OUTSIDE_LINKS)
def test_a_link_leading_out_of_the_folder_is_refused_naming_it_and_its_target(cache, tmp_path, case):
    folder, name, target = make_outside_link(tmp_path, case)
    with pytest.raises(RefusedSymlink, match="leads outside") as refused:
        scan_folder(folder, cache)
    message = str(refused.value)
    if case == "chain":  # whichever of the two links is met first: both resolve to the secret
        assert f"resolves to {tmp_path / 'secret.txt'}," in message
    else:
        assert message.startswith(f"{folder / name}: symlink to {target}")
    assert f"leads outside {folder};" in message


def test_a_dangling_link_is_an_error_naming_it(cache, tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "dead").symlink_to(tmp_path / "nowhere")
    with pytest.raises(OSError, match=f"dead: dangling symlink \\(to {tmp_path}/nowhere"):
        scan_folder(folder, cache)


@pytest.mark.parametrize("links", [
    {"self": "self"},
    {"a": "b", "b": "a"},
    {"sub/up": ".."},
    {"top": "."},
    {"one/to_two": "../two", "two/to_one": "../one"},
])
def test_a_link_loop_is_an_error_naming_it(cache, tmp_path, links):
    folder = tmp_path / "src"
    for d in ("sub", "one", "two"):
        (folder / d).mkdir(parents=True)
    for link, target in links.items():
        (folder / link).symlink_to(target)
    with pytest.raises(RefusedSymlink, match="loop"):
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
    keys = [file_key(str(p), p.stat()) for p in (inside, outside)]
    cache.digests(keys)
    assert set(cache.lookup(keys)) == set(keys)
    assert set(cache.lookup(keys, under=str(tmp_path / "dir"))) == {keys[0]}
