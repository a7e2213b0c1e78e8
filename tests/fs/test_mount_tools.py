"""Ordinary tools on a real mount of a real server: ls, cp, sha1sum, rsync, Python reads."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import subprocess
import time

import pytest

from tests.fs.datasets import ingest, ingest_one_file, make_folder, tree_digest, write_metadata


@pytest.fixture
def published(repo_server, unique_name, tmp_path):
    """A dataset with two versions (v2 changes one file, removes one, adds one)."""
    name = unique_name("tools")
    v1 = make_folder(tmp_path / "v1", name, seed=1)
    ingest(repo_server, v1)
    v2 = tmp_path / "v2"
    shutil.copytree(v1, v2)
    (v2 / "labels.csv").write_text("id,label\n1,c\n")
    (v2 / "images" / "tile_0.bin").unlink()
    (v2 / "new.txt").write_text("new in v2\n")
    ingest(repo_server, v2)
    return name, {1: v1, 2: v2}


def test_cp_r_of_every_version_is_byte_identical(repo_server, mount_factory, published, tmp_path):
    name, sources = published
    mnt = mount_factory(repo_server)
    for number, source in sources.items():
        out = tmp_path / f"out{number}"
        subprocess.run(["cp", "-r", str(mnt.path / "datasets" / name / f"v{number}"), str(out)], check=True)
        assert tree_digest(out) == tree_digest(source)


def test_ls_sha1sum_rsync_and_latest(repo_server, mount_factory, published, tmp_path):
    name, sources = published
    mnt = mount_factory(repo_server)
    record = mnt.path / "datasets" / name
    listing = subprocess.run(["ls", "-R", str(record)], check=True, capture_output=True, text=True).stdout
    assert "big.bin" in listing and "name with spaces.txt" in listing and "latest" in listing
    assert os.readlink(record / "latest") == "v2"
    assert sorted(os.listdir(record)) == ["latest", "v1", "v2"]
    out = subprocess.run(["sha1sum", str(record / "latest" / "images" / "2023" / "big.bin")],
                         check=True, capture_output=True, text=True).stdout.split()[0]
    assert out == hashlib.sha1((sources[2] / "images" / "2023" / "big.bin").read_bytes()).hexdigest()
    subprocess.run(["rsync", "-a", f"{record / 'v1'}/", str(tmp_path / "rsynced")], check=True)
    assert tree_digest(tmp_path / "rsynced") == tree_digest(sources[1])
    st = os.stat(record / "v1" / "images" / "2023" / "big.bin")
    assert st.st_size == 3 * 1024 * 1024 + 17
    assert abs(st.st_mtime - time.time()) < 3600  # the version's date, just made
    assert not os.path.exists(record / "v2" / "images" / "tile_0.bin")


def test_python_seek_and_read(repo_server, mount_factory, published):
    name, sources = published
    mnt = mount_factory(repo_server)
    expected = (sources[1] / "images" / "2023" / "big.bin").read_bytes()
    rng = random.Random(3)
    with open(mnt.path / "datasets" / name / "v1" / "images" / "2023" / "big.bin", "rb") as f:
        for _ in range(50):
            offset, size = rng.randrange(len(expected)), rng.randrange(1, 300_000)
            f.seek(offset)
            assert f.read(size) == expected[offset:offset + size]
        f.seek(len(expected) - 10)
        assert f.read(100) == expected[-10:]
        assert f.read(10) == b""


def test_xattrs(repo_server, mount_factory, published):
    name, sources = published
    mnt = mount_factory(repo_server)
    path = mnt.path / "datasets" / name / "v2" / "labels.csv"
    assert os.getxattr(path, "user.eotdl.checksum").decode() == \
        hashlib.sha1((sources[2] / "labels.csv").read_bytes()).hexdigest()
    assert os.getxattr(path, "user.eotdl.version") == b"2"
    assert os.getxattr(path, "user.eotdl.file_version") == b"2"
    assert os.getxattr(mnt.path / "datasets" / name / "v2" / "new.txt", "user.eotdl.file_version") == b"1"
    assert set(os.listxattr(path)) == {"user.eotdl.checksum", "user.eotdl.version", "user.eotdl.file_version"}
    with pytest.raises(OSError) as info:
        os.getxattr(path, "user.other")
    assert info.value.errno == errno.ENODATA
    for name in ("system.posix_acl_access", "security.selinux"):  # so `ls -l` stops asking
        with pytest.raises(OSError) as info:
            os.getxattr(path, name)
        assert info.value.errno == errno.EOPNOTSUPP


def test_writes_are_read_only(repo_server, mount_factory, published):
    name, _ = published
    mnt = mount_factory(repo_server)
    version = mnt.path / "datasets" / name / "v1"
    attempts = [
        lambda: open(version / "labels.csv", "r+b"),
        lambda: open(version / "new-file", "wb"),
        lambda: os.mkdir(version / "newdir"),
        lambda: os.unlink(version / "labels.csv"),
        lambda: os.rename(version / "labels.csv", version / "x.csv"),
        lambda: os.truncate(version / "labels.csv", 0),
        lambda: os.chmod(version / "labels.csv", 0o777),
        lambda: os.mkdir(mnt.path / "datasets" / "brand-new"),
        lambda: os.setxattr(version / "labels.csv", "user.x", b"1"),
    ]
    for attempt in attempts:
        with pytest.raises(OSError) as info:
            attempt()
        assert info.value.errno == errno.EROFS, attempt


def test_new_version_appears_after_ttl(repo_server, mount_factory, published, tmp_path):
    name, sources = published
    mnt = mount_factory(repo_server, ttl=1.0)
    record = mnt.path / "datasets" / name
    assert os.readlink(record / "latest") == "v2"
    v3 = tmp_path / "v3"
    shutil.copytree(sources[2], v3)
    (v3 / "third.txt").write_text("3\n")
    ingest(repo_server, v3)
    deadline = time.monotonic() + 15
    while "v3" not in os.listdir(record) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "v3" in os.listdir(record)
    assert os.readlink(record / "latest") == "v3"
    assert (record / "v3" / "third.txt").read_text() == "3\n"


def test_a_record_or_version_published_elsewhere_is_found_at_the_first_look_past_the_ttl(
        repo_server, mount_factory, unique_name, tmp_path):
    """A name not in the listing in hand was answered from it past the TTL: after an `eotdlfs ingest`
    elsewhere, `ls MNT/datasets/NEW/v1` was ENOENT once (11 s later too), and the next look found it."""
    mnt = mount_factory(repo_server, ttl=1.0)
    name, folder = unique_name("elsewhere"), tmp_path / "src"
    assert name not in os.listdir(mnt.path / "datasets")  # a listing in hand
    ingest_one_file(repo_server, folder, name, "a.bin", 1000)
    time.sleep(1.5)
    assert sorted(os.listdir(mnt.path / "datasets" / name / "v1")) == ["a.bin", "metadata.yml"]
    (folder / "b.bin").write_bytes(b"b")
    ingest(repo_server, folder)
    time.sleep(1.5)
    assert sorted(os.listdir(mnt.path / "datasets" / name / "v2")) == ["a.bin", "b.bin", "metadata.yml"]


def test_models_are_mounted_like_datasets(repo_server, mount_factory, unique_name, tmp_path):
    name, folder = unique_name("model"), tmp_path / "model"
    ingest_one_file(repo_server, folder, name, "weights.bin", 1_500_000, kind="models")
    mnt = mount_factory(repo_server)
    record = mnt.path / "models" / name
    assert os.readlink(record / "latest") == "v1"
    assert tree_digest(record / "v1") == tree_digest(folder)
    assert name not in os.listdir(mnt.path / "datasets")


def test_concurrent_readers_of_a_cold_file_fetch_it_once(repo_server, mount_factory, unique_name, tmp_path):
    import threading

    name = unique_name("conc")
    data = ingest_one_file(repo_server, tmp_path / "src", name, "big.bin", 12 * 1024 * 1024 + 5)
    mnt = mount_factory(repo_server)
    path = mnt.path / "datasets" / name / "v1" / "big.bin"
    before = repo_server.stats()["bytes_sent"]
    os.stat(path)  # (fetches the first block: the kernel reads a file right after looking it up)
    digests = []

    def read():
        digests.append(hashlib.sha1(path.read_bytes()).hexdigest())

    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert digests == [hashlib.sha1(data).hexdigest()] * 8
    assert repo_server.stats()["bytes_sent"] - before == len(data)


def test_inode_numbers_of_a_version_stay_the_same_across_a_remount(repo_server, mount_factory, published):
    """Inode numbers were libfuse's node ids, given in lookup order: after a remount tools keyed on inodes
    (borg's files cache, tar --listed-incremental) took every file for a new one and read it again."""
    name, _ = published
    mnt = mount_factory(repo_server)
    files = [mnt.path / "datasets" / name / "v1" / rel for rel in ("labels.csv", "empty.txt", "images/tile_1.bin")]
    before = {path: os.stat(path).st_ino for path in files}
    mnt.remount()
    after = {path: os.stat(path).st_ino for path in reversed(files)}  # looked up in another order
    assert after == before
    listed = {entry.name: entry.inode() for entry in os.scandir(files[0].parent)}  # as `ls -i` shows them
    assert listed["labels.csv"] == before[files[0]] and len(set(listed.values())) == len(listed)


def test_cp_r_of_many_small_files_is_served_by_few_requests(repo_server, mount_factory, unique_name, tmp_path):
    """A walker (cp -r, rsync, tar) over small files: after its first few opens the rest of the version
    comes many files per request, each checked, not one round trip per file on the walker's path."""
    name = unique_name("chips")
    source = tmp_path / "src"
    write_metadata(source, name)
    rng = random.Random(7)
    for folder in ("a", "a-b", "b"):
        (source / folder).mkdir()
        for i in range(100):
            (source / folder / f"chip-{i:03d}.bin").write_bytes(rng.randbytes(rng.randrange(1, 4096)))
    ingest(repo_server, source)
    mnt = mount_factory(repo_server)
    before = repo_server.stats()["downloads"]
    subprocess.run(["cp", "-r", str(mnt.path / "datasets" / name / "v1"), str(tmp_path / "out")], check=True,
                   timeout=120)
    assert tree_digest(tmp_path / "out") == tree_digest(source)
    assert repo_server.stats()["downloads"] - before < 20  # of 301 files
    assert mnt.status()["prefetched_files"] >= 270
