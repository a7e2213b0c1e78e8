"""The cache dir's disk fails: reads and writes return EIO (`faultydisk`, a FUSE file system
that fails on demand, under the mount's --cache-dir).

Promises: a running mount keeps serving the right bytes, fetched from the server, while its
cache cannot be read or written, and says so in `status.json`, without tracebacks in its log;
a write into staging fails with EIO, never silently, and a flush that cannot read what was
staged fails and publishes nothing; once the disk answers again, the cache fills again and the
same flush publishes; and a mount started on such a disk is refused in one line that names the disk.
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from reliability.faultydisk import FAIL_ALL, FAIL_READS, HEALTHY
from reliability.ingestkit import make_folder, record
from tests.client.helpers import cli_env, run_cli
from tests.fs.datasets import ingest

TESTS_DIR = Path(__file__).resolve().parents[1]
UP_TIMEOUT_S = 20.0


@pytest.fixture
def faulty_disk(tmp_path: Path) -> Iterator[tuple[Path, Callable[[str], None]]]:
    """A folder on a disk that fails on demand, and the switch: set(mode) with a `faultydisk` mode.
    Asked for before `mount_factory`, so the mounts on it are stopped before it is."""
    yield from serve_faulty_disk(tmp_path)


def serve_faulty_disk(tmp_path: Path, subtype: str | None = None) -> Iterator[tuple[Path, Callable[[str], None]]]:
    """`faulty_disk`, its type in /proc/self/mountinfo `fuse.SUBTYPE` with a SUBTYPE."""
    from eotdlfs.fs.mount import fusermount, is_mounted, stop_process, wait_for_exit

    source, mountpoint, switch = tmp_path / "disk-source", tmp_path / "disk", tmp_path / "disk-switch"
    source.mkdir()
    mountpoint.mkdir()
    switch.write_text(HEALTHY)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")])))
    with open(tmp_path / "disk.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "reliability.faultydisk", str(source), str(mountpoint),
                                 str(switch), *([subtype] if subtype else [])],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
    try:
        deadline = time.monotonic() + UP_TIMEOUT_S
        while not is_mounted(mountpoint):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "disk.log").read_text()
            time.sleep(0.05)
        yield mountpoint, switch.write_text
    finally:
        switch.write_text(HEALTHY)  # so whatever still uses the disk can let go of it
        if is_mounted(mountpoint) and fusermount(mountpoint).returncode != 0:
            fusermount(mountpoint, lazy=True)
        if not wait_for_exit(proc.pid, 10):
            stop_process(proc.pid)


def sha1_of(path: Path) -> str:
    """PATH's SHA-1, read after its pages were dropped from the kernel's cache (the mount's memory
    may still serve them)."""
    with open(path, "rb") as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        return hashlib.sha1(f.read()).hexdigest()


def test_a_cache_disk_that_fails_costs_fetches_never_wrong_bytes(faulty_disk, module_server, mount_factory,
                                                                 unique_name, tmp_path: Path, tally) -> None:
    disk, switch = faulty_disk
    name = unique_name("faildisk")
    files = make_folder(tmp_path / "src" / name, name, small=12, large_bytes=3 << 20, seed=7)
    ingest(module_server, tmp_path / "src" / name)
    want = {path: hashlib.sha1(data).hexdigest() for path, data in files.items()}
    mount = mount_factory(module_server, cache_dir=disk / "cache")
    version = mount.path / "datasets" / name / "v1"
    first = sorted(want)[: len(want) // 2]
    assert {p: sha1_of(version / p) for p in first} == {p: want[p] for p in first}  # these are cached now

    switch(FAIL_ALL)
    tally.faults_injected += 1
    got = {p: sha1_of(version / p) for p in want}  # cached and not: the server's bytes either way
    lost = sum(len(files[p]) for p in want if got[p] != want[p])
    tally.bytes_lost += lost
    assert lost == 0, [p for p in want if got[p] != want[p]]
    cache = mount.status()["cache"]
    assert cache["write_errors"] > 0 and cache["last_error"], cache
    staged = mount.path / "staging" / "datasets" / name / "added.bin"
    with pytest.raises(OSError) as refused:
        staged.write_bytes(os.urandom(100_000))
    assert refused.value.errno == errno.EIO

    switch(HEALTHY)
    staged.write_bytes(b"written once the disk answers\n")
    assert staged.read_bytes() == b"written once the disk answers\n"
    log = mount.log.read_text()
    mount.remount()  # a fresh process, whose reads fill the cache again
    assert {p: sha1_of(version / p) for p in want} == want
    assert mount.status()["cache"]["write_errors"] == 0
    mount.remount()  # and one that reads them back from it
    assert {p: sha1_of(version / p) for p in want} == want
    cache = mount.status()["cache"]
    assert cache["hits"] >= len(want) and cache["misses"] == 0 and cache["write_errors"] == 0, cache
    assert "Traceback" not in log and "Exception ignored" not in log, log[-3000:]


def drop_pages(folder: Path) -> None:
    """Drop the kernel's cached pages of every file under FOLDER (written back first), so the next
    read of them asks the disk."""
    os.sync()
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as f:
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def test_a_flush_that_cannot_read_its_staged_files_publishes_nothing_until_it_can(
        faulty_disk, module_server, mount_factory, unique_name, tmp_path: Path, tally) -> None:
    disk, switch = faulty_disk
    name = unique_name("failflush")
    make_folder(tmp_path / "src" / name, name, small=3, seed=3)
    ingest(module_server, tmp_path / "src" / name)
    mount = mount_factory(module_server, cache_dir=disk / "cache")
    staged = mount.path / "staging" / "datasets" / name
    added = os.urandom(3 << 20)
    (staged / "added.bin").write_bytes(added)
    env = cli_env(tmp_path, module_server.url, module_server.token("alice"))

    switch(FAIL_READS)
    tally.faults_injected += 1
    drop_pages(disk / "cache")
    failed = run_cli(env, "flush", str(staged), "--timeout", "60")
    status = run_cli(env, "status", str(mount.path))
    switch(HEALTHY)
    assert failed.returncode != 0, failed.stdout
    said = failed.stderr.strip().splitlines()
    assert len(said) == 1 and ("Input/output error" in said[0] or "is its disk failing" in said[0]), failed.stderr
    assert [v["version_id"] for v in record(module_server.url, "datasets", name)["versions"]] == [1]
    assert status.returncode == 0, status.stderr
    assert "the staging journals cannot be read" in status.stdout, status.stdout

    flushed = run_cli(env, "flush", str(staged), "--timeout", "60")
    assert flushed.returncode == 0, flushed.stdout + flushed.stderr
    published = mount.path / "datasets" / name / "v2" / "added.bin"
    assert sha1_of(published) == hashlib.sha1(added).hexdigest()
    log = mount.log.read_text()
    assert "Traceback" not in log, log[-3000:]


@pytest.mark.parametrize("mode, says", [(FAIL_READS, "choose a --cache-dir on another disk"),
                                        (FAIL_ALL, "cannot write the mount's log")])
def test_a_mount_on_a_failing_cache_disk_is_refused_in_one_line(faulty_disk, module_server, mount_factory,
                                                                tmp_path: Path, mode: str, says: str) -> None:
    from eotdlfs.fs.mount import fusermount, is_mounted

    disk, switch = faulty_disk
    cache_dir = disk / "cache"
    argv = [sys.executable, "-m", "eotdlfs", "mount", str(tmp_path / "mnt"), "--api-url", module_server.url,
            "--cache-dir", str(cache_dir)]
    env = dict(os.environ, EOTDL_TOKEN=module_server.token("alice"), EOTDLFS_TIMEOUT="5")
    mount_factory(module_server, cache_dir=cache_dir).unmount()  # a cache made, with its index

    switch(mode)
    try:
        refused = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        mounted = is_mounted(tmp_path / "mnt")
    finally:
        switch(HEALTHY)
        if is_mounted(tmp_path / "mnt"):
            fusermount(tmp_path / "mnt")
    assert refused.returncode == 1 and not mounted
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], refused.stderr
