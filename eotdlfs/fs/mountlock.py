"""One mount per cache dir: its state and staging belong to the mount process holding
`CACHE_DIR/mount.lock`, a `flock` (the kernel frees it when that process dies, however it dies).
The block cache is not locked: processes that only read it (the fsspec filesystem) share it.
The lock file names its holder, so a second mount can say which one is in the way. Only the
mount process takes it: `eotdlfs mount` reports what its child said when refused.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
from pathlib import Path

LOCK_FILE = "mount.lock"

log = logging.getLogger(__name__)


def _busy(cache_dir: Path, fd: int) -> OSError:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
        who = f"the eotdlfs mount on {holder['mountpoint']} (process {holder['pid']})"
    except (OSError, ValueError, KeyError, TypeError):  # the holder is still writing its name
        who = "another eotdlfs mount"
    return OSError(errno.EBUSY, f"{cache_dir} is in use by {who}; unmount it, or give this mount "
                                "another --cache-dir")


def hold_cache_dir(cache_dir: Path, mountpoint: Path) -> int:
    """Take CACHE_DIR for the mount on MOUNTPOINT, for as long as this process lives (the open file
    descriptor returned keeps it); OSError EBUSY naming the holder when a mount has it."""
    fd = os.open(cache_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        error = _busy(cache_dir, fd)
        os.close(fd)
        raise error from None
    except OSError as exc:  # a file system without locks (some NFS and Lustre setups): mount all the same
        log.warning("cannot lock %s (%s): a second mount on this cache dir would not be kept off", cache_dir,
                    exc.strerror)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "mountpoint": str(mountpoint)}).encode(), 0)
    except OSError:  # a full disk: held all the same, a second mount just cannot say by whom
        pass
    return fd

