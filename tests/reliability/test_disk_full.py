"""The disk fills up: under the server's repository, and under the mount's block cache.

A tmpfs of a few MiB (root only; skipped otherwise) plays the full disk. Promises: what
was published before stays whole and readable, the failed write is reported as an
error, the repository passes fsck, and the system keeps working once the write fits.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

from reliability.conftest import assert_fsck_ok
from reliability.ingestkit import MiB, bytes_lost, ingest_env, make_folder, record, run_ingest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")


@contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of SIZE mounted on PATH for the duration of the block."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture()
def full_disk_server(server_class: type, tmp_path: Path) -> Iterator[Any]:
    with small_disk(tmp_path / "disk", "24m") as disk:
        server = server_class(disk / "root")
        try:
            server.start()
            yield server
        finally:
            server.stop()


def test_server_disk_full_fails_the_ingest_and_keeps_what_was_published(full_disk_server, tmp_path: Path,
                                                                         tally) -> None:
    server, token = full_disk_server, full_disk_server.token("alice")
    v1 = make_folder(tmp_path / "v1" / "disk-full", "disk-full", small=10, seed=1)
    assert run_ingest(tmp_path / "v1" / "disk-full", server.url, token, tmp_path / "cache").returncode == 0

    big = make_folder(tmp_path / "v2" / "disk-full", "disk-full", small=10, large_bytes=40 * MiB, seed=2)
    failed = run_ingest(tmp_path / "v2" / "disk-full", server.url, token, tmp_path / "cache")
    # Today the server answers the ENOSPC with a bare 500 ("error: Internal Server Error"); 507 with a
    # detail naming the full disk would say more, but the promise checked here is that nothing breaks.
    assert failed.returncode != 0 and failed.stderr.strip()
    rec = record(server.url, "datasets", "disk-full")
    assert [v["version_id"] for v in rec["versions"]] == [1]
    lost = bytes_lost(server.url, "datasets", rec["id"], 1, v1)
    tally.bytes_lost += lost
    assert lost == 0
    assert_fsck_ok(server.root)

    del big["big/scene.tif"]
    (tmp_path / "v2" / "disk-full" / "big" / "scene.tif").unlink()
    fits = run_ingest(tmp_path / "v2" / "disk-full", server.url, token, tmp_path / "cache")
    assert fits.returncode == 0, fits.stderr
    rec = record(server.url, "datasets", "disk-full")
    assert [v["version_id"] for v in rec["versions"]] == [1, 2]
    assert bytes_lost(server.url, "datasets", rec["id"], 2, big) == 0
    assert_fsck_ok(server.root)


def test_mount_cache_disk_full_reads_stay_exact_and_staging_still_works(module_server, mount_factory,
                                                                       tmp_path: Path, tally) -> None:
    folder = tmp_path / "src" / "cache-full"
    files = make_folder(folder, "cache-full", small=5, large_bytes=48 * MiB, seed=3)
    assert run_ingest(folder, module_server.url, module_server.token("alice"), tmp_path / "hc").returncode == 0
    with small_disk(tmp_path / "cache-disk", "40m") as disk:  # blocks and staging share it, as by default
        mount = mount_factory(module_server, cache_dir=disk)  # its log goes beside the disk, not on it
        try:
            version = mount.path / "datasets" / "cache-full" / "v1"
            for _ in range(2):  # more than the disk holds: the second time, the cache is as full as it gets
                for path, data in files.items():
                    try:
                        got = (version / path).read_bytes()
                    except OSError as exc:
                        pytest.fail(f"{path}: {exc} (a full cache disk should cost speed, not reads)")
                    if hashlib.sha1(got).digest() != hashlib.sha1(data).digest():
                        tally.bytes_lost += len(data)
                        pytest.fail(f"{path}: wrong bytes with the cache disk full")
            staged = mount.path / "staging" / "datasets" / "cache-full"
            for command in (f"echo note > {staged}/note.txt", f"mkdir {staged}/notes",
                            f"mv {staged}/note.txt {staged}/notes/note.txt", f"rm {staged}/tiles/t000.bin"):
                done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)
                assert done.returncode == 0, f"{command}: {done.stderr}"
            assert (staged / "notes" / "note.txt").read_text() == "note\n"
            assert not (staged / "tiles" / "t000.bin").exists()
            st = os.statvfs(disk)
            assert st.f_bavail * st.f_frsize >= 8 * MiB, "the block cache took the reserve"

            with pytest.raises(OSError) as info:  # staging fills the disk itself: ENOSPC, nothing lost
                with open(staged / "huge.bin", "wb") as f:
                    for _ in range(64):
                        f.write(os.urandom(MiB))
            assert info.value.errno == errno.ENOSPC
            assert (version / "big" / "scene.tif").read_bytes() == files["big/scene.tif"]  # the cache gives way
            for command in (f"mkdir {staged}/more", f"mv {staged}/notes/note.txt {staged}/more/note.txt",
                            f"rm {staged}/huge.bin", f"echo again > {staged}/more/again.txt"):
                done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)
                assert done.returncode == 0, f"{command}: {done.stderr}"
            assert (staged / "more" / "note.txt").read_text() == "note\n"
        finally:
            mount.unmount()  # before the disk under its cache goes


def test_a_cache_on_a_full_disk_is_kept_and_refused_in_one_line(tmp_path: Path) -> None:
    """A full disk is not a damaged index: the cache is neither set aside (the copy would only
    take more room) nor rebuilt, and opening it says what is wrong (the mount prints it)."""
    from eotdlfs.fs.block_cache import BlockCache

    with small_disk(tmp_path / "disk", "32m") as disk:  # room for the cache's own reserve (16 MiB)
        cache = BlockCache(disk / "blocks", 1 << 30, 64 << 10)
        assert cache.put("sum", 0, os.urandom(64 << 10))
        cache.close()
        with open(disk / "filler", "wb") as f:  # fill what is left
            try:
                while True:
                    f.write(b"\0" * (64 << 10))
            except OSError:
                pass
        (disk / "blocks" / "cache.db-wal").unlink(missing_ok=True)
        with pytest.raises(OSError, match="its disk is full: free some room"):
            BlockCache(disk / "blocks", 1 << 30, 64 << 10)
        assert sorted(p.name for p in disk.iterdir()) == ["blocks", "filler"]
        (disk / "filler").unlink()
        again = BlockCache(disk / "blocks", 1 << 30, 64 << 10)
        assert again.load_block("sum", 0) is not None
        again.close()


def test_a_background_mount_on_a_full_cache_disk_says_so(module_server, tmp_path: Path) -> None:
    """The mount process writes its report where its log is, in the cache dir: on a full disk it
    could write nothing, and `eotdlfs mount` said only 'exited (1); last log lines:' and none."""
    mnt = tmp_path / "mnt"
    with small_disk(tmp_path / "disk", "600k") as disk:
        with open(disk / "filler", "wb", buffering=0) as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 4096)
        done = subprocess.run([sys.executable, "-m", "eotdlfs", "mount", str(mnt), "--api-url", module_server.url,
                               "--cache-dir", str(disk / "cache")], capture_output=True, text=True, timeout=60)
        assert done.returncode == 1 and not mnt.exists(), done.stderr
        assert "is it full?" in done.stderr and str(disk / "cache") in done.stderr, done.stderr


def test_a_get_onto_a_full_disk_says_where_keeps_what_it_got_and_resumes(module_server, tmp_path: Path) -> None:
    """`eotdlfs get` said only 'error: No space left on device': not which file, nor what to do."""
    name = "get-full"
    files = make_folder(tmp_path / "src" / name, name, small=3, large_bytes=12 * MiB, seed=5)
    assert run_ingest(tmp_path / "src" / name, module_server.url, module_server.token("alice"),
                      tmp_path / "cache").returncode == 0
    with small_disk(tmp_path / "out", "8m") as out:
        argv = [sys.executable, "-m", "eotdlfs", "get", name, "--out", str(out), "--api-url", module_server.url]
        env = ingest_env(tmp_path / "get-cache")
        full = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert full.returncode == 1, full.stdout
        lines = full.stderr.strip().splitlines()
        assert len(lines) == 1 and f"No space left on device writing {out / name / 'v1' / 'big' / 'scene.tif'}: " \
            "free some room or choose another --out" in lines[0], full.stderr
        version = out / name / "v1"
        assert not [p for p in version.rglob("*") if p.name.endswith(".part")]  # no temp file left behind
        kept = {p.relative_to(version).as_posix(): p.read_bytes() for p in version.rglob("*") if p.is_file()}
        assert kept and all(files[path] == data for path, data in kept.items()), sorted(kept)

        subprocess.run(["mount", "-o", "remount,size=32m", str(out)], check=True)
        again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
        assert f"{len(kept)} already present" in again.stdout, again.stdout
        assert {p.relative_to(version).as_posix(): p.read_bytes() for p in version.rglob("*") if p.is_file()} == files
