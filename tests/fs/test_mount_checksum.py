"""Bytes that arrive wrong are caught by the end-to-end SHA-1: EIO, nothing bad kept, fine on retry."""

from __future__ import annotations

import errno
import os
from types import SimpleNamespace

import pytest

from tests.fs.datasets import ingest_one_file
from tests.reliability.faultproxy import FaultProxy


def test_a_corrupted_download_is_eio_and_not_cached(repo_server, mount_factory, unique_name, tmp_path):
    name = unique_name("sha")
    data = ingest_one_file(repo_server, tmp_path / "src", name, "data.bin", 5 * 1024 * 1024 + 3)
    with FaultProxy(repo_server.url) as proxy:
        mnt = mount_factory(SimpleNamespace(url=proxy.url, token=repo_server.token))
        path = mnt.path / "datasets" / name / "v1" / "data.bin"
        os.stat(path)
        proxy.inject("corrupt", r"/download/", count=1, at=1000)  # the first range fetched: block 0
        with pytest.raises(OSError) as info:
            path.read_bytes()
        assert info.value.errno == errno.EIO
        assert proxy.total_injected() == 1
        assert path.read_bytes() == data  # a new open fetches again: the bad blocks were dropped
        mnt.remount()  # and nothing bad is in the disk cache either
        assert path.read_bytes() == data
