"""plan_ingest and batching, offline: the diff by path and SHA-1 against the latest version."""

from __future__ import annotations

from pathlib import Path

import pytest

from eotdlfs.client.ingest.plan import (
    Carry, Drop, LatestFile, SourceFile, Upload, chunked, plan_ingest, upload_batches,
)

A, B, C = "a" * 40, "b" * 40, "c" * 40


def local(path: str, checksum: str, size: int = 10) -> SourceFile:
    return SourceFile(path, size, checksum, Path("/src") / path)


def test_new_changed_unchanged_and_removed_files():
    latest = [LatestFile("same.txt", 1, A), LatestFile("changed.txt", 3, A), LatestFile("gone.txt", 1, B)]
    sources = [local("same.txt", A), local("changed.txt", B), local("new/file.txt", C)]
    plan = plan_ingest(sources, latest)
    assert [u.source.path for u in plan.uploads] == ["changed.txt", "new/file.txt"]
    assert plan.carries == (Carry("same.txt", A),)
    assert plan.drops == (Drop("gone.txt"),)
    assert not plan.nothing_changed
    assert plan.bytes_to_send == 20


def test_identical_folder_is_nothing_changed():
    plan = plan_ingest([local("x", A), local("y/z", B)], [LatestFile("x", 1, A), LatestFile("y/z", 2, B)])
    assert plan.nothing_changed and len(plan.carries) == 2


def test_a_removal_alone_is_a_change():
    plan = plan_ingest([local("x", A)], [LatestFile("x", 1, A), LatestFile("y", 1, B)])
    assert not plan.nothing_changed and plan.drops == (Drop("y"),)


def test_first_version_uploads_everything():
    plan = plan_ingest([local("x", A), local("y", B)], [])
    assert len(plan.uploads) == 2 and not plan.carries and not plan.drops


def test_a_renamed_file_without_local_bytes_is_fetched_from_the_latest_version():
    renamed = SourceFile("new-name", 10, A, None)
    plan = plan_ingest([renamed], [LatestFile("old-name", 4, A)])
    assert plan.uploads == (Upload(renamed, origin=LatestFile("old-name", 4, A)),)
    assert plan.drops == (Drop("old-name"),)


def test_known_bytes_under_a_new_path_are_carried_when_the_server_can():
    """A rename, a copy and two new files with the same bytes: one upload, the rest carries (route 7 any_path)."""
    renamed, copied = SourceFile("new-name", 10, A, None), local("copy", B)
    plan = plan_ingest([renamed, copied, local("keep", B), local("n1", C), local("n2", C)],
                       [LatestFile("old-name", 4, A), LatestFile("keep", 1, B)], carry_any_path=True)
    assert [u.source.path for u in plan.uploads] == ["n1"]
    assert plan.carries == (Carry("new-name", A, True), Carry("copy", B, True), Carry("keep", B), Carry("n2", C, True))
    assert plan.drops == (Drop("old-name"),)


def test_a_copy_alone_is_a_change():
    plan = plan_ingest([local("x", A), local("copy", A)], [LatestFile("x", 1, A)], carry_any_path=True)
    assert not plan.nothing_changed and not plan.uploads


def test_unknown_bytes_are_refused():
    with pytest.raises(ValueError, match="neither local nor in the latest version"):
        plan_ingest([SourceFile("x", 1, C, None)], [LatestFile("x", 1, A)])


@pytest.mark.parametrize("bad", ["", "/abs", "a//b", "a/../b", "./a", "a\\b"])
def test_bad_paths_are_refused(bad):
    with pytest.raises(ValueError):
        SourceFile(bad, 1, A, None)


def test_duplicate_paths_are_refused():
    with pytest.raises(ValueError, match="listed twice"):
        plan_ingest([local("x", A), local("x", B)], [])


def test_resuming_skips_what_the_draft_holds_and_rejects_foreign_content():
    plan = plan_ingest([local("up", B), local("keep", A)], [LatestFile("keep", 1, A), LatestFile("up", 1, A)])
    assert plan.accepts({"up": B})
    rest = plan.without({"up": B})
    assert rest.uploads == () and rest.carries == (Carry("keep", A),)
    assert not plan.accepts({"up": A})          # stale bytes of a changed file
    assert not plan.accepts({"deleted": C})     # a file the user removed since


def test_large_files_go_multipart():
    big, small = local("big", A, 16 * 2**20 + 1), local("small", B, 16 * 2**20)
    plan = plan_ingest([big, small], [])
    assert [u.multipart for u in plan.uploads] == [True, False]


def test_batches_bound_bytes_and_count():
    uploads = [Upload(local(f"f{i}", A, size)) for i, size in enumerate([4, 4, 4, 9, 1, 1, 1, 1])]
    batches = upload_batches(uploads, max_bytes=10, max_files=3)
    assert [[u.source.path for u in b] for b in batches] == [["f0", "f1"], ["f2"], ["f3", "f4"], ["f5", "f6", "f7"]]
    assert all(sum(u.source.size for u in b) <= 10 and len(b) <= 3 for b in batches)


def test_a_file_bigger_than_a_batch_gets_its_own():
    uploads = [Upload(local("small", A, 1)), Upload(local("huge", B, 50)), Upload(local("next", C, 1))]
    assert [len(b) for b in upload_batches(uploads, max_bytes=10, max_files=5)] == [1, 1, 1]


def test_chunked():
    assert [list(c) for c in chunked([1, 2, 3, 4, 5], 2)] == [[1, 2], [3, 4], [5]]
