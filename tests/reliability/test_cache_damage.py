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
from pathlib import Path
from typing import Callable

import pytest

from reliability.conftest import assert_fsck_ok
from tests.client.helpers import cli_env, client, run_cli
from tests.fs.datasets import ingest_one_file

SQLITE_MAGIC = b"SQLite format 3\x00"
SIZE = 5 * (1 << 20) + 3  # six blocks, the last one short


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
    with open(path, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        at = size // 2
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0x5A]))


def truncate(path: Path) -> None:
    os.truncate(path, min(1000, path.stat().st_size - 1))


DAMAGES: dict[str, Callable[[Path], None]] = {"flipped": flip_a_byte, "truncated": truncate}


def damage_everything(mount, damage: str) -> int:
    """Unmount, apply DAMAGE to every data file of the cache, mount again; how many files were damaged."""
    mount.unmount()
    files = [p for p in data_files(mount.cache_dir) if p.stat().st_size > 1]
    for path in files:
        DAMAGES[damage](path)
    mount.mount()
    return len(files)


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

    assert damage_everything(mount, damage) >= 6
    got = sha1sum(published)
    if got != right:
        tally.bytes_lost += SIZE
    assert got == right, "a damaged cache block was served"
    mount.remount()  # the damaged blocks were replaced, not kept
    assert sha1sum(published) == right
    log = mount.log.read_text()
    assert "failed its check" in log, log[-2000:]

    assert damage_everything(mount, damage) >= 6
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
