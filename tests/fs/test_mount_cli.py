"""`eotdlfs mount` (backgrounded), `eotdlfs status`, `eotdlfs umount`, and a stale mount after kill -9."""

from __future__ import annotations

import contextlib
import json
import shutil
import os
import re
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from eotdlfs.fs.block_cache import BlockCache
from eotdlfs.fs.mount import fusermount, is_mounted, is_stale, stop_process, wait_for_exit
from tests.conftest import _free_port as free_port
from tests.fs.datasets import ingest, make_folder


def eotdlfs(*args, env=None, timeout=60, cwd=None):
    return subprocess.run([sys.executable, "-m", "eotdlfs", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd)


@pytest.fixture
def mountpoint(tmp_path):
    path = tmp_path / "mnt"  # not made here: `eotdlfs mount` creates a missing mount point
    pids: list[int] = []
    try:
        yield path, pids
    finally:
        if is_mounted(path) and fusermount(path).returncode != 0:
            fusermount(path, lazy=True)
        for pid in pids:
            if not wait_for_exit(pid, 5):
                stop_process(pid)
        if is_mounted(path) or is_stale(path):
            fusermount(path, lazy=True)


def _child_named(pid: int, comm: str) -> int:
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat_file.read_text().rpartition(")")
            if fields[0].endswith("(" + comm) and int(fields[2].split()[1]) == pid:
                return int(stat_file.parent.name)
    raise LookupError(f"no {comm} child of {pid}")


def test_killed_mount_is_stale_at_once_and_remounts(repo_server, unique_name, tmp_path, mountpoint):
    """A crashed mount is stale as soon as its process is gone, not only once libfuse's
    auto_unmount helper has run (here held stopped): a stat of MNT is answered from the kernel's
    attribute cache for a minute, so it cannot tell; `eotdlfs mount` then clears and remounts."""
    mnt, pids = mountpoint
    name = unique_name("cli")
    ingest(repo_server, make_folder(tmp_path / "src", name))
    env = {**os.environ, "EOTDL_TOKEN": repo_server.token("alice")}
    args = ["mount", str(mnt), "--api-url", repo_server.url, "--cache-dir", str(tmp_path / "cache")]
    assert eotdlfs(*args, env=env).returncode == 0
    pid = json.loads((mnt / ".eotdlfs" / "status.json").read_text())["pid"]
    pids.append(pid)
    helper = _child_named(pid, "fusermount3")
    os.kill(helper, signal.SIGSTOP)
    try:
        os.stat(mnt)  # the root's attributes are cached now
        os.kill(pid, signal.SIGKILL)
        assert wait_for_exit(pid, 10)
        assert is_mounted(mnt) and is_stale(mnt)
        done = eotdlfs(*args, env=env)
        assert done.returncode == 0, done.stderr
        pids.append(json.loads((mnt / ".eotdlfs" / "status.json").read_text())["pid"])
        assert (mnt / "datasets" / name / "v1").is_dir()
    finally:
        os.kill(helper, signal.SIGCONT)
    assert eotdlfs("umount", str(mnt)).returncode == 0


def test_background_mount_status_umount_and_stale_cleanup(repo_server, unique_name, tmp_path, mountpoint):
    mnt, pids = mountpoint
    name = unique_name("cli")
    source = make_folder(tmp_path / "src", name)
    ingest(repo_server, source)
    env = {**os.environ, "EOTDL_TOKEN": repo_server.token("alice")}
    args = ["mount", str(mnt), "--api-url", repo_server.url, "--cache-dir", str(tmp_path / "cache"),
            "--cache-size", "1G"]
    done = eotdlfs(*args, env=env)
    assert done.returncode == 0, done.stderr
    status = json.loads((mnt / ".eotdlfs" / "status.json").read_text())
    pids.append(status["pid"])
    assert (mnt / "datasets" / name / "v1" / "labels.csv").read_bytes() == (source / "labels.csv").read_bytes()
    # a failed mount shows the log's last lines: a healthy one holds no alarm (libfuse 3.14 wrote
    # one at every start, about a thread limit nobody set)
    log_lines = (tmp_path / "cache" / "mount.log").read_text().splitlines()
    assert log_lines and all(re.match(r"\d{4}-\d\d-\d\d [\d:,]+ INFO ", line) for line in log_lines), log_lines

    shown = eotdlfs("status", str(mnt))
    assert shown.returncode == 0 and "reachable: yes" in shown.stdout and "hit rate" in shown.stdout
    raw = json.loads(eotdlfs("status", str(mnt), "--json").stdout)
    assert raw["cache"]["size_limit"] == 1 << 30 and raw["fetch"]["bytes_fetched"] > 0

    again = eotdlfs(*args, env=env)
    assert again.returncode == 1 and "already mounted" in again.stderr

    os.kill(status["pid"], signal.SIGKILL)  # a crashed mount leaves a dead endpoint behind
    wait_for_exit(status["pid"], 10)
    # auto_unmount's fusermount(3) unmounts a moment after the process is gone; until then a
    # stat may still be answered from the kernel's attribute cache
    deadline = time.monotonic() + 10
    while is_mounted(mnt) and not is_stale(mnt) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert is_stale(mnt) or not is_mounted(mnt)
    done = eotdlfs(*args, env=env)
    assert done.returncode == 0, done.stderr
    pids.append(json.loads((mnt / ".eotdlfs" / "status.json").read_text())["pid"])
    assert (mnt / "datasets" / name / "v1" / "labels.csv").read_bytes() == (source / "labels.csv").read_bytes()

    done = eotdlfs("umount", str(mnt))
    assert done.returncode == 0, done.stderr
    assert not is_mounted(mnt)
    assert wait_for_exit(pids[-1], 1)
    missing = eotdlfs("umount", str(mnt))
    assert missing.returncode == 1 and "not mounted" in missing.stderr


def test_mount_source_is_the_repository_url(repo_server, tmp_path, mountpoint):
    """`mount`, `df` and `findmnt` show where the files come from, as sshfs's `user@host:`. The
    source was "eotdlfs", which `mount` took for a relative path: run next to a folder of that
    name, it listed CWD/eotdlfs."""
    mnt, pids = mountpoint
    cwd = tmp_path / "work"
    (cwd / "eotdlfs").mkdir(parents=True)
    env = {**os.environ, "EOTDL_TOKEN": repo_server.token("alice"), "PYTHONPATH": os.getcwd()}
    done = eotdlfs("mount", str(mnt), "--api-url", repo_server.url, "--cache-dir", str(tmp_path / "cache"),
                   env=env, cwd=cwd)
    assert done.returncode == 0, done.stderr
    pids.append(json.loads((mnt / ".eotdlfs" / "status.json").read_text())["pid"])

    def shown(*command: str) -> str:
        return subprocess.run(command, capture_output=True, text=True, timeout=10, cwd=cwd).stdout

    assert f"{repo_server.url} on {mnt} type fuse.eotdlfs " in shown("mount", "-t", "fuse.eotdlfs")
    assert shown("findmnt", "-n", "-o", "SOURCE,FSTYPE", "--mountpoint", str(mnt)).split() == \
        [repo_server.url, "fuse.eotdlfs"]
    assert shown("df", "--output=source", str(mnt)).split()[-1] == repo_server.url
    assert eotdlfs("umount", str(mnt)).returncode == 0


def test_mount_cleans_a_dead_mount_left_by_a_killed_process(repo_server, tmp_path, mountpoint):
    """A FUSE process killed without auto_unmount leaves 'Transport endpoint is not connected'."""
    mnt, pids = mountpoint
    mnt.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "import sys; from fuse import FUSE, Operations; "
                             "FUSE(Operations(), sys.argv[1], foreground=True)", str(mnt)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pids.append(dead.pid)
    deadline = time.monotonic() + 20
    while not is_mounted(mnt) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert is_mounted(mnt)
    dead.kill()
    dead.wait(10)
    assert is_stale(mnt)
    env = {**os.environ, "EOTDL_TOKEN": repo_server.token("alice")}
    done = eotdlfs("mount", str(mnt), "--api-url", repo_server.url, "--cache-dir", str(tmp_path / "cache"), env=env)
    assert done.returncode == 0, done.stderr
    pids.append(json.loads((mnt / ".eotdlfs" / "status.json").read_text())["pid"])
    assert not is_stale(mnt) and "datasets" in os.listdir(mnt)


def open_to_others(folder) -> list[str]:
    """Every path under FOLDER (itself included) with a group or other permission bit; a path
    that vanishes meanwhile (SQLite's -shm, a block evicted) is skipped."""
    found = []
    for path in [folder, *folder.rglob("*")]:
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            continue
        if mode & 0o077 and not stat.S_ISLNK(mode):
            found.append(f"{path.relative_to(folder)} {stat.S_IMODE(mode):o}")
    return found


def test_cache_dir_is_private_to_the_mount_user(repo_server, unique_name, tmp_path, mountpoint):
    """Block cache, listings, mount.log, staging journal and staged files: no group/other bit,
    under a umask that would give them, and an older cache open to all is closed at the next mount."""
    mnt, pids = mountpoint
    name = unique_name("priv")
    source = make_folder(tmp_path / "src", name)
    ingest(repo_server, source)
    cache = tmp_path / "cache"
    env = {**os.environ, "EOTDL_TOKEN": repo_server.token("alice")}
    args = ["mount", str(mnt), "--api-url", repo_server.url, "--cache-dir", str(cache)]

    def mount_and_use(written: str) -> None:
        umask = os.umask(0o022)
        try:
            done = eotdlfs(*args, env=env)
        finally:
            os.umask(umask)
        assert done.returncode == 0, done.stderr
        pids.append(json.loads((mnt / ".eotdlfs" / "status.json").read_text())["pid"])
        published = mnt / "datasets" / name / "v1" / "images" / "2023" / "big.bin"
        assert published.read_bytes() == (source / "images" / "2023" / "big.bin").read_bytes()
        record = mnt / "staging" / "datasets" / name
        (record / "new").mkdir(exist_ok=True)
        (record / "new" / written).write_bytes(b"not yet published\n" * 100)
        with open(record / "labels.csv", "a") as labels:  # a copy-up
            labels.write("99,z\n")

    mount_and_use("first.txt")
    assert {p.name for p in cache.iterdir()} >= {"blocks", "mount.lock", "mount.log", "staging", "state"}
    assert list(cache.glob("staging/datasets/*/upper/*")), "no staged file to check"
    assert open_to_others(cache) == []
    assert eotdlfs("umount", str(mnt)).returncode == 0

    for path in [cache, *cache.rglob("*")]:  # as an older eotdlfs left it
        path.chmod(0o777 if path.is_dir() else 0o666)
    mount_and_use("second.txt")
    assert open_to_others(cache) == []
    assert eotdlfs("umount", str(mnt)).returncode == 0


def test_mount_of_a_repository_nothing_answers_fails_naming_it(tmp_path, mountpoint):
    mnt, _ = mountpoint
    url = f"http://127.0.0.1:{free_port()}/"
    for mode in ((), ("--foreground",)):
        done = eotdlfs("mount", str(mnt), "--api-url", url, "--cache-dir", str(tmp_path / "cache"), *mode)
        assert done.returncode == 1 and url in done.stderr and "no listing from an earlier mount" in done.stderr, \
            done.stderr
        assert f"error: cannot reach the repository at {url}" in done.stderr, done.stderr  # no "[Errno 5]" first
        assert not is_mounted(mnt)


def test_a_listing_kept_for_another_repository_is_not_served_as_this_ones(repo_server, mount_factory, unique_name,
                                                                          tmp_path, mountpoint):
    """The lists kept for mounting offline belong to their repository. With one cache dir (the
    default), a mount of another repository that was down showed the first one's datasets as its own."""
    mnt, _ = mountpoint
    cache, name = tmp_path / "cache", unique_name("kept")
    ingest(repo_server, make_folder(tmp_path / "src", name))
    earlier = mount_factory(repo_server, cache_dir=cache)
    assert (earlier.path / "datasets" / name / "v1").is_dir()
    earlier.unmount()
    url = f"http://127.0.0.1:{free_port()}/"
    done = eotdlfs("mount", str(mnt), "--api-url", url, "--cache-dir", str(cache))
    assert done.returncode == 1 and f"{url} (" in done.stderr and "no listing from an earlier mount" in done.stderr, \
        done.stderr
    assert not is_mounted(mnt)


@pytest.mark.parametrize("option, value", [("--autoflush", "-1"), ("--autoflush", "nan"), ("--ttl", "-1"),
                                           ("--ttl", "inf")])
def test_seconds_that_are_no_time_are_refused_in_one_line(repo_server, tmp_path, mountpoint, option, value):
    """`--autoflush -1` (read as "off", as -1 often is) mounted, then published a version after every
    write: `cp` of three files made three permanent versions."""
    mnt, _ = mountpoint
    for mode in ((), ("--foreground",)):
        done = eotdlfs("mount", str(mnt), "--api-url", repo_server.url, "--cache-dir", str(tmp_path / "cache"),
                       option, value, *mode)
        assert done.returncode == 1 and done.stderr.strip().splitlines() == [
            f"error: {option} {float(value)}: a number of seconds, 0 or more"
            f"{' (0: off)' if option == '--autoflush' else ''}, expected"], done.stderr
        assert not is_mounted(mnt)


def test_mount_of_a_repository_down_serves_an_earlier_listing_offline(fresh_server, mount_factory, unique_name,
                                                                        tmp_path, mountpoint):
    mnt, pids = mountpoint
    name = unique_name("down")
    source = make_folder(tmp_path / "src", name)
    ingest(fresh_server, source)
    cache = tmp_path / "cache"
    earlier = mount_factory(fresh_server, cache_dir=cache)
    assert (earlier.path / "datasets" / name / "v1" / "labels.csv").read_bytes() == (source / "labels.csv").read_bytes()
    earlier.unmount()
    fresh_server.stop()
    done = eotdlfs("mount", str(mnt), "--api-url", fresh_server.url, "--cache-dir", str(cache))
    assert done.returncode == 0, done.stderr
    status = json.loads((mnt / ".eotdlfs" / "status.json").read_text())
    pids.append(status["pid"])
    assert f"cannot reach {fresh_server.url}: mounted offline" in done.stderr
    assert status["server_reachable"] is False
    assert (mnt / "datasets" / name / "v1" / "labels.csv").read_bytes() == (source / "labels.csv").read_bytes()
    assert eotdlfs("umount", str(mnt)).returncode == 0


def test_a_second_mount_on_a_cache_dir_in_use_fails_naming_the_holder(repo_server, mount_factory, unique_name,
                                                                       tmp_path, mountpoint):
    mnt, _ = mountpoint
    name = unique_name("held")
    ingest(repo_server, make_folder(tmp_path / "src", name))
    cache = tmp_path / "cache"
    holder = mount_factory(repo_server, cache_dir=cache)
    env = {**os.environ, "EOTDL_TOKEN": repo_server.token("alice")}
    for mode in ((), ("--foreground",)):
        done = eotdlfs("mount", str(mnt), "--api-url", repo_server.url, "--cache-dir", str(cache), *mode, env=env)
        assert done.returncode == 1, done.stderr
        assert f"in use by the eotdlfs mount on {holder.path} (process {holder.pid})" in done.stderr, done.stderr
        assert f"error: {cache} is in use" in done.stderr, done.stderr
        assert not is_mounted(mnt)
        assert not mnt.exists()  # the mount point it made, removed again (it stayed behind, empty)
    assert (holder.path / "staging" / "datasets" / name / "labels.csv").exists()  # the holder keeps its staging
    blocks = BlockCache(cache / "blocks", 1 << 30)  # the block cache stays open to readers that are not mounts
    try:
        assert blocks.stats()["size_limit"] == 1 << 30
    finally:
        blocks.close()


def test_mounting_on_a_folder_that_is_not_empty_warns_that_its_files_are_hidden(repo_server, tmp_path, mountpoint):
    """libfuse 3 mounts on a folder with files in it without a word: they vanished from sight until the
    unmount, and a user took them for lost."""
    mnt, pids = mountpoint
    mnt.mkdir()
    (mnt / "mine.txt").write_text("mine\n")
    done = eotdlfs("mount", str(mnt), "--api-url", repo_server.url, "--cache-dir", str(tmp_path / "cache"))
    assert done.returncode == 0, done.stderr
    pids.append(json.loads((mnt / ".eotdlfs" / "status.json").read_text())["pid"])
    assert f"warning: {mnt} is not empty: what it holds (1 entries) is hidden until `eotdlfs umount {mnt}`" \
        in done.stderr, done.stderr
    assert eotdlfs("umount", str(mnt)).returncode == 0
    assert (mnt / "mine.txt").read_text() == "mine\n"


def test_umount_of_a_mount_in_use_says_how_to_find_who_uses_it(repo_server, unique_name, tmp_path, mountpoint):
    """fusermount's "Device or resource busy" alone left the sysadmin guessing which process held the mount."""
    mnt, pids = mountpoint
    name = unique_name("busy")
    ingest(repo_server, make_folder(tmp_path / "src", name))
    done = eotdlfs("mount", str(mnt), "--api-url", repo_server.url, "--cache-dir", str(tmp_path / "cache"))
    assert done.returncode == 0, done.stderr
    pids.append(json.loads((mnt / ".eotdlfs" / "status.json").read_text())["pid"])
    with open(mnt / "datasets" / name / "v1" / "labels.csv", "rb"):
        busy = eotdlfs("umount", str(mnt))
        assert busy.returncode == 1 and "busy" in busy.stderr and f"fuser -vm {mnt}" in busy.stderr, busy.stderr
        assert is_mounted(mnt)
    assert eotdlfs("umount", str(mnt)).returncode == 0


def test_a_relative_cache_dir_is_the_one_beside_the_caller(repo_server, unique_name, tmp_path, mountpoint):
    """libfuse moves the mount process to `/` once mounted: a relative --cache-dir then put the
    block cache's later connections, the listings and every staged file under `/REL` (another
    disk, and gone from the cache dir at the next mount), and the cache failed to open."""
    mnt, pids = mountpoint
    name = unique_name("rel")
    source = make_folder(tmp_path / "src", name)
    ingest(repo_server, source)
    relative = f"cache-{unique_name('rel')}"
    env = {**os.environ, "EOTDL_TOKEN": repo_server.token("alice")}
    try:
        done = eotdlfs("mount", str(mnt), "--api-url", repo_server.url, "--cache-dir", relative,
                       env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        pids.append(json.loads((mnt / ".eotdlfs" / "status.json").read_text())["pid"])
        big = mnt / "datasets" / name / "v1" / "images" / "2023" / "big.bin"
        assert big.read_bytes() == (source / "images" / "2023" / "big.bin").read_bytes()
        (mnt / "staging" / "datasets" / name / "new.txt").write_text("staged\n")
        status = json.loads((mnt / ".eotdlfs" / "status.json").read_text())
        assert status["cache_dir"] == str(tmp_path / relative) and status["cache"]["write_errors"] == 0, status
        assert not (Path("/") / relative).exists()
        staged = [p for p in (tmp_path / relative / "staging").rglob("*") if p.is_file() and p.read_bytes() == b"staged\n"]
        assert len(staged) == 1
    finally:
        done = eotdlfs("umount", str(mnt))
        shutil.rmtree(Path("/") / relative, ignore_errors=True)  # what the old code left at the root


def test_status_says_reachable_as_soon_as_a_read_fetches_again(fresh_server, mount_factory, unique_name, tmp_path):
    """A failed read marks the repository unreachable at once; the first bytes fetched after it
    is back say it is reachable again, before the listing's next refresh (TTL 60 s here)."""
    name = unique_name("back")
    source = make_folder(tmp_path / "src", name)
    (source / "second.bin").write_bytes(os.urandom(10_000))
    ingest(fresh_server, source)
    mount = mount_factory(fresh_server, ttl=60.0)
    version = mount.path / "datasets" / name / "v1"
    assert sorted(p.name for p in version.iterdir())  # the version's list is in hand
    status_file = mount.path / ".eotdlfs" / "status.json"
    fresh_server.stop()
    with pytest.raises(OSError):
        (version / "labels.csv").read_bytes()
    assert json.loads(status_file.read_text())["server_reachable"] is False
    fresh_server.start()
    assert (version / "second.bin").read_bytes() == (source / "second.bin").read_bytes()
    assert json.loads(status_file.read_text())["server_reachable"] is True


def test_the_mount_process_leaves_the_stac_libraries_unloaded():
    # numpy, shapely (the item index) and pystac (a document's check) were a third of the
    # mount's memory while streaming; it loads them only to flush a STAC version.
    modules = ("eotdlfs.cli", "eotdlfs.fs.mount", "eotdlfs.app.mount")  # what `eotdlfs mount --foreground` imports
    heavy = ("numpy", "shapely", "pystac")
    code = f"import sys, {', '.join(modules)}; print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == []


NOBODY = 65534


@pytest.mark.skipif(os.geteuid() != 0, reason="runs the mount as another user: needs root")
def test_a_user_fuse_refuses_is_told_why_in_one_line(repo_server):
    """A user other than root meets FUSE's own refusals: /dev/fuse closed to users (a container's
    default), or a mount point the user may not write (fusermount's check). Both printed `error: 4`."""
    as_nobody = dict(user=NOBODY, group=NOBODY, extra_groups=[], capture_output=True, text=True, timeout=60)
    try:
        runs = subprocess.run([sys.executable, "-c", "import eotdlfs"], **as_nobody).returncode == 0
    except PermissionError:  # the interpreter lies where the user cannot reach (e.g. under /root)
        runs = False
    if not runs:
        pytest.skip(f"uid {NOBODY} cannot run this Python ({sys.executable})")
    home, mnt = Path(tempfile.mkdtemp(prefix="eotdlfs-user-")), Path(tempfile.mkdtemp(prefix="eotdlfs-user-mnt-"))
    try:
        os.chown(home, NOBODY, NOBODY)
        mnt.chmod(0o755)  # root's: the user may enter it, not write it
        done = subprocess.run([sys.executable, "-m", "eotdlfs", "mount", str(mnt), "--api-url", repo_server.url,
                               "--cache-dir", str(home / "cache")], cwd=home,
                              env={"PATH": os.environ["PATH"], "HOME": str(home)}, **as_nobody)
        assert not is_mounted(mnt)
    finally:
        shutil.rmtree(home)
        mnt.rmdir()
    if os.stat("/dev/fuse").st_mode & 0o006 != 0o006:
        expected = r"error: /dev/fuse cannot be opened by this user, and FUSE needs it readable and writable"
    else:
        expected = (f"error: fusermount3?: user has no write access to mountpoint {mnt}; "
                    f"libfuse could not serve {mnt}: mounting failed")
    assert done.returncode == 1 and re.match(expected, done.stderr), done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill"])
def test_a_foreground_mount_stopped_by_a_signal_exits_cleanly(repo_server, tmp_path, mountpoint, sig):
    """Ctrl-C on `eotdlfs mount --foreground`, or `kill` (systemd's stop) of any mount process: the
    mount is released and the process exits 0 without an error (it printed `error: 8`, libfuse's
    code for a loop ended by a signal)."""
    mnt, pids = mountpoint
    mnt.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "eotdlfs", "mount", str(mnt), "--foreground", "--api-url",
                             repo_server.url, "--cache-dir", str(tmp_path / "cache")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pids.append(proc.pid)
    deadline = time.monotonic() + 30  # status.json answers once libfuse serves, its signal handlers set
    while not (mnt / ".eotdlfs" / "status.json").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert is_mounted(mnt)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "error" not in err, err
    assert not is_mounted(mnt)
