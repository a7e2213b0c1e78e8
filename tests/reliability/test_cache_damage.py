"""A damaged cache disk: every cached byte is checked when read back, whatever the cache layout.

The damage is done to every data file under the cache dir (all but SQLite databases and the
JSON listings), found by walking the folder, so the tests hold for any layout of the block
cache. Promises: reads give the right bytes (after a remount too), the damage is logged, and
a copy-up into staging never builds on damaged bytes, so a flush publishes the right ones.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest

import eotdlfs

from reliability.conftest import assert_fsck_ok
from tests.client.helpers import cli_env, client, run_cli
from eotdlfs.fs.pieces import PIECE_SIZE
from tests.fs.datasets import ingest_one_file

SQLITE_MAGIC = b"SQLite format 3\x00"
BLOCK = 1 << 20
SIZE = 5 * BLOCK + 3  # six blocks, the last one short


def data_files(cache_dir: Path) -> list[Path]:
    """Every regular file under CACHE_DIR that is neither an SQLite database (or its WAL and
    shared memory) nor a JSON listing: the cached file bytes, in whatever layout."""
    databases = set()
    files = [p for p in cache_dir.rglob("*") if p.is_file() and not p.is_symlink()]
    for path in files:
        with open(path, "rb") as f:
            if f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC:
                databases.add(str(path))
    return [p for p in files if str(p) not in databases and p.suffix != ".json"
            and not any(str(p) == db + tail for db in databases for tail in ("-wal", "-shm", "-journal"))]


def flip_a_byte(path: Path) -> None:
    """A flipped byte in each block's stretch of PATH (a file may hold several blocks)."""
    with open(path, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        for start in range(0, size, BLOCK):
            at = start + min(BLOCK, size - start) // 2
            f.seek(at)
            byte = f.read(1)
            f.seek(at)
            f.write(bytes([byte[0] ^ 0x5A]))


def truncate(path: Path) -> None:
    os.truncate(path, min(1000, path.stat().st_size - 1))


DAMAGES: dict[str, Callable[[Path], None]] = {"flipped": flip_a_byte, "truncated": truncate}


def damage_everything(mount, damage: str) -> int:
    """Unmount, apply DAMAGE to every data file of the cache, mount again; how many bytes those files held."""
    mount.unmount()
    files = [p for p in data_files(mount.cache_dir) if p.stat().st_size > 1]
    held = sum(p.stat().st_size for p in files)
    for path in files:
        DAMAGES[damage](path)
    mount.mount()
    return held


def sha1sum(path: Path) -> str:
    result = subprocess.run(["sha1sum", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()[0]


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_cache_files_are_refetched_and_never_published(damage, module_server, mount_factory, unique_name,
                                                               tmp_path: Path, tally) -> None:
    server, name = module_server, unique_name("dmg")
    data = ingest_one_file(server, tmp_path / "src", name, "data.bin", SIZE)
    right = hashlib.sha1(data).hexdigest()
    mount = mount_factory(server)
    published = mount.path / "datasets" / name / "v1" / "data.bin"
    assert sha1sum(published) == right  # every block now in the cache

    assert damage_everything(mount, damage) >= SIZE  # every block
    got = sha1sum(published)
    if got != right:
        tally.bytes_lost += SIZE
    assert got == right, "a damaged cache block was served"
    mount.remount()  # the damaged blocks were replaced, not kept
    assert sha1sum(published) == right
    log = mount.log.read_text()
    assert "failed its check" in log, log[-2000:]

    assert damage_everything(mount, damage) >= SIZE  # every block
    target = mount.path / "staging" / "datasets" / name
    with open(target / "data.bin", "a") as f:  # copy-up of the published file from the damaged cache
        f.write("x\n")
    flushed = run_cli(cli_env(tmp_path, server.url, server.token("alice")), "flush", str(target), "--timeout", "60")
    assert flushed.returncode == 0, flushed.stdout + flushed.stderr
    api = client(server)
    try:
        record = api.record_by_name("datasets", name)
        files = {f["filename"]: f["checksum"] for f in api.files("datasets", record["id"], 2)}
    finally:
        api.close()
    assert files["data.bin"] == hashlib.sha1(data + b"x\n").hexdigest()
    assert_fsck_ok(server.root)



PIECE_READS = [(4 * (1 << 20) + 100, 4096), (2 * (1 << 20) + 70_000, 20_000), (3 * (1 << 20) + 9, 300)]


def seeking_reads(path: Path) -> list[bytes]:
    """Reads far from the file's start and from each other (none in the final block, none in the
    block after the first, which a fresh mount fetches whole on the file's lookup): a seeking
    reader, fetched in 64 KiB pieces, which the block cache keeps side by side in shared files."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return [os.pread(fd, size, at) for at, size in PIECE_READS]
    finally:
        os.close(fd)


def _piece_files(cache_dir: Path, data: bytes) -> list[tuple[Path, int]]:
    """Where each read piece lies in the cache's data files: (file, offset of a byte well inside it)."""
    found = []
    for path in data_files(cache_dir / "blocks"):
        stored = path.read_bytes()
        for at, _ in PIECE_READS:
            piece = at - at % PIECE_SIZE
            where = stored.find(data[piece + 1000:piece + 1064])
            if where >= 0:
                found.append((path, where))
    return found


def flip_piece_bytes(cache_dir: Path, data: bytes) -> int:
    """Flip a byte of each read piece where it lies on disk; how many were found there."""
    found = _piece_files(cache_dir, data)
    for path, where in found:
        with open(path, "r+b") as f:
            f.seek(where)
            byte = f.read(1)
            f.seek(where)
            f.write(bytes([byte[0] ^ 0x5A]))
    return len(found)


def truncate_piece_files(cache_dir: Path, data: bytes) -> int:
    """Cut short the files holding the read pieces; how many pieces they held."""
    found = _piece_files(cache_dir, data)
    for path in {path for path, _ in found}:
        truncate(path)
    return len(found)


@pytest.mark.parametrize("damage", [flip_piece_bytes, truncate_piece_files], ids=["flipped", "truncated"])
def test_damaged_pieces_are_refetched(damage, module_server, mount_factory, unique_name,
                                      tmp_path: Path, tally, caplog) -> None:
    """Pieces are kept side by side in files a batch shares: damaged there, they are refetched,
    never served, after a remount and for a second reader of the cache (`eotdl://`) while the
    mount runs, and the mount's log and `eotdlfs status` say so."""
    server, name = module_server, unique_name("piece")
    data = ingest_one_file(server, tmp_path / "src", name, "data.bin", SIZE)
    right = [data[at:at + size] for at, size in PIECE_READS]
    mount = mount_factory(server)
    published = mount.path / "datasets" / name / "v1" / "data.bin"
    assert seeking_reads(published) == right
    mount.unmount()  # stores the pieces still waiting, and checkpoints the index's WAL into it
    assert damage(mount.cache_dir, data) == len(PIECE_READS)
    mount.mount()
    got = seeking_reads(published)
    tally.bytes_lost += sum(len(r) for g, r in zip(got, right) if g != r)
    assert got == right, "a damaged piece was served"
    assert mount.status()["cache"]["damaged_blocks"] >= 1
    status = run_cli(cli_env(tmp_path, None, None), "status", str(mount.path)).stdout
    assert "failed their check" in status, status
    assert "failed its check" in mount.log.read_text()

    mount.unmount()  # stores the refetched pieces; damaged again while a mount runs
    mount.mount()
    assert damage(mount.cache_dir, data) == len(PIECE_READS)
    with eotdlfs.connect(api_url=server.url, cache_dir=mount.cache_dir) as repo:
        with repo.open(f"datasets/{name}/v1/data.bin") as f:
            got = []
            for at, size in PIECE_READS:
                f.seek(at)
                got.append(f.read(size))
    assert got == right, "a damaged piece was served"
    assert "failed its check" in caplog.text
    assert seeking_reads(published) == right


def scribble_over_index(cache_dir: Path) -> None:
    """Garbage over the head of every page but the first of the index, and of its WAL's first frame."""
    index = cache_dir / "blocks" / "cache.db"
    with open(index, "r+b") as f:
        for page in range(1, index.stat().st_size // 4096):
            f.seek(page * 4096)
            f.write(b"\xff" * 16)
    wal = index.with_name(index.name + "-wal")
    if wal.exists() and wal.stat().st_size > 96:
        with open(wal, "r+b") as f:
            f.seek(32)
            f.write(b"\xff" * 64)


def test_an_index_damaged_under_a_running_mount_costs_fetches_not_reads(module_server, mount_factory, unique_name,
                                                                         tmp_path: Path) -> None:
    """A failing disk under the cache's index while the mount runs: every lookup raised
    'file is not a database', so every read not in memory, and status.json, were EIO."""
    server, name = module_server, unique_name("scribble")
    data = ingest_one_file(server, tmp_path / "src", name, "data.bin", SIZE)
    mount = mount_factory(server)
    published = mount.path / "datasets" / name / "v1" / "data.bin"
    assert seeking_reads(published) == [data[at:at + size] for at, size in PIECE_READS]
    time.sleep(1)  # the pieces stored (STORE_QUIET_S)
    scribble_over_index(mount.cache_dir)
    assert sha1sum(published) == hashlib.sha1(data).hexdigest()
    status = run_cli(cli_env(tmp_path, None, None), "status", str(mount.path))
    assert status.returncode == 0 and "cache errors" in status.stdout, status.stdout + status.stderr
    assert "the block cache failed" in mount.log.read_text()
