"""A failing disk for tests: a passthrough FUSE file system over a folder, whose file reads and
writes fail with EIO while its switch file says so.

    python -m reliability.faultydisk SOURCE MOUNTPOINT SWITCH [SUBTYPE]    (with tests/ on the path)

SUBTYPE makes its type in /proc/self/mountinfo `fuse.SUBTYPE` (`sshfs`: a disk other machines share).

SWITCH holds one word, read at every call (a test flips it while the disk is in use):

- empty or missing: a healthy disk;
- `read`: every read of a file's bytes fails, as a disk with bad sectors does;
- `all`: reads, writes, fsync, and creating, renaming or removing anything fail, as a disk gone
  read-only with errors does. Metadata (stat, listings, statfs) still answers, so the mount
  above it can be stopped.

SQLite's WAL indexes (`*-shm`) always read: memory that processes share through a mapped file,
whose pages a disk is never asked for while they are in use. FUSE asks: it drops a file's pages
when another process opens it or when its attributes change, and a page then refused is a SIGBUS
that kills the process, which no real disk failure under a running mount would cause.

No tmpfs or device-mapper can fail this way on demand; FUSE can, and needs no more privilege
than the mount under test. libfuse drops a file's pages from the kernel's cache at each open
(no `kernel_cache`), so a file opened after the switch is flipped is read from this process.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

from eotdlfs.fs.fuse_binding import FUSE, FuseOSError, Operations

HEALTHY, FAIL_READS, FAIL_ALL = "", "read", "all"


class FaultyDisk(Operations):
    use_ns = True  # times in nanoseconds, as os.stat and os.utime give and take them

    def __init__(self, source: str, switch: str):
        self.source = os.path.realpath(source)
        self.switch = switch

    def _real(self, path: str) -> str:
        return self.source + path

    def _fault(self, *modes: str) -> None:
        try:
            mode = Path(self.switch).read_text().strip()
        except OSError:
            mode = HEALTHY
        if mode in modes:
            raise FuseOSError(errno.EIO)

    def _writing(self) -> None:
        self._fault(FAIL_ALL)

    def _reading(self) -> None:
        self._fault(FAIL_READS, FAIL_ALL)

    # metadata: always answered
    def getattr(self, path, fh=None):
        st = os.lstat(self._real(path)) if fh is None else os.fstat(fh)
        attrs = {key: getattr(st, key) for key in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size")}
        return attrs | {key: getattr(st, key + "_ns") for key in ("st_atime", "st_mtime", "st_ctime")}

    def readdir(self, path, fh):
        return [".", "..", *os.listdir(self._real(path))]

    def statfs(self, path):
        st = os.statvfs(self._real(path))
        return {key: getattr(st, key) for key in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail",
                                                  "f_files", "f_ffree", "f_favail", "f_flag", "f_namemax")}

    def access(self, path, amode):
        if not os.access(self._real(path), amode):
            raise FuseOSError(errno.EACCES)

    def readlink(self, path):
        return os.readlink(self._real(path))

    def open(self, path, flags):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC):
            self._writing()
        return os.open(self._real(path), flags & ~os.O_DIRECT)

    def release(self, path, fh):
        os.close(fh)

    def read(self, path, size, offset, fh):
        if not path.endswith("-shm"):
            self._reading()
        return os.pread(fh, size, offset)

    # changes: fail with the `all` switch
    def create(self, path, mode, fi=None):
        self._writing()
        return os.open(self._real(path), os.O_RDWR | os.O_CREAT | os.O_TRUNC, mode)  # flags unknown here: RDWR serves both

    def write(self, path, data, offset, fh):
        self._writing()
        return os.pwrite(fh, data, offset)

    def truncate(self, path, length, fh=None):
        self._writing()
        if fh is None:
            os.truncate(self._real(path), length)
        else:
            os.ftruncate(fh, length)

    def flush(self, path, fh):
        return 0

    def fsync(self, path, datasync, fh):
        self._writing()
        (os.fdatasync if datasync else os.fsync)(fh)

    def mkdir(self, path, mode):
        self._writing()
        os.mkdir(self._real(path), mode)

    def rmdir(self, path):
        self._writing()
        os.rmdir(self._real(path))

    def unlink(self, path):
        self._writing()
        os.unlink(self._real(path))

    def rename(self, old, new):
        self._writing()
        os.rename(self._real(old), self._real(new))

    def link(self, target, source):
        self._writing()
        os.link(self._real(source), self._real(target))

    def symlink(self, target, source):
        self._writing()
        os.symlink(source, self._real(target))

    def chmod(self, path, mode):
        os.chmod(self._real(path), mode)

    def chown(self, path, uid, gid):
        os.chown(self._real(path), uid, gid)

    def utimens(self, path, times=None):
        os.utime(self._real(path), ns=times)


if __name__ == "__main__":
    source, mountpoint, switch, *subtype = sys.argv[1:]
    FUSE(FaultyDisk(source, switch), mountpoint, foreground=True, nothreads=False,
         **({"subtype": subtype[0]} if subtype else {}))
