"""Symlinks, hard links and FIFOs in staging on a real mount: `cp -a`, `ln`, `mkfifo`, `tar x` keep them as a
disk does, through a remount; a flush publishes them as `eotdlfs ingest` of the same local folder would."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

from tests.client.helpers import cli_env, make_folder, run_cli, write_metadata
from tests.staging.test_mount_staging import KIND, flush_cli, sha1_tree, staged, version_files


def run(*command: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{command}: {done.stderr}"


def followed_tree(folder: Path) -> dict[str, str]:
    """SHA-1 of every file below FOLDER, symlinks followed (as `sha1_tree` of a version has them)."""
    return {os.path.relpath(os.path.join(top, f), folder): hashlib.sha1(Path(top, f).read_bytes()).hexdigest()
            for top, _, files in os.walk(folder, followlinks=True) for f in files}


def linked_tree(folder: Path, name: str) -> Path:
    """A dataset folder holding a symlink to a file, one to a folder, and a hard link, all inside it."""
    make_folder(folder, name, 6)
    os.symlink("part0/file0000.txt", folder / "soft.txt")
    os.symlink("../part1", folder / "part0" / "to-part1")
    os.link(folder / "part2" / "file0002.txt", folder / "part2" / "hard.txt")
    return folder


def test_cp_a_of_links_keeps_them_and_a_flush_publishes_what_ingest_publishes(tmp_path, repo_server,
                                                                              mount_factory, unique_name):
    name, twin = unique_name("links"), unique_name("twin")
    mount = mount_factory(repo_server, ttl=1)
    source = linked_tree(tmp_path / "src", name)
    target = staged(mount, name)
    target.mkdir()
    run("cp", "-a", f"{source}/.", str(target))
    assert os.readlink(target / "soft.txt") == "part0/file0000.txt"
    assert stat.S_ISLNK(os.lstat(target / "part0" / "to-part1").st_mode)
    assert (target / "part0" / "to-part1" / "file0001.txt").read_bytes() == (source / "part1" / "file0001.txt").read_bytes()
    # (the first name's cached attributes lag: libfuse 2 gives each name an inode of its own)
    assert os.stat(target / "part2" / "hard.txt").st_nlink == 2
    result = flush_cli(tmp_path, repo_server, target)
    assert result.returncode == 0, result.stderr
    twin_folder = tmp_path / "twin"
    shutil.copytree(source, twin_folder, symlinks=True)
    write_metadata(twin_folder, twin)
    assert run_cli(cli_env(tmp_path, repo_server.url, repo_server.token("alice")), "ingest",
                   str(twin_folder)).returncode == 0
    ours, theirs = version_files(repo_server, name, 1), version_files(repo_server, twin, 1)
    del ours["metadata.yml"], theirs["metadata.yml"]
    assert ours == theirs and "part0/to-part1/file0001.txt" in ours and ours["soft.txt"] == ours["part0/file0000.txt"]
    # staging keeps the symlinks, standing for what they published as: nothing is left to flush
    assert (target / "soft.txt").is_symlink() and followed_tree(target) == sha1_tree(mount.path / KIND / name / "v1")
    assert "nothing to flush" in flush_cli(tmp_path, repo_server, target).stdout


def test_ln_mkfifo_and_tar_x_keep_nodes_through_a_remount(tmp_path, repo_server, mount_factory, unique_name):
    name = unique_name("nodes")
    mount = mount_factory(repo_server, ttl=1, cache_dir=tmp_path / "nodes-cache")
    target = staged(mount, name)
    target.mkdir()
    write_metadata(target, name)
    (target / "data.txt").write_text("data\n")
    run("ln", str(target / "data.txt"), str(target / "data-hard.txt"))
    run("ln", "-s", "data.txt", str(target / "data-soft.txt"))
    run("mkfifo", "-m", "0640", str(target / "pipe"))
    os.mknod(target / "by-mknod.txt", stat.S_IFREG | 0o600)  # mknod(2) of a regular file: an empty file
    os.chown(target / "pipe", 65534, 65534)
    with open(target / "data-hard.txt", "a") as f:  # writing through one name is seen through the other
        f.write("more\n")
    packed = tmp_path / "packed"
    packed.mkdir()
    (packed / "f.txt").write_text("in a tar\n")
    os.symlink("f.txt", packed / "s")
    os.link(packed / "f.txt", packed / "h.txt")
    os.mkfifo(packed / "p")
    with tarfile.open(tmp_path / "nodes.tar", "w") as tar:
        tar.add(packed, arcname="tarred")
    run("tar", "xf", str(tmp_path / "nodes.tar"), "-C", str(target))
    mtime = os.stat(target / "data.txt").st_mtime_ns
    run("touch", "-a", "-d", "@1000000000", str(target / "data.txt"))  # utimensat with UTIME_OMIT for the mtime
    mount.unmount()
    mount.mount()
    assert (os.stat(target / "data.txt").st_atime, os.stat(target / "data.txt").st_mtime_ns) == (1_000_000_000, mtime)
    assert (target / "data.txt").read_text() == "data\nmore\n" and os.stat(target / "data.txt").st_nlink == 2
    assert os.readlink(target / "data-soft.txt") == "data.txt" and os.readlink(target / "tarred" / "s") == "f.txt"
    assert os.stat(target / "tarred" / "h.txt").st_nlink == 2
    pipe = os.lstat(target / "pipe")
    assert stat.S_ISFIFO(pipe.st_mode) and stat.S_IMODE(pipe.st_mode) == 0o640 and pipe.st_uid == 65534
    assert stat.S_ISFIFO(os.lstat(target / "tarred" / "p").st_mode)
    assert os.stat(target / "by-mknod.txt").st_mode == stat.S_IFREG | 0o600
    # a FIFO makes a flush refuse, naming it, as `eotdlfs ingest` refuses a local folder holding one
    result = flush_cli(tmp_path, repo_server, target)
    assert result.returncode == 1 and f"{name}/pipe: not a regular file (a FIFO)" in result.stderr, result.stderr
    local = tmp_path / "local"
    write_metadata(local, unique_name("local"))
    os.mkfifo(local / "pipe")
    refused = run_cli(cli_env(tmp_path, repo_server.url, repo_server.token("alice")), "ingest", str(local))
    assert refused.returncode == 1 and "pipe: not a regular file" in refused.stderr, refused.stderr
    os.unlink(target / "pipe")
    os.unlink(target / "tarred" / "p")
    os.symlink("../elsewhere.txt", target / "out")  # and a symlink leading out of the record, as ingest does
    result = flush_cli(tmp_path, repo_server, target)
    assert result.returncode == 1 and f"{name}/out: symlink to ../elsewhere.txt leads outside" in result.stderr, \
        result.stderr
    os.unlink(local / "pipe")
    (tmp_path / "elsewhere.txt").write_text("outside\n")
    os.symlink("../elsewhere.txt", local / "out")
    refused = run_cli(cli_env(tmp_path, repo_server.url, repo_server.token("alice")), "ingest", str(local))
    assert refused.returncode == 1 and "out: symlink to ../elsewhere.txt" in refused.stderr, refused.stderr
    os.unlink(target / "out")
    result = flush_cli(tmp_path, repo_server, target)
    assert result.returncode == 0, result.stderr
    published = version_files(repo_server, name, 1)
    assert published["data-hard.txt"] == published["data-soft.txt"] == published["data.txt"]
    assert published["tarred/s"] == published["tarred/h.txt"] == published["tarred/f.txt"]


def test_one_flush_names_every_node_a_version_cannot_hold(tmp_path, repo_server, mount_factory, unique_name):
    """`tar x` of an archive with a FIFO, a dangling symlink and one leading out: the refused flush names all
    three, so the user fixes them in one go (not one flush per node)."""
    name = unique_name("allnodes")
    mount = mount_factory(repo_server, ttl=1)
    packed = tmp_path / "packed"
    write_metadata(packed, name)
    (packed / "f.txt").write_text("kept\n")
    os.mkfifo(packed / "pipe")
    os.symlink("gone.txt", packed / "dangling")
    os.symlink("/etc/hostname", packed / "outside")
    with tarfile.open(tmp_path / "nodes.tar", "w") as tar:
        tar.add(packed, arcname=".")
    target = staged(mount, name)
    target.mkdir()
    run("tar", "xf", str(tmp_path / "nodes.tar"), "-C", str(target))
    result = flush_cli(tmp_path, repo_server, target)
    assert result.returncode == 1, result.stderr
    for refused in ("pipe: not a regular file (a FIFO)", "dangling: dangling symlink", "outside: symlink to /etc/hostname"):
        assert f"{name}/{refused}" in result.stderr, result.stderr
    for node in ("pipe", "dangling", "outside"):
        os.unlink(target / node)
    assert flush_cli(tmp_path, repo_server, target).returncode == 0


def test_a_staged_node_keeps_its_inode_through_a_rename_and_shares_it_with_its_hard_links(tmp_path, repo_server,
                                                                                          mount_factory, unique_name):
    """As on a disk: `cp -a`, `tar` and `rsync -H` find hard links by inode, `find` and `du` tell folders
    apart by it. (Each name of a hard link showed a number of its own.)"""
    name = unique_name("inodes")
    mount = mount_factory(repo_server, ttl=1)
    target = staged(mount, name)
    target.mkdir()
    write_metadata(target, name)
    (target / "sub").mkdir()
    (target / "sub" / "data.txt").write_text("data\n")
    run("ln", str(target / "sub" / "data.txt"), str(target / "hard.txt"))
    number = os.stat(target / "sub" / "data.txt").st_ino
    folder = os.stat(target / "sub").st_ino
    assert os.stat(target / "hard.txt").st_ino == number
    run("mv", str(target / "sub"), str(target / "moved"))
    assert os.stat(target / "moved").st_ino == folder
    assert os.stat(target / "moved" / "data.txt").st_ino == number
    run("mv", str(target / "hard.txt"), str(target / "hard-moved.txt"))
    assert os.stat(target / "hard-moved.txt").st_ino == number
    numbers = [os.lstat(path).st_ino for path in (target, target / "metadata.yml", target / "moved")]
    assert len(set(numbers + [number])) == 4
