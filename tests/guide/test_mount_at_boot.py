"""Mounting at boot: the guide's /etc/fstab line, through mount(8) and `mount.eotdlfs`, and the
helper's option parsing (a pure function) on its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from eotdlfs.fs.mount import is_mounted, read_status, wait_for_exit
from eotdlfs.fstab import EXIT_USAGE, HelperCall, main, mount_flags, parse_helper_args
from tests.guide.recipes import NAME, recipe, unmount_if_left

SBIN_HELPER = Path("/sbin/mount.eotdlfs")  # where mount(8) looks for the helper of type eotdlfs
MOUNT_TIMEOUT_S = 60


# --- the option parsing ----------------------------------------------------------------------

def test_fstab_options_become_mount_flags() -> None:
    options = "api_url=http://h:8000/,cache_dir=/var/cache/eotdlfs,cache_size=5G,ttl=30,autoflush=60,allow_other"
    assert mount_flags(options) == ["--api-url", "http://h:8000/", "--cache-dir", "/var/cache/eotdlfs",
                                    "--cache-size", "5G", "--ttl", "30", "--autoflush", "60", "--allow-other"]


def test_generic_mount_options_are_ignored() -> None:
    generic = "rw,defaults,noexec,nosuid,nodev,_netdev,nofail,noauto,user,user=alice,x-systemd.automount,comment=x"
    assert mount_flags(generic) == []


@pytest.mark.parametrize("options, message", [
    ("api_url", "needs a value"), ("api_url=", "needs a value"), ("allow_other=1", "takes no value"),
    ("ro", "ro is not supported"), ("api-url=http://h/", "unknown option 'api-url=http://h/'"),
])
def test_bad_options_are_refused_with_the_reason(options: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mount_flags(options)


def test_sloppy_ignores_unknown_options_only() -> None:
    assert mount_flags("api-url=http://h/,ttl=5", sloppy=True) == ["--ttl", "5"]
    with pytest.raises(ValueError, match="needs a value"):
        mount_flags("ttl", sloppy=True)


def test_arguments_as_mount8_passes_them() -> None:
    # what util-linux 2.38 mount(8) passed for the guide's line with `user` added
    argv = ["eotdl", "/mnt/eotdl", "-o", "rw,noexec,nosuid,nodev,api_url=http://h:8000/,allow_other,_netdev,nofail,user"]
    assert parse_helper_args(argv) == HelperCall("/mnt/eotdl", ["--api-url", "http://h:8000/", "--allow-other"])
    assert parse_helper_args(["eotdl", "/m", "-sfnv", "-t", "eotdlfs", "-ottl=5", "-o", "bogus"]) == HelperCall(
        "/m", ["--ttl", "5"], fake=True, verbose=True)


@pytest.mark.parametrize("argv", [["/mnt/eotdl"], ["eotdl", "/m", "extra"], ["eotdl", "/m", "-N", "ns"]])
def test_malformed_calls_are_refused(argv: list[str]) -> None:
    with pytest.raises(ValueError):
        parse_helper_args(argv)


def test_fake_prints_the_mount_command_and_mounts_nothing(capsys, tmp_path: Path) -> None:
    assert main(["eotdl", str(tmp_path), "-f", "-o", "ttl=5,_netdev"]) == 0
    assert capsys.readouterr().err.split() == [sys.executable, "-m", "eotdlfs", "mount", str(tmp_path), "--ttl", "5"]
    assert not is_mounted(tmp_path)
    assert main(["eotdl", str(tmp_path), "-o", "ttl"]) == EXIT_USAGE


# --- the fstab line, mounted by mount(8) -------------------------------------------------------

@pytest.fixture
def sbin_helper() -> Path:
    """/sbin/mount.eotdlfs -> this venv's helper, as the guide has users link it; removed after."""
    if os.geteuid() != 0:
        pytest.skip("mount(8) runs helpers from /sbin only: linking one there needs root")
    if os.path.lexists(SBIN_HELPER):
        pytest.fail(f"{SBIN_HELPER} exists already: move it away to run this test")
    helper = Path(sys.executable).parent / "mount.eotdlfs"
    assert helper.is_file(), f"no {helper}: reinstall (scripts/install.sh) to get the console script"
    SBIN_HELPER.symlink_to(helper)
    try:
        yield SBIN_HELPER
    finally:
        SBIN_HELPER.unlink()


def _mount_line(mountpoint: Path) -> list[str]:
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        return next(line.split() for line in mounts if line.split()[1] == str(mountpoint))


def test_fstab_line_mounts_with_mount_and_unmounts_with_umount(guide_server, s2_tiles, places, sbin_helper,
                                                             tmp_path: Path) -> None:
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    mnt.mkdir()
    fstab = tmp_path / "fstab"  # mount -T: an fstab of our own, the machine's /etc/fstab stays untouched
    fstab.write_text(recipe("fstab", places(mnt, cache)))
    try:
        done = subprocess.run(["mount", "-T", str(fstab), str(mnt)], capture_output=True, text=True,
                              timeout=MOUNT_TIMEOUT_S, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr
        _, _, fstype, options, *_ = _mount_line(mnt)
        assert fstype == "fuse.eotdlfs" and "allow_other" in options.split(","), (fstype, options)
        labels = mnt / "datasets" / NAME / "v1" / "labels.csv"
        assert labels.read_bytes() == (s2_tiles.v1 / "labels.csv").read_bytes()  # from api_url
        assert (cache / "mount.log").is_file()  # cache_dir
        pid = int(read_status(mnt)["pid"])
        done = subprocess.run(["umount", str(mnt)], capture_output=True, text=True, timeout=MOUNT_TIMEOUT_S)
        assert done.returncode == 0, done.stderr
        assert not is_mounted(mnt)
        assert wait_for_exit(pid, 15), "the mount process outlived umount"
    finally:
        unmount_if_left(mnt)
