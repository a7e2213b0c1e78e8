"""Mounting and unmounting: the background launcher, umount, status (the foreground process is
built by `eotdlfs.app.mount`).

`eotdlfs mount` runs a detached child (`python -m eotdlfs mount --foreground ...`) that logs
to a file in the cache dir, and returns once the kernel shows the mount. A mount point left
"Transport endpoint is not connected" by a killed process is cleaned first.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from eotdlfs.cachedir import free_bytes, make_private
from eotdlfs.fs.status import STATUS_PATH

log = logging.getLogger(__name__)

PRIVATE_UMASK = 0o077  # what the mount process creates in the cache dir: folders 0700, files 0600
READY_TIMEOUT_S = 30.0
EXIT_TIMEOUT_S = 15.0
LOG_FILE = "mount.log"
LIBFUSE_LINE = re.compile(r"(fuse|fusermount\d?): ")  # what libfuse and fusermount write to stderr start with
_SIZE = re.compile(r"^\s*([0-9.]+)\s*([kKmMgGtT]?)i?[bB]?\s*$")


def parse_size(text: str) -> int:
    """'20G' -> bytes (powers of 1024; a plain number is bytes)."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (use e.g. 500M, 20G)")
    power = " KMGT".index(match.group(2).upper() or " ")
    return int(float(match.group(1)) * 1024 ** power)


# --- the kernel's view ---------------------------------------------------------------------

def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def is_mounted(mountpoint: Path) -> bool:
    target = os.path.abspath(mountpoint)
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        return any(_unescape(line.split()[1]) == target for line in mounts if line.strip())


def is_stale(mountpoint: Path) -> bool:
    """Whether MOUNTPOINT is a FUSE mount whose process is gone. statfs, not stat: the kernel
    answers a stat of the root from its attribute cache (60 s) even after the connection is gone,
    so a crashed mount looked alive until libfuse's auto_unmount helper happened to run."""
    try:
        os.statvfs(mountpoint)
    except OSError as exc:
        return exc.errno in (errno.ENOTCONN, errno.ECONNABORTED)
    return False


def fusermount(mountpoint: Path, lazy: bool = False) -> subprocess.CompletedProcess:
    for tool in ("fusermount3", "fusermount"):
        try:
            return subprocess.run([tool, "-u", *(["-z"] if lazy else []), str(mountpoint)],
                                  capture_output=True, text=True, timeout=30)
        except FileNotFoundError:
            continue
    raise OSError(errno.ENOENT, "neither fusermount3 nor fusermount is installed")


def clean_stale(mountpoint: Path) -> bool:
    """Lazily unmount a dead mount at MOUNTPOINT; True if there was one."""
    if is_stale(mountpoint):
        log.warning("cleaning the stale mount at %s", mountpoint)
        fusermount(mountpoint, lazy=True)
        return True
    return False


# --- the launcher --------------------------------------------------------------------------

def entries_hidden_by(mountpoint: Path) -> int:
    """How many entries of the folder MOUNTPOINT a mount on it would hide (libfuse 3 mounts on a
    folder that is not empty without a word); 0 when it is missing, not a folder, or a dead mount."""
    try:
        with os.scandir(mountpoint) as entries:
            return sum(1 for _ in entries)
    except OSError:
        return 0


def mount_background(mountpoint: Path, args: list[str], cache_dir: Path,
                     timeout: float = READY_TIMEOUT_S) -> int:
    """Start the mount process detached with ARGS (the CLI options), wait until mounted; its PID."""
    mountpoint = Path(mountpoint).absolute()
    clean_stale(mountpoint)
    if is_mounted(mountpoint):
        raise OSError(errno.EBUSY, f"{mountpoint} is already mounted")
    made = [folder for folder in (mountpoint, *mountpoint.parents) if not folder.exists()]
    if made:
        mountpoint.mkdir(parents=True)  # `eotdlfs mount ~/eotdl` on a fresh machine just works
    if not mountpoint.is_dir():
        raise OSError(errno.ENOTDIR, f"{mountpoint} is not a directory")
    try:
        return _start_mount_process(mountpoint, args, cache_dir, timeout)
    except BaseException:
        for folder in made:  # a failed mount leaves no empty mount point of its own making
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def _start_mount_process(mountpoint: Path, args: list[str], cache_dir: Path, timeout: float) -> int:
    make_private(cache_dir)
    log_path = cache_dir / LOG_FILE
    try:
        log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as exc:  # the first write to the cache dir: a disk that fails (or is read-only) shows here
        raise OSError(exc.errno, f"cannot write the mount's log {log_path} ({exc.strerror}): the cache dir needs a "
                      "disk that reads and writes; choose another --cache-dir") from None
    with os.fdopen(log_fd, "ab") as log_file:
        logged_before = log_file.seek(0, os.SEEK_END)
        child = subprocess.Popen(
            [sys.executable, "-m", "eotdlfs", "mount", str(mountpoint), "--foreground", *args],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_mounted(mountpoint):
            return child.pid
        if child.poll() is not None:
            raise OSError(errno.EIO, _child_failure(log_path, logged_before, child.returncode))
        time.sleep(0.05)
    child.kill()
    child.wait(5)
    raise TimeoutError(f"{mountpoint} was not mounted after {timeout:.0f} s; see {log_path}")


def _child_failure(log_path: Path, offset: int, returncode: int, lines: int = 15) -> str:
    """Why the mount process exited, from what it logged from OFFSET on: its `error:` line (the
    CLI's one-line report) when it wrote one, else its last log lines."""
    try:
        with open(log_path, "rb") as log_file:
            log_file.seek(offset)
            logged = log_file.read().decode(errors="replace").splitlines()
    except FileNotFoundError:
        logged = []
    except OSError as exc:  # a failing disk: the report is in the log, which cannot be read back
        return (f"the mount process exited ({returncode}), and its log {log_path} cannot be read ({exc.strerror}): "
                "is the cache dir's disk failing? choose a --cache-dir on another disk")
    reported = [line for line in logged if line.startswith("error: ")]
    if reported:  # with what libfuse or fusermount said on the way (its reason for a failed mount)
        said = [line for line in logged if LIBFUSE_LINE.match(line)]
        return "; ".join(said[-2:] + [reported[-1][len("error: "):]])
    if not logged:  # its report went where the log is: a full disk takes that too
        return f"the mount process exited ({returncode}) and wrote nothing to {log_path}" + _disk_full_hint(log_path)
    return f"the mount process exited ({returncode}); last log lines:\n" + "\n".join(logged[-lines:])


def _disk_full_hint(log_path: Path) -> str:
    from eotdlfs.fs.block_cache import MIN_RESERVE_BYTES  # only on this failure: the launcher stays light

    free = free_bytes(log_path.parent)
    if free is None or free >= MIN_RESERVE_BYTES:
        return ""
    return (f"; its disk has {free // 1024} KiB free: is it full? free some room, or choose another"
            " --cache-dir")


def read_status(mountpoint: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(mountpoint) / STATUS_PATH.lstrip("/")).read_text())
    except FileNotFoundError:
        raise OSError(errno.ENOENT, f"{mountpoint} is not an eotdlfs mount") from None


def offline_from(mountpoint: Path) -> str | None:
    """The repository URL the mount at MOUNTPOINT cannot reach (it serves an earlier mount's
    listing offline); None when it reaches it, or cannot say."""
    try:
        info = read_status(mountpoint)
    except (OSError, ValueError):
        return None
    return str(info.get("api_url")) if info.get("server_reachable") is False else None


def unmount(mountpoint: Path, timeout: float = EXIT_TIMEOUT_S) -> None:
    """Unmount MOUNTPOINT and wait until its mount process has exited."""
    mountpoint = Path(mountpoint).absolute()
    if clean_stale(mountpoint):
        return
    if not is_mounted(mountpoint):
        raise OSError(errno.EINVAL, f"{mountpoint} is not mounted")
    try:
        pid = int(read_status(mountpoint)["pid"])
    except (OSError, ValueError, KeyError):
        pid = None
    done = fusermount(mountpoint)
    if done.returncode != 0:
        said = done.stderr.strip() or f"cannot unmount {mountpoint}"
        if "busy" in said:
            said += (" (a process has a file or folder open in it, or it as its working directory: "
                     f"`fuser -vm {mountpoint}` names them)")
        raise OSError(errno.EBUSY, said)
    if pid is not None:
        wait_for_exit(pid, timeout)


def wait_for_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # reap it if it is our child
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            if _is_zombie(pid):  # exited; only its parent (not us) can reap it
                return True
        time.sleep(0.05)
    return False


def _is_zombie(pid: int) -> bool:
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat_line.rpartition(")")[2].split()[:1] == ["Z"]


def stop_process(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, the mount process PID (used by tests and benchmarks to clean up)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if wait_for_exit(pid, timeout):
            return
