"""One mount per cache dir (`eotdlfs.fs.mountlock`), and a cache dir where the lock cannot be had."""

from __future__ import annotations

import errno
import fcntl
import json
import os
from pathlib import Path

import pytest

from eotdlfs.fs import mountlock


def test_a_second_holder_is_refused_naming_the_first(tmp_path: Path) -> None:
    first = mountlock.hold_cache_dir(tmp_path, Path("/mnt/a"))
    try:
        with pytest.raises(OSError, match=f"in use by the eotdlfs mount on /mnt/a \\(process {os.getpid()}\\)"):
            mountlock.hold_cache_dir(tmp_path, Path("/mnt/b"))
    finally:
        os.close(first)


def test_a_file_system_without_locks_is_mounted_all_the_same(tmp_path: Path, monkeypatch, caplog) -> None:
    """Some NFS and Lustre setups answer flock with ENOLCK: the mount goes on, and says what it cannot promise."""
    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    fd = mountlock.hold_cache_dir(tmp_path, Path("/mnt/a"))
    try:
        assert json.loads(os.pread(fd, 4096, 0)) == {"pid": os.getpid(), "mountpoint": "/mnt/a"}
    finally:
        os.close(fd)
    assert "a second mount on this cache dir would not be kept off" in caplog.text
