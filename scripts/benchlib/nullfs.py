"""A "null" FUSE filesystem on eotdlfs's own FUSE shim: the read ceiling of any fusepy mount here.

It serves one read-only file, `/big`, of a given size, whose bytes are copied from one
preallocated 1 MiB buffer: no network, no cache, no hashing. It goes through
`eotdlfs.fs.fuse_binding.run_fuse`, so the binding's path (`_DirectFUSE`, reads written into the
kernel's buffer) and the mount options (1 MiB max_read and read-ahead, raw_fi, keep_cache)
are the real mount's; what a read of it costs is what the mount pays before doing any work.

    python -m benchlib.nullfs MOUNTPOINT SIZE_BYTES     (from scripts/; foreground until unmounted)
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from pathlib import Path

from eotdlfs.fs.fuse_binding import FuseOSError, Operations, run_fuse
from eotdlfs.fs.fuse_ops import _pin_thread_state
from benchlib.processes import ForegroundMount

FILE_NAME = "big"
PATTERN_BYTES = 1 << 20
SCRIPTS_DIR = Path(__file__).resolve().parents[1]


class NullFile(Operations):
    """One file of SIZE bytes; every read is a memory copy from PATTERN."""

    def __init__(self, size: int):
        self.size = size
        # Random bytes, so nothing between here and the reader can shortcut zeros.
        self.pattern = memoryview(os.urandom(PATTERN_BYTES))

    def getattr(self, path, fh=None):
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2, "st_ino": self.inode(path)}
        if path == "/" + FILE_NAME:
            return {"st_mode": stat.S_IFREG | 0o444, "st_nlink": 1, "st_size": self.size, "st_ino": self.inode(path)}
        raise FuseOSError(errno.ENOENT)

    def inode(self, path) -> int:
        """The number `stat` shows: the binding mounts with use_ino, as the mount does (inode 0 is EINVAL)."""
        return 1 if path == "/" else 2

    def fill_listed_stat(self, path, st) -> bool:
        return False  # `_DirectFUSE.getattr` asks; the generic getattr answers instead

    def readdir(self, path, fh):
        return [".", "..", FILE_NAME]

    def open(self, path, fi):
        fi.keep_cache = 1  # as the mount opens published files
        return 0

    def read_into(self, path, target, offset, fi):
        _pin_thread_state()  # as every callback of the mount does
        count = max(0, min(len(target), self.size - offset))
        done = 0
        while done < count:  # at most two turns: reads are at most 1 MiB
            start = (offset + done) % PATTERN_BYTES
            chunk = min(count - done, PATTERN_BYTES - start)
            target[done:done + chunk] = self.pattern[start:start + chunk]
            done += chunk
        return count

    read = read_into  # the name the binding looks for; `_DirectFUSE.read` calls read_into


def null_mount(mnt: Path, size: int, log: Path) -> ForegroundMount:
    """The null filesystem with a file of SIZE bytes at MNT / FILE_NAME, as our child process."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(SCRIPTS_DIR), os.environ.get("PYTHONPATH")])))
    argv = [sys.executable, "-m", "benchlib.nullfs", str(mnt), str(size)]
    return ForegroundMount(argv, mnt, None, log, env)


if __name__ == "__main__":
    run_fuse(NullFile(int(sys.argv[2])), sys.argv[1], "nullfs:")
