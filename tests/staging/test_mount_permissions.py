"""`--allow-other`: another local user, as the kernel sees them (uid 65534), against the mount's user (root here).

The mount point lives under a 0755 folder in /tmp (pytest's tmp dirs are 0700: nobody else could
reach a mount there), made and removed by the `shared_mountpoint` fixture (conftest.py).
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from eotdlfs.fs.staging.control import FLUSH_XATTR
from tests.staging.test_mount_staging import KIND, publish_and_mount, published_versions, staged

OTHER_UID = 65534  # nobody, on every Debian
PUBLISHED_FILE = "part0/file0000.txt"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="acting as another user needs root")


def as_other(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", f"--reuid={OTHER_UID}", f"--regid={OTHER_UID}", "--clear-groups", *command],
                          capture_output=True, text=True, timeout=30, cwd="/")


def refused(*command: str) -> bool:
    """True when COMMAND, run as the other user, fails on a permission check."""
    done = as_other(*command)
    return done.returncode != 0 and "Permission denied" in done.stderr


def other_flushes(folder: Path) -> subprocess.CompletedProcess:
    """What `eotdlfs flush` does first-hand: set the flush attribute on the record folder."""
    code = "import os, sys; os.setxattr(sys.argv[1], sys.argv[2], b'1')"
    return as_other("/usr/bin/python3", "-c", code, str(folder), FLUSH_XATTR)


@pytest.fixture
def shared_mount(shared_mountpoint, tmp_path, repo_server, unique_name, mount_factory):
    """A dataset published as v1, mounted with --allow-other where the other user can reach it; (mount, name)."""
    name = unique_name("perm")
    mount, _ = publish_and_mount(tmp_path, repo_server, mount_factory, name, 3, extra_args=("--allow-other",),
                                 path=shared_mountpoint)
    return mount, name


def test_allow_other_holds_mode_bits_for_another_user(shared_mount):
    mount, name = shared_mount
    record = staged(mount, name)
    (record / "private").mkdir(mode=0o700)
    (record / "open").mkdir()
    (record / "open").chmod(0o777)
    (record / "secret.txt").write_text("the owner's only\n")
    (record / "secret.txt").chmod(0o600)
    assert (record / "metadata.yml").stat().st_mode & 0o777 == 0o644

    assert refused("touch", str(record / "part0" / "new.txt"))  # a 0755 staged folder
    assert refused("rm", "-f", str(record / PUBLISHED_FILE))
    assert refused("sh", "-c", f"echo 'name: stolen' >> '{record / 'metadata.yml'}'")
    assert refused("cat", str(record / "secret.txt"))
    assert refused("touch", str(record / "private" / "new.txt"))
    assert refused("mkdir", str(mount.path / "staging" / KIND / "taken-over"))
    assert (record / PUBLISHED_FILE).exists() and "stolen" not in (record / "metadata.yml").read_text()

    published = mount.path / KIND / name / "v1" / PUBLISHED_FILE
    for readable in (published, record / PUBLISHED_FILE):
        done = as_other("cat", str(readable))
        assert done.returncode == 0 and done.stdout == published.read_text(), done.stderr

    sub, mine = record / "open" / "sub", record / "open" / "sub" / "mine.txt"
    done = as_other("sh", "-c", f"mkdir '{sub}' && echo mine > '{mine}'")
    assert done.returncode == 0, done.stderr
    for made in (sub, mine):
        assert (made.stat().st_uid, made.stat().st_gid) == (OTHER_UID, OTHER_UID)
    assert as_other("sh", "-c", f"echo more >> '{mine}'").returncode == 0
    mount.remount()  # the journal keeps who made each node
    assert mine.read_text() == "mine\nmore\n" and mine.stat().st_uid == OTHER_UID


def test_only_the_mount_user_can_flush(shared_mount):
    mount, name = shared_mount
    record = staged(mount, name)
    (record / "added.txt").write_text("staged by the owner\n")
    run_before = mount.status()["staging"]["records"][0]

    assert "Permission denied" in other_flushes(record).stderr  # the kernel: the record folder is 0755
    record.chmod(0o777)  # even a folder the owner opened to all: the flush publishes with the owner's token
    assert "Permission denied" in other_flushes(record).stderr
    assert mount.status()["staging"]["records"][0] == run_before
    assert published_versions(mount.server, name) == [1]


def test_chown_gives_a_staged_folder_to_another_user(shared_mount):
    """As on a disk (`tar x` and `rsync -a` as root set owners): the kernel then lets the new owner write there."""
    mount, name = shared_mount
    given, kept = staged(mount, name) / "given", staged(mount, name) / "kept.txt"
    given.mkdir()
    kept.write_text("mine\n")
    assert refused("touch", str(given / "new.txt"))
    os.chown(given, OTHER_UID, OTHER_UID)
    os.chown(kept, -1, OTHER_UID)  # the group only
    done = as_other("touch", str(given / "new.txt"))
    assert done.returncode == 0, done.stderr
    mount.remount()  # owners are kept in the journal
    assert (given.stat().st_uid, given.stat().st_gid) == (OTHER_UID, OTHER_UID)
    assert (kept.stat().st_uid, kept.stat().st_gid) == (os.getuid(), OTHER_UID)
    assert (given / "new.txt").stat().st_uid == OTHER_UID


def test_nodes_another_user_makes_are_theirs_and_sticky_folders_hold(shared_mount):
    """Symlinks, FIFOs and hard links made by another user in a folder open to all: owned by that user
    (symlink, FIFO) or by the file's owner (a hard link); in a sticky folder only the owner removes them."""
    mount, name = shared_mount
    shared = staged(mount, name) / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    (shared / "root.txt").write_text("root's\n")
    (shared / "root.txt").chmod(0o644)
    done = as_other("sh", "-c", f"cd '{shared}' && ln -s root.txt soft && mkfifo pipe && echo x > own.txt"
                                " && ln own.txt hard")
    assert done.returncode == 0, done.stderr
    for made in ("soft", "pipe", "hard"):
        st = os.lstat(shared / made)
        assert (st.st_uid, st.st_gid) == (OTHER_UID, OTHER_UID), made
    assert stat.S_ISLNK(os.lstat(shared / "soft").st_mode) and stat.S_ISFIFO(os.lstat(shared / "pipe").st_mode)
    done = as_other("rm", "-f", str(shared / "root.txt"))  # sticky: not theirs
    assert "Operation not permitted" in done.stderr and (shared / "root.txt").exists(), done.stderr
    assert as_other("rm", str(shared / "pipe")).returncode == 0
