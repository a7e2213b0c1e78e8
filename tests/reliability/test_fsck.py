"""`eotdlfs.server.fsck` finds every kind of damage it promises to find, and passes a healthy root."""

from __future__ import annotations

import hashlib
import io
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from eotdlfs.server.fsck import check
from eotdlfs.server.store import Store

META = {"name": "fsck-set", "authors": ["a"], "license": "MIT", "source": "http://example.com"}
FILES = {"a.txt": b"alpha" * 100, "sub/b.bin": bytes(range(256)) * 10}


def _ingest(store: Store, record_id: str, files: dict[str, bytes], draft: bool = False) -> int:
    version = store.create_version("datasets", record_id, "alice", draft=draft)
    for path, data in files.items():
        store.ingest_file("datasets", record_id, "alice", version, path, io.BytesIO(data),
                          hashlib.sha1(data).hexdigest())
    return version


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    store = Store(tmp_path)
    record_id = store.create_record("datasets", "alice", dict(META))
    _ingest(store, record_id, FILES)
    return tmp_path


def _blob(root: Path, data: bytes) -> Path:
    sha1 = hashlib.sha1(data).hexdigest()
    return root / "blobs" / sha1[:2] / sha1[2:]


def test_healthy_root_passes_with_sizes(root: Path) -> None:
    report = check(root)
    assert report.ok, report.problems
    assert (report.records, report.versions, report.file_versions, report.blobs_checked) == (1, 1, 2, 2)
    assert report.orphans == [] and report.notes == []
    assert list(report.version_sizes.values()) == [sum(map(len, FILES.values()))]


def test_flipped_byte_is_a_problem(root: Path) -> None:
    blob = _blob(root, FILES["a.txt"])
    data = bytearray(blob.read_bytes())
    data[7] ^= 1
    blob.write_bytes(bytes(data))
    report = check(root)
    assert not report.ok and "hashes to" in report.problems[0]
    assert check(root, hash_blobs=False).ok  # the quick check sees sizes only


def test_missing_and_truncated_blobs_are_problems(root: Path) -> None:
    _blob(root, FILES["a.txt"]).unlink()
    blob = _blob(root, FILES["sub/b.bin"])
    blob.write_bytes(blob.read_bytes()[:-1])
    problems = check(root).problems
    assert any("is missing" in p for p in problems)
    assert any("the database says" in p for p in problems)


def test_dangling_rows_are_problems(root: Path) -> None:
    with sqlite3.connect(root / "repository.db") as conn:
        record_id = conn.execute("SELECT id FROM records").fetchone()[0]
        conn.execute("INSERT INTO version_files VALUES (?, 1, 'ghost.txt', 3)", (record_id,))
        conn.execute("INSERT INTO version_files VALUES (?, 9, 'a.txt', 1)", (record_id,))
        conn.execute("INSERT INTO versions VALUES ('nobody', 1, 'x', 0)")
        conn.execute("INSERT INTO stac_records VALUES ('stac-nobody')")
    problems = check(root).problems
    assert any("ghost.txt@3 which does not exist" in p for p in problems)
    assert any("v9: files listed for a version that does not exist" in p for p in problems)
    assert any("record nobody which does not exist" in p for p in problems)
    assert any(p.startswith("stac_records: rows of record stac-nobody which does not exist") for p in problems)


def test_orphans_and_drafts_are_reported_not_problems(root: Path) -> None:
    store = Store(root)
    record_id = store.record_by_name("datasets", "fsck-set")["id"]
    _ingest(store, record_id, {"c.txt": b"draft bytes"}, draft=True)
    (root / "blobs" / "tmp" / "stage-x").write_bytes(b"half")
    stray = _blob(root, b"nobody lists me")
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"nobody lists me")
    (root / "uploads" / ("f" * 32)).mkdir()
    report = check(root)
    assert report.ok, report.problems
    assert report.drafts == 1 and "draft" in report.notes[0]
    assert len(report.orphans) == 3


def test_no_database_is_a_problem(tmp_path: Path) -> None:
    assert not check(tmp_path).ok


def test_fsck_command_exit_codes(root: Path) -> None:
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "eotdlfs", "fsck", "--root", str(root)],
                              capture_output=True, text=True, timeout=60)

    good = run()
    assert good.returncode == 0 and good.stdout.startswith("ok:"), good.stderr
    _blob(root, FILES["a.txt"]).unlink()
    bad = run()
    assert bad.returncode == 1 and bad.stdout.startswith("problem:")
