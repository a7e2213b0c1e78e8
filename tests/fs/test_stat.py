"""File attributes: the shim's direct `struct stat` fill for listed files matches the generic path."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from eotdlfs.fs.fuse_binding import c_stat, set_st_attrs

from eotdlfs.fs.context import MountOptions, build_context
from eotdlfs.fs.fuse_ops import EotdlfsOperations
from tests.fs.datasets import file_times, ingest, write_metadata
from tests.fs.fakes import MemoryRepository

FILE_TIME = 1_700_000_000
SIZES = {"empty.txt": 0, "one.bin": 1, "block.bin": 512, "over.bin": 513, "sub/deep/big.bin": 3 * 1024 * 1024 + 17}


@pytest.fixture
def operations(tmp_path):
    repo = MemoryRepository()
    repo.publish("datasets", "alpha", {path: b"x" * size for path, size in SIZES.items()},
                 file_times={path: FILE_TIME + n + 0.123456 for n, path in enumerate(SIZES)})
    repo.publish("datasets", "alpha", {"later.txt": b"v2"})
    context = build_context(repo, MountOptions(cache_dir=tmp_path / "cache"))
    try:
        yield EotdlfsOperations(context, str(tmp_path / "mnt"))
    finally:
        context.close()


def test_listed_files_are_filled_as_the_generic_path_fills_them(operations):
    operations.readdir("/datasets/alpha/v1", None)  # the kernel looks up the folder first
    for path, size in SIZES.items():
        full = f"/datasets/alpha/v1/{path}"
        direct, generic = c_stat(), c_stat()
        assert operations.fill_listed_stat(full, direct)
        set_st_attrs(generic, operations.getattr(full), use_ns=operations.use_ns)
        assert bytes(direct) == bytes(generic), path
        assert (direct.st_size, direct.st_blocks) == (size, -(-size // 512))
        assert direct.st_mtimespec.tv_sec == FILE_TIME + list(SIZES).index(path)  # each file its own time


def test_anything_else_is_left_to_the_generic_path(operations):
    operations.readdir("/datasets/alpha/v1", None)
    for path in ("/", "/datasets", "/datasets/alpha", "/datasets/alpha/v1", "/datasets/alpha/v1/sub",
                 "/datasets/alpha/v1/missing.txt", "/datasets/alpha/latest/one.bin",
                 "/datasets/alpha/v2/later.txt",  # its folder not looked up yet
                 "/staging/datasets/alpha/v1/one.bin", "/.eotdlfs/status.json"):
        assert not operations.fill_listed_stat(path, c_stat()), path


def test_stat_on_a_mount_reports_true_attributes(repo_server, mount_factory, unique_name, tmp_path):
    name = unique_name("stat")
    source = tmp_path / "src"
    write_metadata(source, name)
    for path, size in SIZES.items():
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        (source / path).write_bytes(os.urandom(size))
    ingest(repo_server, source)
    version = mount_factory(repo_server).path / "datasets" / name / "v1"
    folder = os.stat(version)  # a folder's attributes come the generic way, with the version's date
    made = file_times(repo_server, name, 1)  # a file's: when its file version was made (after its version)
    for path, size in SIZES.items():
        st = os.stat(version / path)
        assert (st.st_size, st.st_blocks, st.st_nlink) == (size, -(-size // 512), 1), path
        assert st.st_mode == stat.S_IFREG | 0o444
        assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
        assert st.st_mtime_ns == st.st_ctime_ns == st.st_atime_ns == int(made[path] * 1e9) >= folder.st_mtime_ns
        assert st.st_blksize == folder.st_blksize
    assert sorted(p.name for p in Path(version).iterdir()) == ["block.bin", "empty.txt", "metadata.yml",
                                                               "one.bin", "over.bin", "sub"]


def test_a_file_carried_into_the_next_version_keeps_its_mtime(repo_server, mount_factory, unique_name, tmp_path):
    name = unique_name("times")
    source = tmp_path / "src"
    write_metadata(source, name)
    (source / "kept.bin").write_bytes(b"k" * 1000)
    (source / "changed.bin").write_bytes(b"1" * 1000)
    ingest(repo_server, source)
    (source / "changed.bin").write_bytes(b"2" * 1000)
    (source / "added.bin").write_bytes(b"a")
    ingest(repo_server, source)
    record = mount_factory(repo_server).path / "datasets" / name
    v1 = {p.name: p.stat().st_mtime_ns for p in (record / "v1").iterdir()}
    v2 = {p.name: p.stat().st_mtime_ns for p in (record / "v2").iterdir()}
    assert v2["kept.bin"] == v1["kept.bin"] and v2["metadata.yml"] == v1["metadata.yml"]
    assert v2["changed.bin"] > v1["changed.bin"]
    assert v2["added.bin"] > v1["kept.bin"]
    assert {n: int(t * 1e9) for n, t in file_times(repo_server, name, 2).items()} == v2
