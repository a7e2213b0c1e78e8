"""StagingArea and flushes without a mount: record folders, mkdir of a new record, flush outcomes, crash resume."""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from pathlib import Path

import pytest

from eotdlfs.repository import Unreachable
from eotdlfs.fs.staging.area import StagingArea
from eotdlfs.fs.staging.control import FLUSH_XATTR
from eotdlfs.fs.staging.flush import CONFLICT_RETRIES, RecordFlusher
from tests.staging.fakes import FakeRepository, FakeVersions

METADATA = b"name: demo\nauthors: [me]\nlicense: MIT\nsource: http://example.com\n"


@pytest.fixture
def repo() -> FakeRepository:
    repo = FakeRepository()
    repo.records["demo"] = FakeVersions({"metadata.yml": METADATA, "a.txt": b"a", "b/c.txt": b"c"})
    return repo


def make_area(tmp_path: Path, repo: FakeRepository, **options) -> StagingArea:
    return StagingArea(tmp_path / "staging", repo, repo.services(), **options)


def write(area: StagingArea, path: str, data: bytes) -> None:
    try:
        area.getattr(path)
        fh = area.open(path, os.O_WRONLY | os.O_TRUNC)
    except FileNotFoundError:
        fh = area.create(path, 0o644)
    try:
        area.write(path, data, 0, fh)
    finally:
        area.release(path, fh)


def read(area: StagingArea, path: str) -> bytes:
    fh = area.open(path, os.O_RDONLY)
    try:
        return area.read(path, 1 << 20, 0, fh)
    finally:
        area.release(path, fh)


def flush(area: StagingArea, kind: str, name: str) -> dict:
    flusher = area.flush_record(kind, name)
    assert flusher.wait(10)
    return flusher.state().to_json()


def test_listing_shows_published_and_new_records(tmp_path, repo):
    area = make_area(tmp_path, repo)
    assert area.readdir("/") == ["datasets", "models"]
    assert area.readdir("/datasets") == ["demo"]
    area.mkdir("/datasets/fresh-one", 0o755)
    assert area.readdir("/datasets") == ["demo", "fresh-one"]
    assert area.readdir("/datasets/fresh-one") == []
    assert sorted(area.readdir("/datasets/demo")) == ["a.txt", "b", "metadata.yml"]


@pytest.mark.parametrize("path, code", [
    ("/datasets/x", errno.EPERM),  # too short a name
    ("/datasets/9lives", errno.EPERM),
    ("/datasets/demo", errno.EEXIST),
    ("/elsewhere", errno.ENOENT),
])
def test_mkdir_of_a_record_checks_the_name(tmp_path, repo, path, code):
    with pytest.raises(OSError) as info:
        make_area(tmp_path, repo).mkdir(path, 0o755)
    assert info.value.errno == code


@pytest.mark.parametrize("name, code, reason", [
    ("back\\slash.txt", errno.EPERM, "backslash"),
    ("new\nline.txt", errno.EPERM, "control character"),
    ("tab\there.txt", errno.EPERM, "control character"),
    ("caf\udce9.txt", errno.EPERM, "b'caf\\xe9.txt' is not UTF-8 text"),  # Latin-1 bytes; it was EIO
    ("n" * 256, errno.ENAMETOOLONG, "component longer than 255 bytes"),
    ("/".join(["d" * 200] * 6), errno.ENAMETOOLONG, "longer than 1024 bytes"),
])
def test_names_a_flush_would_refuse_are_refused_when_made(tmp_path, repo, caplog, name, code, reason):
    area = make_area(tmp_path, repo)
    path = f"/datasets/demo/{name}"
    made = [lambda: area.create(path, 0o644), lambda: area.mkdir(path, 0o755),
            lambda: area.rename("/datasets/demo/a.txt", path)]
    for make in made:
        caplog.clear()
        with pytest.raises(OSError) as info:
            make()
        assert info.value.errno == code
        assert reason in caplog.text and "refused" in caplog.text
    assert sorted(area.readdir("/datasets/demo")) == ["a.txt", "b", "metadata.yml"]
    assert not area.status()["records"]  # nothing staged


def test_looking_up_a_name_over_255_bytes_is_enametoolong(tmp_path, repo):
    area = make_area(tmp_path, repo)
    for path, code in (("/datasets/demo/" + "n" * 256, errno.ENAMETOOLONG), ("/datasets/demo/b/" + "é" * 128,
                       errno.ENAMETOOLONG), ("/datasets/demo/" + "n" * 255, errno.ENOENT)):
        with pytest.raises(OSError) as info:
            area.getattr(path)
        assert info.value.errno == code, path


def test_renames_between_records_are_cross_device(tmp_path, repo):
    area = make_area(tmp_path, repo)
    area.mkdir("/datasets/other-one", 0o755)
    with pytest.raises(OSError) as info:
        area.rename("/datasets/demo/a.txt", "/datasets/other-one/a.txt")
    assert info.value.errno == errno.EXDEV


def test_flush_of_one_change_uploads_one_file(tmp_path, repo):
    area = make_area(tmp_path, repo)
    write(area, "/datasets/demo/a.txt", b"A!")
    state = flush(area, "datasets", "demo")
    assert state["state"] == "done" and state["version"] == 2, state
    assert state["result"]["uploaded"] == 1 and state["result"]["carried"] == 2
    assert area.status()["records"][0]["flush"] == "done"
    assert read(area, "/datasets/demo/a.txt") == b"A!"
    again = flush(area, "datasets", "demo")
    assert again["state"] == "nothing" and "no staged changes" in again["message"]
    assert len(repo.records["demo"].versions) == 2


def test_new_record_needs_metadata_then_flushes(tmp_path, repo, caplog):
    area = make_area(tmp_path, repo)
    with caplog.at_level("INFO", logger="eotdlfs.fs.staging.area"):
        area.mkdir("/datasets/brand-new", 0o755)
    # a STAC catalog.json is the other way to name a record: the log said metadata.yml alone
    assert "brand-new staged; it needs a metadata.yml (or a STAC catalog.json) before a flush" in caplog.text
    write(area, "/datasets/brand-new/data.bin", b"123")
    state = flush(area, "datasets", "brand-new")
    assert state["state"] == "failed" and "metadata.yml" in state["error"] and "brand-new" in state["error"]
    write(area, "/datasets/brand-new/metadata.yml", METADATA)  # names 'demo': refused
    state = flush(area, "datasets", "brand-new")
    assert state["state"] == "failed" and "'demo'" in state["error"]
    write(area, "/datasets/brand-new/metadata.yml", METADATA.replace(b"demo", b"brand-new"))
    state = flush(area, "datasets", "brand-new")
    assert state["state"] == "done" and state["version"] == 1
    assert {e.path for e in repo.records["brand-new"].versions[0]} == {"metadata.yml", "data.bin"}


@pytest.mark.parametrize("metadata, said", [
    (METADATA.replace(b"http://example.com", b"ftp://x"), "source: must be a URL"),
    # read into the mount's memory and parsed there: 15 s and 183 MB for 8 MB of YAML
    (METADATA + b"notes: " + b"n" * (1 << 20) + b"\n", "metadata.yml: is 1,048,6"),
])
def test_invalid_metadata_is_reported_and_nothing_sent(tmp_path, repo, metadata, said):
    area = make_area(tmp_path, repo)
    write(area, "/datasets/demo/metadata.yml", metadata)
    state = flush(area, "datasets", "demo")
    assert state["state"] == "failed" and said in state["error"], state
    assert repo.ingests == 0


def test_failed_flush_keeps_everything_and_a_later_one_succeeds(tmp_path, repo):
    area = make_area(tmp_path, repo)
    write(area, "/datasets/demo/new.txt", b"keep me")
    repo.fail_with = Unreachable("connection refused")
    state = flush(area, "datasets", "demo")
    assert state["state"] == "failed" and "connection refused" in state["error"]
    status = area.status()["records"][0]
    assert status["added"] == 1 and status["flush"] == "failed" and "refused" in status["error"]
    write(area, "/datasets/demo/new.txt", b"keep me too")  # writable again after the failure
    repo.fail_with = None
    assert flush(area, "datasets", "demo")["state"] == "done"
    assert read(area, "/datasets/demo/new.txt") == b"keep me too"


def test_flush_applies_staged_changes_onto_a_version_published_meanwhile(tmp_path, repo):
    meta = METADATA.replace(b"demo", b"merge")
    repo.records["merge"] = FakeVersions({"metadata.yml": meta, "both.txt": b"1", "gone-here.txt": b"1",
                                          "gone-there.txt": b"1", "changed-there.txt": b"1", "moved.txt": b"m"})
    area = make_area(tmp_path, repo)
    write(area, "/datasets/merge/both.txt", b"ours")  # changed on both sides: ours wins
    area.unlink("/datasets/merge/gone-here.txt")  # deleted here, changed there: stays deleted
    area.rename("/datasets/merge/moved.txt", "/datasets/merge/sub-moved.txt")  # its bytes stay ours
    repo.records["merge"].publish({"metadata.yml": meta, "both.txt": b"theirs", "gone-here.txt": b"2",
                                   "changed-there.txt": b"2", "theirs/new.txt": b"new there"})
    state = flush(area, "datasets", "merge")
    assert state["state"] == "done" and state["version"] == 3 and "applied onto v2" in state["message"], state
    record = repo.records["merge"]
    assert {e.path: record.blobs[e.checksum] for e in record.versions[2]} == {
        "metadata.yml": meta, "both.txt": b"ours", "changed-there.txt": b"2", "theirs/new.txt": b"new there",
        "sub-moved.txt": b"m"}
    assert read(area, "/datasets/merge/theirs/new.txt") == b"new there"


def test_a_version_published_during_the_ingest_is_caught_up_and_the_flush_retried(tmp_path, repo):
    """Another writer publishes v2 while our flush ingests (based on v1): the engine refuses to publish a mix;
    the flush applies the staged changes onto v2 and publishes v3 = v2 + ours."""
    area = make_area(tmp_path, repo)
    write(area, "/datasets/demo/a.txt", b"ours")
    repo.meanwhile.append({"metadata.yml": METADATA, "a.txt": b"theirs", "b/c.txt": b"c", "theirs.txt": b"t"})
    state = flush(area, "datasets", "demo")
    assert state["state"] == "done" and state["version"] == 3 and "applied onto v2" in state["message"], state
    record = repo.records["demo"]
    assert {e.path: record.blobs[e.checksum] for e in record.versions[2]} == {
        "metadata.yml": METADATA, "a.txt": b"ours", "b/c.txt": b"c", "theirs.txt": b"t"}
    assert repo.ingests == 2


def test_a_flush_that_keeps_losing_the_race_fails_clearly_and_keeps_its_changes(tmp_path, repo):
    area = make_area(tmp_path, repo)
    write(area, "/datasets/demo/a.txt", b"ours")
    repo.meanwhile.extend({"metadata.yml": METADATA, "a.txt": b"theirs %d" % n, "b/c.txt": b"c"}
                          for n in range(CONFLICT_RETRIES + 1))
    state = flush(area, "datasets", "demo")
    assert state["state"] == "failed" and "was published meanwhile" in state["error"], state
    assert read(area, "/datasets/demo/a.txt") == b"ours"
    state = flush(area, "datasets", "demo")  # the other writer stopped: the next flush goes through
    assert state["state"] == "done" and state["version"] == CONFLICT_RETRIES + 3, state


def test_flush_waits_for_a_writer_and_says_which_file(tmp_path, repo):
    area = make_area(tmp_path, repo)
    fh = area.create("/datasets/demo/open.txt", 0o644)
    flusher = area.flush_record("datasets", "demo")
    deadline = time.monotonic() + 5
    while "open.txt" not in flusher.state().message and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "waiting for open.txt" in flusher.state().message
    area.release("/datasets/demo/open.txt", fh)
    assert flusher.wait(10) and flusher.state().state == "done"


def test_flush_control_attribute(tmp_path, repo):
    area = make_area(tmp_path, repo)
    write(area, "/datasets/demo/x.txt", b"x")
    assert json.loads(area.getxattr("/datasets/demo", FLUSH_XATTR))["run"] == 0
    area.setxattr("/datasets/demo", FLUSH_XATTR, b"1", 0)
    area.flush_record("datasets", "demo").wait(10)
    state = json.loads(area.getxattr("/datasets/demo", FLUSH_XATTR))
    assert state["run"] >= 1 and state["state"] in ("done", "nothing")
    with pytest.raises(OSError) as info:
        area.setxattr("/datasets/demo/x.txt", "user.other", b"1", 0)
    assert info.value.errno == errno.ENOTSUP


def test_an_interrupted_flush_resumes_at_the_next_start(tmp_path, repo):
    area = make_area(tmp_path, repo)
    write(area, "/datasets/demo/a.txt", b"frozen bytes")
    overlay = area._overlay("datasets", "demo")
    overlay.freeze(1.0, lambda path: None)  # the flush got this far, then the process died
    area.destroy()
    again = make_area(tmp_path, repo)  # the next mount resumes it by itself
    flusher = again.flush_record("datasets", "demo")
    assert flusher.wait(10)
    assert len(repo.records["demo"].versions) == 2
    assert repo.records["demo"].blobs[next(e.checksum for e in repo.records["demo"].versions[1]
                                           if e.path == "a.txt")] == b"frozen bytes"


def test_autoflush_after_idle_seconds(tmp_path, repo):
    area = make_area(tmp_path, repo, autoflush=0.3)
    try:
        write(area, "/datasets/demo/auto.txt", b"auto")
        deadline = time.monotonic() + 10
        while len(repo.records["demo"].versions) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(repo.records["demo"].versions) == 2
    finally:
        area.destroy()


def test_rmdir_drops_only_an_empty_new_record(tmp_path, repo):
    area = make_area(tmp_path, repo)
    area.mkdir("/datasets/scratch-one", 0o755)
    area.rmdir("/datasets/scratch-one")
    assert area.readdir("/datasets") == ["demo"]
    area.destroy()
    area = make_area(tmp_path, repo)
    assert area.readdir("/datasets") == ["demo"]
    with pytest.raises(OSError) as info:
        area.rmdir("/datasets/demo")
    assert info.value.errno == errno.EPERM


def test_a_new_record_whose_name_appeared_on_the_server_is_not_merged(tmp_path, repo):
    area = make_area(tmp_path, repo)
    area.mkdir("/datasets/raced-name", 0o755)
    write(area, "/datasets/raced-name/metadata.yml", METADATA.replace(b"demo", b"raced-name"))
    repo.records["raced-name"] = FakeVersions({"theirs.txt": b"t"})
    state = flush(area, "datasets", "raced-name")
    assert state["state"] == "failed" and "created on the server" in state["error"]
    assert area.readdir("/datasets/raced-name") == ["metadata.yml"]


def test_a_writer_that_never_closes_fails_the_flush_with_a_clear_message(tmp_path, repo):
    area = make_area(tmp_path, repo)
    fh = area.create("/datasets/demo/held.txt", 0o644)
    flusher = RecordFlusher(area._overlay("datasets", "demo"), repo.services(), writer_wait=0.2)
    flusher.request()
    assert flusher.wait(10)
    state = flusher.state()
    assert state.state == "failed" and state.error.startswith("held.txt is still open for writing"), state
    area.release("/datasets/demo/held.txt", fh)
    assert flush(area, "datasets", "demo")["state"] == "done"


def test_a_flush_requested_during_a_flush_runs_after_it_and_ships_the_rest(tmp_path, repo):
    gate, entered = threading.Event(), threading.Event()
    real_ingest = repo.ingest

    def slow_ingest(*args):
        entered.set()
        assert gate.wait(10)
        return real_ingest(*args)

    repo.ingest = slow_ingest
    area = make_area(tmp_path, repo)
    write(area, "/datasets/demo/first.txt", b"1")
    flusher = area.flush_record("datasets", "demo")
    assert entered.wait(10)
    write(area, "/datasets/demo/second.txt", b"2")  # after the first flush froze its files
    flusher.request()
    assert flusher.state().queued
    gate.set()
    assert flusher.wait(10)
    state = flusher.state()
    assert state.run == 2 and state.state == "done" and state.version == 3, state
    assert {e.path for e in repo.records["demo"].versions[1]} >= {"first.txt"}
    assert "second.txt" not in {e.path for e in repo.records["demo"].versions[1]}
    assert "second.txt" in {e.path for e in repo.records["demo"].versions[2]}


def test_rmdir_of_a_new_record_forgets_everything_kept_for_it(tmp_path, repo):
    area = make_area(tmp_path, repo)
    area.mkdir("/datasets/fresh", 0o755)
    area.rmdir("/datasets/fresh")
    key = ("datasets", "fresh")
    assert key not in area._overlays and key not in area._flushers and key not in area._followed
    assert "fresh" not in area.readdir("/datasets")


@pytest.fixture
def operations(tmp_path, repo, monkeypatch):
    """The FUSE adapter over a staging area, called as libfuse would (no kernel needed for flags);
    the caller's ids, which libfuse gives each request, are this process's."""
    from eotdlfs.fs import fuse_ops
    from eotdlfs.fs.context import MountOptions, build_context
    from eotdlfs.fs.fuse_ops import EotdlfsOperations
    from tests.fs.fakes import MemoryRepository

    monkeypatch.setattr(fuse_ops, "fuse_get_context", lambda: (os.getuid(), os.getgid(), os.getpid()))

    context = build_context(MemoryRepository(), MountOptions(cache_dir=tmp_path / "cache"))
    area = make_area(tmp_path, repo)
    yield EotdlfsOperations(context, str(tmp_path / "mnt"), area)
    area.destroy()
    context.close()


def test_create_passes_the_open_flags_to_staging(operations):
    """O_EXCL and O_APPEND given to open(O_CREAT) reach the staged file (the kernel asks `create`
    without looking the name up first when its entry cache is cold or raced)."""
    from types import SimpleNamespace

    from eotdlfs.fs.fuse_binding import FuseOSError

    path = "/staging/datasets/demo/a.txt"  # published, 1 byte: b"a"
    with pytest.raises(FuseOSError) as info:
        operations.create(path, 0o644, SimpleNamespace(flags=os.O_WRONLY | os.O_CREAT | os.O_EXCL, fh=0))
    assert info.value.errno == errno.EEXIST
    fi = SimpleNamespace(flags=os.O_WRONLY | os.O_CREAT | os.O_APPEND, fh=0)
    operations.create(path, 0o644, fi)
    operations.write(path, b"+", 0, fi)  # offset 0, as a kernel that believed the file empty would ask
    operations.release(path, fi)
    assert read(operations.staging, "/datasets/demo/a.txt") == b"a+"
