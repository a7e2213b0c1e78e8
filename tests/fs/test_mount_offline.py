"""Server down: cached files still read, uncached ones fail fast with EIO; back up: reads work, no remount."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time

from tests.fs.datasets import ingest, make_folder

EIO_WITHIN_S = 15.0  # the client's timeout in the mount fixture is 5 s, plus its retries


def read_timed(path):
    started = time.monotonic()
    try:
        return path.read_bytes(), None, time.monotonic() - started
    except OSError as exc:
        return None, exc, time.monotonic() - started


def test_offline_reads_and_recovery(fresh_server, mount_factory, unique_name, tmp_path):
    name = unique_name("off")
    source = make_folder(tmp_path / "src", name)
    ingest(fresh_server, source)
    mnt = mount_factory(fresh_server)
    version = mnt.path / "datasets" / name / "v1"
    cached, uncached = "labels.csv", "images/2023/big.bin"
    assert (version / cached).read_bytes() == (source / cached).read_bytes()
    assert "tile_1.bin" in os.listdir(version / "images")  # listed (a first open alone looks one path up)
    assert (version / "images" / "tile_1.bin").stat().st_size > 0  # listing known, bytes not fetched

    fresh_server.stop()
    assert (version / cached).read_bytes() == (source / cached).read_bytes()
    data, error, took = read_timed(version / uncached)
    assert data is None and error.errno == errno.EIO and took < EIO_WITHIN_S
    assert mnt.status()["fetch"]["fetch_errors"] >= 1

    mnt.remount()  # a fresh mount process while the server is still down: the disk cache serves
    assert (version / cached).read_bytes() == (source / cached).read_bytes()
    data, error, took = read_timed(version / "images" / "tile_1.bin")
    assert data is None and error.errno == errno.EIO and took < EIO_WITHIN_S

    fresh_server.start()
    assert (version / uncached).read_bytes() == (source / uncached).read_bytes()
    assert (version / "images" / "tile_1.bin").read_bytes() == (source / "images" / "tile_1.bin").read_bytes()


def test_a_read_the_server_is_down_for_is_named_in_the_log_and_the_status(fresh_server, mount_factory,
                                                                          unique_name, tmp_path):
    """`cat` can only print "Input/output error"; the mount log and `eotdlfs status` say which file
    could not be read and which URL did not answer (before: the log named neither the mount path
    nor the record, the status said "reachable: yes" and a bare `Unreachable: ...`)."""
    name = unique_name("down")
    ingest(fresh_server, make_folder(tmp_path / "src", name))
    mnt = mount_factory(fresh_server)
    version = mnt.path / "datasets" / name / "v1"
    assert (version / "images" / "2023" / "big.bin").stat().st_size > 0  # listed, bytes not fetched

    fresh_server.stop()
    data, error, _ = read_timed(version / "images" / "2023" / "big.bin")
    assert data is None and error.errno == errno.EIO
    failed = f"/datasets/{name}/v1/images/2023/big.bin: cannot reach the repository at {fresh_server.url}"
    assert failed in mnt.log.read_text()
    shown = subprocess.run([sys.executable, "-m", "eotdlfs", "status", str(mnt.path)], capture_output=True,
                           text=True, timeout=60).stdout
    assert f"{fresh_server.url} reachable: NO" in shown, shown
    assert f"last failure {failed}" in shown and "(EIO, " in shown, shown
