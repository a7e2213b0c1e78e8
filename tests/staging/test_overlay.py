"""StagingOverlay without a mount: each POSIX operation, copy-up, freeze/publish, journal durability."""

from __future__ import annotations

import errno
import os
import sqlite3
import threading

import pytest

from eotdlfs.fs.staging.journal import JOURNAL_FILE
from eotdlfs.fs.staging.overlay import StagingOverlay
from tests.staging.fakes import BASE, FakeVersions, flush
from tests.staging.posix_model import FolderBackend, OverlayBackend, random_program, run_both


def test_unchanged_tree_reads_through_and_writes_nothing(overlay, versions, tmp_path):
    assert OverlayBackend(overlay).tree() == {"metadata.yml": BASE["metadata.yml"], "a": None,
                                             "a/one.txt": b"one", "a/b": None, "a/b/two.bin": BASE["a/b/two.bin"]}
    assert not (tmp_path / "staging").exists()
    assert not overlay.pending()


def test_write_copies_up_once_and_keeps_the_rest(overlay, versions):
    backend = OverlayBackend(overlay)
    backend.write("a/b/two.bin", 10, b"XY")
    reads = versions.reads
    backend.write("a/b/two.bin", 20, b"Z")
    assert versions.reads == reads  # second write does not fetch again
    expected = bytearray(BASE["a/b/two.bin"])
    expected[10:12], expected[20:21] = b"XY", b"Z"
    assert backend.read("a/b/two.bin") == bytes(expected)
    pending = overlay.pending()
    assert pending.changed == ("a/b/two.bin",) and not pending.added and not pending.deleted
    assert pending.bytes_pending == len(expected)


@pytest.mark.parametrize("damaged_opens", [1, 2])
def test_copy_up_never_stages_bytes_that_fail_the_sha1(overlay, versions, damaged_opens):
    """Published bytes read wrong once are dropped and read again; wrong twice, the writer gets EIO."""
    two = next(e for e in versions.versions[-1] if e.path == "a/b/two.bin")
    versions.damaged[two.checksum] = damaged_opens
    backend = OverlayBackend(overlay)
    if damaged_opens == 1:
        backend.write("a/b/two.bin", 10, b"XY")
        expected = bytearray(BASE["a/b/two.bin"])
        expected[10:12] = b"XY"
        assert backend.read("a/b/two.bin") == bytes(expected)
    else:
        with pytest.raises(OSError) as info:
            backend.write("a/b/two.bin", 10, b"XY")
        assert info.value.errno == errno.EIO
        assert not overlay.pending()
    assert versions.damaged[two.checksum] == 0


def test_truncate_to_zero_fetches_nothing(overlay, versions):
    before = versions.reads
    overlay.truncate("a/b/two.bin", 0)
    assert versions.reads == before
    assert overlay.getattr("a/b/two.bin")["st_size"] == 0


@pytest.mark.parametrize("op, args, code", [
    ("mkdir", ("a", 0o755), errno.EEXIST),
    ("mkdir", ("x/y", 0o755), errno.ENOENT),
    ("mkdir", ("a/one.txt/z", 0o755), errno.ENOTDIR),
    ("rmdir", ("a",), errno.ENOTEMPTY),
    ("rmdir", ("a/one.txt",), errno.ENOTDIR),
    ("unlink", ("a",), errno.EISDIR),
    ("unlink", ("nope",), errno.ENOENT),
    ("rename", ("a", "a/b/c"), errno.EINVAL),
    ("rename", ("a/one.txt", "a/b"), errno.EISDIR),
    ("rename", ("a/b", "a/one.txt"), errno.ENOTDIR),
    ("rename", ("nope", "x"), errno.ENOENT),
    ("open", ("a", os.O_WRONLY), errno.EISDIR),
    ("create", ("missing/f", 0o644), errno.ENOENT),
    ("getattr", ("a/one.txt/x",), errno.ENOTDIR),
])
def test_errors_carry_the_posix_errno(overlay, op, args, code):
    with pytest.raises(OSError) as info:
        getattr(overlay, op)(*args)
    assert info.value.errno == code


def test_rename_folder_across_subfolders_and_over_a_file(overlay):
    backend = OverlayBackend(overlay)
    overlay.mkdir("c", 0o755)
    overlay.rename("a/b", "c/moved")
    assert backend.read("c/moved/two.bin") == BASE["a/b/two.bin"]
    backend.write("tmp", 0, b"new one")
    overlay.rename("tmp", "a/one.txt")  # editor style: write a temp file, rename over
    assert backend.read("a/one.txt") == b"new one"
    pending = overlay.pending()
    assert pending.added == ("c/moved/two.bin",)
    assert pending.changed == ("a/one.txt",)
    assert pending.deleted == ("a/b/two.bin",)


def test_unlink_while_open_keeps_the_open_bytes(overlay):
    fh = overlay.create("f", 0o644)
    overlay.write(fh, b"hello", 0)
    overlay.unlink("f")
    assert overlay.read(fh, 10, 0) == b"hello"
    overlay.release(fh)
    assert not overlay.exists("f")


def test_staged_changes_survive_reopening_the_journal(tmp_path, versions):
    first = StagingOverlay("datasets", "demo", tmp_path / "s", versions.base, versions.open)
    OverlayBackend(first).write("new.txt", 0, b"staged")
    first.unlink("a/one.txt")
    first.journal.close()  # as if the process died: nothing else is flushed or saved
    again = StagingOverlay("datasets", "demo", tmp_path / "s", versions.base, versions.open)
    assert OverlayBackend(again).read("new.txt") == b"staged"
    assert not again.exists("a/one.txt")
    assert again.dirty


def test_flush_publishes_and_restarts_from_the_new_version(overlay, versions):
    backend = OverlayBackend(overlay)
    backend.write("a/one.txt", 0, b"ONE")
    overlay.rename("a/b/two.bin", "two.bin")
    number = flush(overlay, versions)
    assert number == 2 and overlay.base_version == 2
    assert not overlay.pending() and not overlay.dirty
    assert not any(overlay.upper_dir.iterdir())  # staged bytes dropped once published
    assert backend.read("a/one.txt") == b"ONE" and backend.read("two.bin") == BASE["a/b/two.bin"]


def test_writes_during_a_flush_stay_staged_and_shipped_bytes_stay_intact(overlay, versions):
    backend = OverlayBackend(overlay)
    backend.write("f.txt", 0, b"v1")
    shipped = overlay.freeze(1.0, lambda path: None)
    backend.write("f.txt", 0, b"v2")  # the writer gets a copy; the frozen file is unchanged
    overlay.unlink("a/one.txt")
    number = versions.ship(shipped)
    overlay.publish(number, versions.versions[-1], shipped)
    assert versions.blobs[next(e.checksum for e in versions.versions[-1] if e.path == "f.txt")] == b"v1"
    assert backend.read("f.txt") == b"v2"
    pending = overlay.pending()
    assert pending.changed == ("f.txt",) and pending.deleted == ("a/one.txt",)


def test_freeze_waits_for_writers_and_names_the_file(overlay):
    fh = overlay.create("busy.txt", 0o644)
    waited: list[str] = []
    with pytest.raises(OSError) as info:
        overlay.freeze(0.2, waited.append)
    assert info.value.errno == errno.EBUSY and waited == ["busy.txt"]
    overlay.release(fh)
    assert {f.path for f in overlay.freeze(0.2, waited.append)} >= {"busy.txt"}


def test_clean_overlay_follows_new_versions_dirty_one_stays(overlay, versions):
    versions.publish({"only.txt": b"x"})
    overlay.follow(versions.base())
    assert overlay.readdir("") == ["only.txt"]
    OverlayBackend(overlay).write("mine", 0, b"m")
    versions.publish({"other.txt": b"y"})
    overlay.follow(versions.base())
    assert sorted(overlay.readdir("")) == ["mine", "only.txt"]


def test_disk_full_gives_enospc_and_loses_nothing_staged(overlay, monkeypatch):
    backend = OverlayBackend(overlay)
    backend.write("kept.txt", 0, b"precious")
    real_pwrite = os.pwrite

    def full_disk(fd, data, offset):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", full_disk)
    with pytest.raises(OSError) as info:
        backend.write("big.bin", 0, b"x" * 1000)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.setattr(os, "pwrite", real_pwrite)
    assert backend.read("kept.txt") == b"precious"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_operations_agree_with_a_local_folder(tmp_path, seed):
    versions = FakeVersions(BASE)
    reference = tmp_path / "reference"
    for path, data in BASE.items():
        (reference / path).parent.mkdir(parents=True, exist_ok=True)
        (reference / path).write_bytes(data)
    overlay = StagingOverlay("datasets", "demo", tmp_path / "staging", versions.base, versions.open)
    ops = random_program(seed, 300, FolderBackend(reference).tree())
    run_both(ops[:150], FolderBackend(reference), OverlayBackend(overlay))
    flush(overlay, versions)
    run_both(ops[150:], FolderBackend(reference), OverlayBackend(overlay))


def test_modification_times_survive_a_flush(overlay, versions):
    OverlayBackend(overlay).write("stamped.txt", 0, b"x")
    overlay.utimens("stamped.txt", None, 1_600_000_000_123_456_789)
    overlay.utimens("a/one.txt", None, 1_500_000_000 * 10**9)
    flush(overlay, versions)
    assert overlay.getattr("stamped.txt")["st_mtime"] == 1_600_000_000_123_456_789
    assert overlay.getattr("a/one.txt")["st_mtime"] == 1_500_000_000 * 10**9


def test_create_of_a_published_file_copies_it_up_outside_the_lock(tmp_path):
    """`create` of an existing node (open(O_CREAT) without O_EXCL) copies the published bytes up;
    they may come from the server, so other operations on the record must not wait for them."""
    reading, finish = threading.Event(), threading.Event()

    class SlowVersions(FakeVersions):
        def open(self, entry):
            file = super().open(entry)
            real_read = file.read

            def read(offset, size):
                reading.set()
                finish.wait(10)
                return real_read(offset, size)

            file.read = read
            return file

    versions = SlowVersions(BASE)
    overlay = StagingOverlay("datasets", "demo", tmp_path / "staging", versions.base, versions.open)
    created: list = []
    creator = threading.Thread(target=lambda: created.append(overlay.create("a/one.txt", 0o644, os.O_WRONLY)))
    creator.start()
    try:
        assert reading.wait(10)
        other = threading.Thread(target=overlay.mkdir, args=("elsewhere", 0o755))
        other.start()
        other.join(5)
        assert not other.is_alive(), "mkdir waited for the copy-up of another file"
    finally:
        finish.set()
        creator.join(10)
    overlay.release(created[0])
    assert OverlayBackend(overlay).read("a/one.txt") == b"one"


def test_a_journal_written_before_node_owners_reopens_and_keeps_new_owners(tmp_path, versions):
    folder = tmp_path / "staging"
    overlay = StagingOverlay("datasets", "demo", folder, versions.base, versions.open)
    overlay.mkdir("old", 0o755)
    overlay.journal.close()
    with sqlite3.connect(folder / JOURNAL_FILE) as db:  # the node table as the first release wrote it
        db.execute("CREATE TABLE old_nodes AS SELECT path, parent, is_dir, upper, base_path, mode, mtime_ns FROM nodes")
        db.execute("DROP TABLE nodes")
        db.execute("ALTER TABLE old_nodes RENAME TO nodes")

    again = StagingOverlay("datasets", "demo", folder, versions.base, versions.open)
    assert again.getattr("old")["st_uid"] == os.getuid()
    again.release(again.create("old/theirs.txt", 0o644, uid=65534, gid=65534))
    assert (again.getattr("old/theirs.txt")["st_uid"], again.getattr("old/theirs.txt")["st_gid"]) == (65534, 65534)
