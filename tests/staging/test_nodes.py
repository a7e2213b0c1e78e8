"""Symlinks, hard links, FIFOs and device nodes in a StagingOverlay without a mount: kept as a disk keeps
them, through a reopen of the journal, and what a flush does with each (eotdlfs/fs/staging/nodes.py)."""

from __future__ import annotations

import errno
import stat
import time

import pytest

from eotdlfs.fs.staging.nodes import RefusedNode
from eotdlfs.fs.staging.overlay import StagingOverlay
from tests.staging.posix_model import OverlayBackend
from tests.staging.fakes import flush


def reopened(overlay: StagingOverlay, versions) -> StagingOverlay:
    overlay.journal.close()
    return StagingOverlay("datasets", "demo", overlay.folder, versions.base, versions.open)


def test_symlinks_fifos_and_devices_keep_type_mode_owner_and_times_across_a_reopen(overlay, versions):
    overlay.symlink("a/to-one", "one.txt", uid=65534, gid=65533)
    overlay.mknod("a/pipe", stat.S_IFIFO | 0o640, 0, uid=65534, gid=65534)
    overlay.mknod("a/dev", stat.S_IFCHR | 0o600, 0x0103, uid=0, gid=0)
    overlay.mknod("a/sock", stat.S_IFSOCK | 0o600, 0)
    overlay.mknod("a/empty", stat.S_IFREG | 0o600, 0, uid=65534, gid=65534)  # mknod(2) of a regular file
    overlay.chown("a/pipe", 1000, None)
    overlay.utimens("a/pipe", 1_000_000_000 * 10**9, 1_100_000_000 * 10**9)
    again = reopened(overlay, versions)
    assert again.readlink("a/to-one") == "one.txt"
    link = again.getattr("a/to-one")
    assert stat.S_ISLNK(link["st_mode"]) and link["st_size"] == len("one.txt")
    assert (link["st_uid"], link["st_gid"]) == (65534, 65533)
    pipe = again.getattr("a/pipe")
    assert pipe["st_mode"] == stat.S_IFIFO | 0o640 and (pipe["st_uid"], pipe["st_gid"]) == (1000, 65534)
    assert (pipe["st_atime"], pipe["st_mtime"]) == (1_000_000_000 * 10**9, 1_100_000_000 * 10**9)
    dev = again.getattr("a/dev")
    assert stat.S_ISCHR(dev["st_mode"]) and dev["st_rdev"] == 0x0103
    assert stat.S_ISSOCK(again.getattr("a/sock")["st_mode"])
    assert set(again.readdir("a")) == {"one.txt", "b", "to-one", "pipe", "dev", "sock", "empty"}
    empty = again.getattr("a/empty")
    assert empty["st_mode"] == stat.S_IFREG | 0o600 and empty["st_size"] == 0 and empty["st_uid"] == 65534
    with pytest.raises(OSError) as info:
        again.readlink("a/one.txt")
    assert info.value.errno == errno.EINVAL
    again.rename("a/pipe", "pipe2")
    again.unlink("a/to-one")
    assert stat.S_ISFIFO(again.getattr("pipe2")["st_mode"]) and not again.exists("a/to-one")


def test_a_hard_link_is_one_file_under_two_names(overlay, versions):
    backend = OverlayBackend(overlay)
    overlay.link("a/one.txt", "a/also-one.txt")  # a published file
    backend.write("a/also-one.txt", 0, b"ONE")
    assert backend.read("a/one.txt") == b"ONE"
    overlay.chmod("a/one.txt", 0o600)
    for name in ("a/one.txt", "a/also-one.txt"):
        assert overlay.getattr(name)["st_nlink"] == 2 and overlay.getattr(name)["st_mode"] & 0o777 == 0o600
    again = reopened(overlay, versions)
    assert again.getattr("a/also-one.txt")["st_nlink"] == 2
    again.unlink("a/one.txt")
    assert again.getattr("a/also-one.txt")["st_nlink"] == 1
    assert OverlayBackend(again).read("a/also-one.txt") == b"ONE"  # its staged bytes stay


def test_ctime_moves_on_chmod_chown_rename_link_and_write(overlay):
    overlay.utimens("a/one.txt", 5 * 10**9, 5 * 10**9)
    for change in (lambda: overlay.chmod("a/one.txt", 0o600), lambda: overlay.chown("a/one.txt", 7, 7),
                   lambda: overlay.rename("a/one.txt", "a/uno.txt"), lambda: overlay.link("a/uno.txt", "a/eins.txt"),
                   lambda: OverlayBackend(overlay).write("a/uno.txt", 0, b"x")):
        path = "a/uno.txt" if overlay.exists("a/uno.txt") else "a/one.txt"
        before = overlay.getattr(path)["st_ctime"]
        time.sleep(0.01)
        change()
        assert overlay.getattr("a/uno.txt" if overlay.exists("a/uno.txt") else path)["st_ctime"] > before
    assert overlay.getattr("a/uno.txt")["st_mtime"] > 5 * 10**9  # the write; the rest left it


def test_a_flush_publishes_hard_links_and_symlinks_inside_as_files(overlay, versions):
    overlay.link("a/one.txt", "hard.txt")
    overlay.symlink("soft.txt", "a/one.txt")
    overlay.symlink("a/b/up", "../../a/b")  # a folder that contains it: refused as a loop
    with pytest.raises(RefusedNode, match="a/b/up: symlink to ../../a/b is a loop"):
        flush(overlay, versions)
    overlay.unlink("a/b/up")
    overlay.symlink("tree", "a/b")
    number = flush(overlay, versions)
    published = {e.path: e.checksum for e in versions.versions[number - 1]}
    one = published["a/one.txt"]
    assert published["hard.txt"] == published["soft.txt"] == one
    assert published["tree/two.bin"] == published["a/b/two.bin"]
    # the symlinks stay, standing for what they published as: nothing is pending
    assert stat.S_ISLNK(overlay.getattr("soft.txt")["st_mode"]) and overlay.readlink("tree") == "a/b"
    assert not overlay.pending() and not overlay.journal.has_changes() and not overlay.dirty
    overlay.unlink("soft.txt")
    assert overlay.pending().deleted == ("soft.txt",)
    time.sleep(0.01)
    overlay.symlink("soft.txt", "metadata.yml")  # the same name, now for another file
    assert overlay.journal.has_changes()
    number = flush(overlay, versions)
    assert {e.path: e.checksum for e in versions.versions[number - 1]}["soft.txt"] == published["metadata.yml"]


@pytest.mark.parametrize("make, says", [
    (lambda ov: ov.symlink("out", "../elsewhere.txt"), "symlink to ../elsewhere.txt leads outside"),
    (lambda ov: ov.symlink("out", "/etc/passwd"), "symlink to /etc/passwd leads outside"),
    (lambda ov: ov.symlink("gone", "a/missing.txt"), "dangling symlink (to a/missing.txt"),
    (lambda ov: (ov.symlink("x", "y"), ov.symlink("y", "x")), "is a symlink loop"),
    (lambda ov: ov.mknod("a/pipe", stat.S_IFIFO | 0o644, 0), "a/pipe: not a regular file (a FIFO)"),
    (lambda ov: ov.mknod("dev", stat.S_IFBLK | 0o600, 1), "dev: not a regular file (a block device)"),
    (lambda ov: ov.mknod("sock", stat.S_IFSOCK | 0o600, 0), "sock: not a regular file (a socket)"),
])
def test_a_flush_refuses_what_a_version_cannot_hold_naming_it(overlay, versions, make, says):
    make(overlay)
    before = len(versions.versions)
    with pytest.raises(RefusedNode, match=f"staging/datasets/demo/.*{says.replace('(', '.').replace(')', '.')}"):
        flush(overlay, versions)
    assert len(versions.versions) == before and overlay.dirty


def test_a_folder_links_count_its_subfolders(overlay):
    assert overlay.getattr("a")["st_nlink"] == 3  # a/b
    overlay.mkdir("a/c", 0o755)
    overlay.symlink("a/d", "c")  # not a folder
    assert overlay.getattr("a")["st_nlink"] == 4 and overlay.getattr("a/c")["st_nlink"] == 2


def test_a_folder_symlink_publishes_the_symlinks_inside_it_followed_and_refuses_a_loop(overlay, versions):
    overlay.mkdir("c", 0o755)
    overlay.symlink("c/one", "../a/one.txt")
    overlay.symlink("view", "c")
    number = flush(overlay, versions)
    published = {e.path: e.checksum for e in versions.versions[number - 1]}
    assert published["view/one"] == published["c/one"] == published["a/one.txt"]
    overlay.symlink("c/back", "../d")  # c/back -> d, d/to-c -> c: a loop through two folders, as ingest sees it
    overlay.mkdir("d", 0o755)
    overlay.symlink("d/to-c", "../c")
    with pytest.raises(RefusedNode, match="is a loop"):
        flush(overlay, versions)
