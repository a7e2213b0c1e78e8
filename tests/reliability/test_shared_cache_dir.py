"""A cache dir on a file system other machines share (a cluster's NFS home, where the default
cache dir lands): SQLite's write-ahead log there must not be used from two machines at once, so
the mount and `eotdl://` say so, naming the file system and what to do, and work all the same.

The shared disk is `faultydisk` mounted as `fuse.sshfs` (no NFS server here): what the check
reads, /proc/self/mountinfo, names it as it would name sshfs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

from eotdlfs.app.fsspec_eotdl import EotdlFileSystem
from eotdlfs.cachedir import filesystem_type, shared_cache_warning
from reliability.test_failing_disk import serve_faulty_disk
from tests.fs.datasets import ingest_one_file


@pytest.fixture
def sshfs_disk(tmp_path: Path) -> Iterator[tuple[Path, Callable[[str], None]]]:
    yield from serve_faulty_disk(tmp_path, subtype="sshfs")


def test_a_mount_with_its_cache_dir_on_a_shared_disk_warns_and_works(sshfs_disk, module_server,
                                                                      tmp_path: Path) -> None:
    from eotdlfs.fs.mount import fusermount, is_mounted

    disk, _ = sshfs_disk
    cache_dir = disk / "home" / ".cache" / "eotdlfs"  # not made yet: the check looks at its nearest parent
    assert filesystem_type(cache_dir) == "fuse.sshfs"
    mnt = tmp_path / "mnt"
    env = dict(os.environ, EOTDL_TOKEN=module_server.token("alice"), EOTDLFS_TIMEOUT="5")
    try:
        mounted = subprocess.run([sys.executable, "-m", "eotdlfs", "mount", str(mnt), "--api-url", module_server.url,
                                  "--cache-dir", str(cache_dir)], env=env, capture_output=True, text=True, timeout=60)
        assert mounted.returncode == 0, mounted.stderr
        assert "datasets" in os.listdir(mnt)
    finally:
        if is_mounted(mnt):  # and its process gone, so the disk under its cache can go
            stopped = subprocess.run([sys.executable, "-m", "eotdlfs", "umount", str(mnt)], timeout=60)
            if stopped.returncode != 0:
                fusermount(mnt, lazy=True)
    warning = f"warning: the cache dir {cache_dir} is on fuse.sshfs, which other machines may share"
    assert warning in mounted.stderr and "give each node a local one" in mounted.stderr, mounted.stderr
    assert "is on fuse.sshfs" in (cache_dir / "mount.log").read_text()


def test_eotdl_with_its_cache_dir_on_a_shared_disk_warns_and_reads(sshfs_disk, module_server, unique_name,
                                                                   tmp_path: Path, caplog) -> None:
    disk, _ = sshfs_disk
    name = unique_name("shared")
    data = ingest_one_file(module_server, tmp_path / "src", name, "x.bin", 100_000)
    fs = EotdlFileSystem(api_url=module_server.url, token=module_server.token("alice"),
                         cache_dir=str(disk / "cache"), skip_instance_cache=True)
    try:
        with caplog.at_level("WARNING", logger="eotdlfs"):
            assert fs.cat_file(f"datasets/{name}/v1/x.bin") == data
    finally:
        fs.connection.close()
    assert any("is on fuse.sshfs, which other machines may share" in r.getMessage() for r in caplog.records), \
        caplog.text


def test_only_file_systems_other_machines_share_are_named(tmp_path: Path) -> None:
    dev = os.stat(tmp_path).st_dev
    mountinfo = tmp_path / "mountinfo"
    for kind, warned in (("nfs4", True), ("lustre", True), ("fuse.gcsfuse", True), ("ext4", False),
                         ("tmpfs", False), ("fuse", False)):
        home = f"90 27 {os.major(dev)}:{os.minor(dev)} / /home rw,relatime shared:1 - {kind} srv:/home rw\n"
        mountinfo.write_text("22 27 0:21 / /proc rw - proc proc rw\n" + home)
        assert filesystem_type(tmp_path / "not-yet" / "made", str(mountinfo)) == kind
        assert (shared_cache_warning(tmp_path, str(mountinfo)) is not None) == warned, kind
    mountinfo.write_text("22 27 0:21 / /proc rw - proc proc rw\n")
    assert filesystem_type(tmp_path, str(mountinfo)) is None and shared_cache_warning(tmp_path, str(mountinfo)) is None
