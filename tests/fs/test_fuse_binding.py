"""The FUSE binding: mfusepy on libfuse 3 by default (1 MiB read requests, READDIRPLUS), fusepy on
libfuse 2 as the fallback (`EOTDLFS_FUSE=2|3` forces one); the mount works on both."""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import subprocess
import sys

import pytest

from eotdlfs.fs import fuse_binding
from tests.fs.datasets import ingest, ingest_one_file, make_folder, tree_digest
from tests.staging.test_mount_staging import flush_cli, staged, version_files

MIB = 1 << 20


def loaded_binding(forced: str | None) -> subprocess.CompletedProcess:
    """Which binding and libfuse a fresh process loads with EOTDLFS_FUSE=FORCED (unset: None)."""
    env = {k: v for k, v in os.environ.items() if k != fuse_binding.FUSE_ENV}
    if forced is not None:
        env[fuse_binding.FUSE_ENV] = forced
    return subprocess.run([sys.executable, "-c", "from eotdlfs.fs import fuse_binding as b; "
                           "print(b.BINDING, b.LIBFUSE)"], env=env, capture_output=True, text=True, timeout=60)


def test_libfuse_3_is_the_default_binding_where_installed():
    assert loaded_binding(None).stdout.split() == ["mfusepy", "3"]


@pytest.mark.parametrize("forced, loaded", [("2", ["fuse", "2"]), ("3", ["mfusepy", "3"])])
def test_eotdlfs_fuse_forces_a_binding(forced, loaded):
    assert loaded_binding(forced).stdout.split() == loaded


def test_an_unknown_binding_is_refused_naming_the_choices():
    result = loaded_binding("4")
    assert result.returncode != 0 and "use 2 (fusepy, libfuse 2) or 3 (mfusepy, libfuse 3)" in result.stderr


def read_1_mib_at_a_time(path, direct: bool) -> bytes:
    """PATH read start to end in 1 MiB reads (O_DIRECT into a page-aligned buffer when DIRECT)."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECT if direct else 0))
    try:
        with mmap.mmap(-1, MIB) as buffer:
            parts, offset = [], 0
            while n := os.preadv(fd, [buffer], offset):
                parts.append(buffer[:n])
                offset += n
            return b"".join(parts)
    finally:
        os.close(fd)


@pytest.mark.parametrize("direct, read_ahead_kb", [
    (True, None),
    pytest.param(False, "1024", marks=pytest.mark.skipif(os.geteuid() != 0, reason="the read-ahead is root's")),
])
def test_reads_reach_the_mount_in_1_mib_requests(tmp_path, repo_server, mount_factory, unique_name, monkeypatch,
                                                 direct, read_ahead_kb):
    """libfuse 3 negotiates max_pages: 8x fewer callbacks per GiB than libfuse 2's 128 KiB requests,
    for direct I/O, and for buffered reads once the mount's read-ahead is raised (root only)."""
    if read_ahead_kb:
        monkeypatch.setenv("EOTDLFS_FUSE_READ_AHEAD_KB", read_ahead_kb)
    name = unique_name("mib")
    data = ingest_one_file(repo_server, tmp_path / "src", name, "big.bin", 8 * MIB)
    mount = mount_factory(repo_server)
    assert read_1_mib_at_a_time(mount.path / "datasets" / name / "v1" / "big.bin", direct) == data
    fuse = mount.status()["fuse"]
    assert (fuse["binding"], fuse["libfuse"], fuse["largest_read"]) == ("mfusepy", 3, MIB), fuse


def test_buffered_reads_keep_the_kernels_read_ahead_by_default(tmp_path, repo_server, mount_factory, unique_name):
    """1 MiB buffered requests made cold reads slower here (docs/benchmarks.md): not the default."""
    name = unique_name("ra")
    data = ingest_one_file(repo_server, tmp_path / "src", name, "big.bin", 4 * MIB)
    mount = mount_factory(repo_server)
    assert read_1_mib_at_a_time(mount.path / "datasets" / name / "v1" / "big.bin", direct=False) == data
    assert mount.status()["fuse"]["largest_read"] == 128 << 10


def fuse_status(mount) -> dict:
    """The mount's status.json in one read request. `Path.read_text` takes one more when the
    file grew between its stat and its read (a counter gaining a digit), which made counts of
    requests taken around it flaky."""
    fd = os.open(mount.path / ".eotdlfs" / "status.json", os.O_RDONLY)
    try:
        return json.loads(os.read(fd, MIB))["fuse"]
    finally:
        os.close(fd)


def test_a_warm_re_read_asks_the_mount_for_nothing(tmp_path, repo_server, mount_factory, unique_name):
    """Published bytes never change: kept pages (keep_cache) and attributes (60 s) serve a file
    read again, through new opens, without a single read request reaching the mount."""
    name = unique_name("warm")
    data = ingest_one_file(repo_server, tmp_path / "src", name, "big.bin", 8 * MIB)
    mount = mount_factory(repo_server)
    path = mount.path / "datasets" / name / "v1" / "big.bin"
    before = fuse_status(mount)
    assert read_1_mib_at_a_time(path, direct=False) == data
    cold = fuse_status(mount)
    assert cold["reads"] - before["reads"] > 8 and cold["read_bytes"] - before["read_bytes"] >= 8 * MIB
    assert fuse_status(mount)["reads"] - cold["reads"] == 1  # status.json's own read
    for _ in range(3):
        assert read_1_mib_at_a_time(path, direct=False) == data
    assert fuse_status(mount)["reads"] - cold["reads"] == 2


def test_ls_l_of_a_fresh_folder_asks_no_attributes_per_file(tmp_path, repo_server, mount_factory, unique_name):
    """READDIRPLUS: the listing carries every entry's attributes, which the kernel keeps."""
    name = unique_name("plus")
    folder = tmp_path / "src"
    make_folder(folder, name)
    for i in range(300):
        (folder / "many" / f"f{i:03}.txt").parent.mkdir(exist_ok=True)
        (folder / "many" / f"f{i:03}.txt").write_text(f"{i}\n")
    ingest(repo_server, folder)
    mount = mount_factory(repo_server)
    before = mount.status()["fuse"]["getattr"]
    listed = subprocess.run(["ls", "-l", str(mount.path / "datasets" / name / "v1" / "many")],
                            capture_output=True, text=True, timeout=60, check=True)
    assert len(listed.stdout.splitlines()) == 301
    assert mount.status()["fuse"]["getattr"] - before < 30


def test_the_other_binding_mounts_lists_reads_and_flushes(tmp_path, repo_server, mount_factory, unique_name,
                                                          monkeypatch):
    """The fallback binding (fusepy on libfuse 2): mount, ls, read, sha1sum, a staged write, flush, unmount."""
    monkeypatch.setenv(fuse_binding.FUSE_ENV, "2")
    name = unique_name("fb")
    source = make_folder(tmp_path / "src", name)
    ingest(repo_server, source)
    mount = mount_factory(repo_server, ttl=1)
    assert mount.status()["fuse"]["binding"] == "fuse"
    version = mount.path / "datasets" / name / "v1"
    assert "big.bin" in subprocess.run(["ls", "-lR", str(version)], capture_output=True, text=True,
                                       timeout=60, check=True).stdout
    digests = tree_digest(source)
    summed = subprocess.run(["sha1sum", "images/2023/big.bin", "labels.csv"], cwd=version, capture_output=True,
                            text=True, timeout=60, check=True).stdout.split()
    assert summed[0::2] == [digests["images/2023/big.bin"], digests["labels.csv"]]
    assert tree_digest(version) == digests
    added = staged(mount, name) / "added.txt"
    added.write_bytes(b"written through libfuse 2\n")
    subprocess.run(["touch", "-m", "-d", "@1000000000", str(added)], check=True, timeout=30)  # UTIME_OMIT atime
    assert added.stat().st_mtime == 1000000000
    result = flush_cli(tmp_path, repo_server, staged(mount, name))
    assert result.returncode == 0, result.stdout + result.stderr
    assert version_files(repo_server, name, 2)["added.txt"] == hashlib.sha1(b"written through libfuse 2\n").hexdigest()
    mount.unmount()
    assert not os.path.ismount(mount.path)


class NoOperations:
    use_ns = True  # as the mount's: the bindings warn about float times otherwise


def test_a_mount_libfuse_refuses_is_an_error_in_words(tmp_path, capfd):
    """fuse_main gives a bare code (the CLI printed `error: 4`): it becomes an OSError naming the
    mount point, after the reason libfuse wrote to stderr."""
    missing = tmp_path / "gone" / "mnt"
    said = f"^\\[Errno 5\\] libfuse could not serve {missing}.* \\(its reason is what it wrote before"
    with pytest.raises(OSError, match=said):
        fuse_binding.run_fuse(NoOperations(), str(missing), "http://127.0.0.1:1/")
    assert f"bad mount point `{missing}'" in capfd.readouterr().err


def test_no_fuse_device_is_refused_saying_what_to_do(tmp_path):
    with pytest.raises(OSError, match=r"fuse does not exist: FUSE is not available here .*--device /dev/fuse"):
        fuse_binding.check_can_mount(False, device=str(tmp_path / "fuse"))


def test_a_fuse_device_this_user_cannot_open_is_refused_saying_so(tmp_path, monkeypatch):
    device = tmp_path / "fuse"
    device.touch(mode=0o600)
    fuse_binding.check_can_mount(False, device=str(device))
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # root opens anything: the refusal is injected
    with pytest.raises(OSError, match=r"fuse cannot be opened by this user, .*readable and writable .*eotdl://"):
        fuse_binding.check_can_mount(False, device=str(device))


@pytest.mark.parametrize("conf_text, allowed", [
    (None, False), ("", False), ("#user_allow_other\n", False), ("mount_max = 1000\nuser_allow_other  # yes\n", True),
])
def test_allow_other_for_a_user_needs_user_allow_other_in_fuse_conf(tmp_path, monkeypatch, conf_text, allowed):
    """fusermount refuses -o allow_other to users unless /etc/fuse.conf says `user_allow_other`
    (the mount printed `error: 4`); root may always."""
    device, conf = tmp_path / "fuse", tmp_path / "fuse.conf"
    device.touch()
    if conf_text is not None:
        conf.write_text(conf_text)
    fuse_binding.check_can_mount(True, str(device), str(conf))  # as root
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    fuse_binding.check_can_mount(False, str(device), str(conf))
    if allowed:
        fuse_binding.check_can_mount(True, str(device), str(conf))
    else:
        with pytest.raises(OSError, match=f"^\\[Errno 1\\] --allow-other needs `user_allow_other` in {conf} "):
            fuse_binding.check_can_mount(True, str(device), str(conf))
