"""The FUSE binding: the only module that imports one (mfusepy on libfuse 3, or fusepy on libfuse 2).

libfuse 3 is the default when mfusepy and libfuse 3 are both here: it has READDIRPLUS (a
listing carries each entry's attributes: `ls -l` looks nothing up after it), and it negotiates
`max_pages`, so direct I/O reads come in 1 MiB requests instead of 128 KiB (buffered ones too
with `EOTDLFS_FUSE_READ_AHEAD_KB=1024`, see `READ_AHEAD_KB`).
libfuse 2 through fusepy stays the fallback for systems that only have it.
`EOTDLFS_FUSE=2` or `=3` forces one (an ImportError names what is missing).

`_DirectFUSE` adds to either binding: reads written straight into the kernel's buffer, a
`stat` of a listed file filled from a template, ACL/SELinux xattr names refused before Python.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import logging
import os
import time
from typing import Any

log = logging.getLogger(__name__)

FUSE_ENV = "EOTDLFS_FUSE"
MAX_READ = 1 << 20
LOOP_MT_MAX_THREADS = 100_000  # libfuse 3's FUSE_LOOP_MT_MAX_THREADS: the most it takes
# Published content never changes, so the kernel may keep attributes, entries and pages.
ATTR_TIMEOUT_S = 60
# fuse_common.h (libfuse 3): readdir's flags and the filler's
FUSE_READDIR_PLUS, FUSE_FILL_DIR_PLUS = 1, 2
FUSE_CAP_READDIRPLUS, FUSE_CAP_READDIRPLUS_AUTO = 1 << 13, 1 << 14
KEPT_LISTINGS = 64  # folders being read with attributes at once (bounds what readers that stop leave)
KEPT_ATTRS_SENT = 100_000  # folders whose last listing with attributes is remembered
# The kernel's read-ahead for the mount, in KiB (root only; libfuse 3): it caps buffered read
# requests (128 KiB by default). 1024 gives 1 MiB requests, which on 2026-11-30 made cold
# reads slower (116 MB/s against 184 on libfuse 2 and 256 on libfuse 3 at 128 KiB, medians of
# alternated runs, docs/benchmarks.md); with bytes handed out as they arrive it matched 128 KiB
# (444-543 against 468-507 MB/s) at no less CPU and more memory, so it stays off by default.
# Measured again on 2026-12-01 (scripts/bench --only eotdlfs_mount, 6 samples each, medians):
# cold sequential 162 against 143 MB/s (within the noise: 94-229 and 120-158) at 2.6 against
# 2.5 CPU-s/GB, but 50 random COG windows fetched 344 MB instead of 116 (the kernel reads 1 MiB
# around each tile) in 5.3 s instead of 4.1, warm reads 839 against 1206 MB/s, and peak RSS
# 153 MB instead of 129 (over the 150 goal).
# Direct I/O readers get requests of up to MAX_READ on libfuse 3 either way. A large buffered
# read is no exception: the kernel (6.18 here) leaves the mount's io_pages at 128 KiB whatever
# max_pages is, so a 1 MiB pread comes as 128 KiB requests too; 256 cut COG windows' requests
# from 925 to 555 but fetched 138 MB instead of 121 (docs/benchmarks.md).
READ_AHEAD_KB = int(os.environ.get("EOTDLFS_FUSE_READ_AHEAD_KB") or 0)

# What the kernel asked of this process's mount (one mount per process), for status.json: the
# read requests, their bytes and the largest (up to 1 MiB once libfuse 3 negotiated it, 128 KiB
# on libfuse 2), and the attribute requests that reached Python (READDIRPLUS spares one per
# listed file). Updated without a lock: a lost update only makes a figure a little low.
requests = {"reads": 0, "read_bytes": 0, "largest_read": 0, "getattr": 0}


def _import_binding() -> tuple[Any, int]:
    """The binding module and the libfuse major version it loaded."""
    wanted = os.environ.get(FUSE_ENV, "")
    if wanted not in ("", "2", "3"):
        raise ImportError(f"{FUSE_ENV}={wanted!r}: use 2 (fusepy, libfuse 2) or 3 (mfusepy, libfuse 3)")
    libfuse3 = ctypes.util.find_library("fuse3")
    if wanted != "2" and libfuse3:
        # mfusepy loads libfuse 2 when both are installed, unless told which file to load
        previous = os.environ.get("FUSE_LIBRARY_PATH")
        os.environ["FUSE_LIBRARY_PATH"] = libfuse3
        try:
            import mfusepy
            if mfusepy.fuse_version_major == 3:
                return mfusepy, 3
        except ImportError:
            if wanted == "3":
                raise
        finally:
            if previous is None:
                os.environ.pop("FUSE_LIBRARY_PATH", None)
            else:
                os.environ["FUSE_LIBRARY_PATH"] = previous
    if wanted == "3":
        raise ImportError(f"{FUSE_ENV}=3 needs libfuse 3 (Debian: fuse3) and mfusepy")
    import fuse
    return fuse, 2


_binding, LIBFUSE = _import_binding()
BINDING = _binding.__name__
FUSE = _binding.FUSE
FuseOSError = _binding.FuseOSError
Operations = _binding.Operations
c_stat = _binding.c_stat
fuse_get_context = _binding.fuse_get_context
set_st_attrs = _binding.set_st_attrs


def _mount_device(mountpoint: str) -> str | None:
    """'MAJOR:MINOR' of the mount at MOUNTPOINT, from /proc/self/mountinfo (no stat: that
    would wait on the very INIT being answered)."""
    escaped = mountpoint.replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011").replace("\n", "\\012")
    try:
        with open("/proc/self/mountinfo") as lines:
            found = [fields[2] for fields in map(str.split, lines) if fields[4] == escaped]
    except OSError:
        return None
    return found[-1] if found else None


def _raise_readahead(mountpoint: str, kib: int) -> None:
    """Let buffered reads reach KIB: with libfuse 3 the bdi's read-ahead (128 KiB by default,
    writable by root only) caps the kernel's read requests, `max_readahead` in init can only
    lower it."""
    device = _mount_device(mountpoint)
    path = f"/sys/class/bdi/{device}/read_ahead_kb"
    try:
        with open(path, "r+") as setting:
            if int(setting.read()) < kib:
                setting.seek(0)
                setting.write(str(kib))
    except (OSError, ValueError) as exc:
        log.info("read requests stay at the kernel's read-ahead: %s not raised (%s)", path, exc)


class _DirectFUSE(FUSE):
    """The binding with reads written straight into the kernel's buffer (no bytes object per
    read, no second copy) and a listed file's `stat` filled from a template."""

    def __init__(self, operations: Any, mountpoint: str, **options):
        self.mountpoint = os.path.abspath(mountpoint)
        self._listings: dict[str, list[str]] = {}  # folder -> its names, while the kernel reads them with attributes
        self._attrs_sent: dict[str, float] = {}  # folder -> when its entries' attributes were last sent
        self._served = False
        try:
            super().__init__(operations, mountpoint, **options)  # serves until unmounted
        except RuntimeError as exc:
            if not self._served:
                raise
            # libfuse 3 ends its loop with a code on SIGINT, SIGTERM or SIGHUP (Ctrl-C, `kill`,
            # systemd's stop): a way to stop a mount, not a failure (a failure of the loop
            # itself, reading /dev/fuse, libfuse writes to stderr first)
            log.info("stopped: libfuse's loop ended with code %s (SIGINT, SIGTERM or SIGHUP, or what libfuse "
                     "wrote before this)", exc.args[0] if exc.args else None)

    def getxattr(self, path, name, value, size, *args):
        # `ls -l` asks every file for its ACL (system.*) and SELinux label (security.*). The
        # mount has neither: EOPNOTSUPP, answered before any decoding, dispatch or exception,
        # makes `ls` (and libacl, libselinux) stop asking for the rest of the file system,
        # where ENODATA cost a round trip into Python per file. Only user.* names are kept.
        if not name.startswith(b"user."):
            return -errno.EOPNOTSUPP
        return super().getxattr(path, name, value, size, *args)

    def read(self, path, buf, size, offset, fip):
        requests["reads"] += 1
        requests["read_bytes"] += size
        if size > requests["largest_read"]:
            requests["largest_read"] = size
        target = memoryview(_buffer_type(size).from_address(ctypes.addressof(buf.contents))).cast("B")
        return self.operations.read_into(self._path(path), target, offset, fip.contents)

    def _path(self, path: bytes | None) -> str | None:
        return None if path is None else path.decode(self.encoding, "surrogateescape")

    def _listed_stat(self, path: bytes | None, buf) -> bool:
        requests["getattr"] += 1
        if path is None or not self.operations.fill_listed_stat(self._path(path), buf.contents):
            return False
        buf.contents.st_ino = self.operations.inode(self._path(path))
        return True

    def fgetattr(self, path, buf, fip):
        done = super().fgetattr(path, buf, fip)
        if path is not None:  # use_ino: the number is ours (`eotdlfs.fs.inodes`)
            buf.contents.st_ino = self.operations.inode(self._path(path))
        return done

    def _names(self, folder: str, buf, filler, fip, *fill_flags: int) -> int:
        """FOLDER's names, each with its inode number alone (the entry's `d_ino`; its type stays
        unknown; FILL_FLAGS: libfuse 3's). The bindings give a name no `stat` (fusepy: `d_ino`
        unknown) or a zeroed one (mfusepy), whose inode 0 marks a deleted entry under use_ino:
        `readdir(3)` skipped every one."""
        st = c_stat()
        for name in self.operations.readdir(folder, fip.contents.fh):
            dots = name in (".", "..")
            if not dots:
                st.st_ino = self.operations.inode(folder.rstrip("/") + "/" + name)
            if filler(buf, name.encode(self.encoding, "surrogateescape"), None if dots else st, 0, *fill_flags):
                break
        return 0

    if LIBFUSE == 2:
        def init(self, conn):
            self._served = True
            return super().init(conn)

        def getattr(self, path, buf):
            return 0 if self._listed_stat(path, buf) else super().getattr(path, buf)

        def readdir(self, path, buf, filler, offset, fip):
            return self._names(self._path(path), buf, filler, fip)
    else:
        def getattr_fuse_3(self, path, buf, fip):
            return 0 if not fip and self._listed_stat(path, buf) else super().getattr_fuse_3(path, buf, fip)

        def init_fuse_3(self, conn, config):
            self._served = True
            info = conn.contents
            # both here and in the mount options, or libfuse 3 refuses to start
            info.max_read = info.max_readahead = MAX_READ
            # every listing with attributes: in "auto" mode the kernel only sends the first part
            # of a folder that way, and `ls -l`, which lists before it stats, looks up the rest
            info.want = (info.want | info.capable & FUSE_CAP_READDIRPLUS) & ~FUSE_CAP_READDIRPLUS_AUTO
            if READ_AHEAD_KB:
                _raise_readahead(self.mountpoint, READ_AHEAD_KB)
            return super().init_fuse_3(conn, config)

        def readdir_fuse_3(self, path, buf, filler, offset, fip, flags):
            """With READDIRPLUS, each entry goes with its attributes, which the kernel keeps as a
            lookup's: `ls -l` then asks nothing per file. Within half the entry timeout of sending
            a folder's attributes the kernel still holds them, so a listing again is names only.
            libfuse 3.14 drops the attributes of entries given without an offset, so each gets
            one (its index + 1) and the listing is kept between the kernel's calls for its parts."""
            folder = self._path(path)
            names = self._listings.get(folder) if offset else None
            if names is None:
                now = time.monotonic()
                recent = self._attrs_sent.get(folder, -ATTR_TIMEOUT_S) > now - ATTR_TIMEOUT_S / 2
                if not offset and (recent or not flags & FUSE_READDIR_PLUS):
                    # names only, all at once: libfuse keeps them and serves the kernel's next calls itself
                    return self._names(folder, buf, filler, fip, 0)
                names = list(self.operations.readdir(folder, fip.contents.fh))
                while len(self._listings) >= KEPT_LISTINGS:  # readers that stopped half way
                    self._listings.pop(next(iter(self._listings)), None)
                self._listings[folder] = names
                if len(self._attrs_sent) >= KEPT_ATTRS_SENT:
                    self._attrs_sent.clear()
                self._attrs_sent[folder] = now
            st = c_stat()
            for index in range(offset, len(names)):
                name = names[index]
                with_attrs = name not in (".", "..") and self._child_stat(folder.rstrip("/") + "/" + name, st)
                if filler(buf, name.encode(self.encoding, "surrogateescape"), st if with_attrs else None, index + 1,
                          FUSE_FILL_DIR_PLUS if with_attrs else 0):
                    return 0  # the kernel's buffer is full: it asks again from index + 1
            if offset >= len(names):  # the kernel's last call, which finds the end
                self._listings.pop(folder, None)
            return 0

        def _child_stat(self, path: str, st) -> bool:
            if not self.operations.fill_listed_stat(path, st):
                try:
                    attrs = self.operations.getattr(path)
                except OSError:
                    return False  # gone meanwhile: the kernel looks it up when asked
                ctypes.memset(ctypes.addressof(st), 0, ctypes.sizeof(st))
                set_st_attrs(st, attrs, use_ns=self.use_ns)
            st.st_ino = self.operations.inode(path)
            return True


FUSE_DEVICE = "/dev/fuse"
FUSE_CONF = "/etc/fuse.conf"
# What fuse_main's return code means on libfuse 3 (fuse.h); libfuse 2 gives 1 for any failure to start
FUSE_MAIN_FAILURES = {1: "invalid options", 2: "no mount point", 3: "FUSE setup failed", 4: "mounting failed",
                      5: "could not detach", 6: "could not set up signal handlers", 7: "its event loop failed"}


def check_can_mount(allow_other: bool, device: str = FUSE_DEVICE, conf: str = FUSE_CONF) -> None:
    """Refuse in words (OSError) what libfuse would refuse with a bare exit code: no FUSE device,
    a device this user cannot open (a container's default), and --allow-other for a user whom
    CONF does not let (fusermount's rule)."""
    without = "or read without a mount through eotdl:// (docs/guide.md)"
    if not os.path.exists(device):
        raise OSError(errno.ENODEV, f"{device} does not exist: FUSE is not available here (`modprobe fuse`; in a "
                      f"container, give it the device, e.g. `docker run --device /dev/fuse`), {without}")
    if not os.access(device, os.R_OK | os.W_OK):
        raise OSError(errno.EACCES, f"{device} cannot be opened by this user, and FUSE needs it readable and "
                      f"writable (`ls -l {device}`: most systems make it 0666), {without}")
    if allow_other and os.geteuid() != 0 and not _lets_users_allow_other(conf):
        raise OSError(errno.EPERM, f"--allow-other needs `user_allow_other` in {conf} for users other than root "
                      f"(as root: echo user_allow_other >> {conf})")


def _lets_users_allow_other(conf: str) -> bool:
    try:
        with open(conf) as lines:
            return any(line.split("#", 1)[0].strip() == "user_allow_other" for line in lines)
    except OSError:
        return False


@functools.lru_cache(maxsize=64)
def _buffer_type(size: int):
    """The ctypes array type of SIZE bytes (making a type per read would cost more than the read)."""
    return ctypes.c_char * size


def run_fuse(operations: Any, mountpoint: str, source: str, allow_other: bool = False) -> None:
    """Serve OPERATIONS on MOUNTPOINT in the foreground until unmounted. SOURCE (the repository's
    URL, as sshfs shows `user@host:`) is what `mount`, `df` and `findmnt` show it comes from: a
    word like "eotdlfs" reads as a relative path, which `mount` resolves against its cwd. A comma
    would end libfuse's option, so it is percent-encoded, as in any URL."""
    options = dict(foreground=True, nothreads=False, raw_fi=True, fsname=source.replace(",", "%2C"),
                   subtype="eotdlfs", attr_timeout=ATTR_TIMEOUT_S, entry_timeout=ATTR_TIMEOUT_S,
                   negative_timeout=0, max_read=MAX_READ, auto_unmount=True, use_ino=True)
    if LIBFUSE == 2:
        # libfuse 3 refuses both options: it always writes big, and takes read-ahead in init
        options.update(big_writes=True, max_readahead=MAX_READ)
    else:
        # Idle threads are kept, as libfuse 3.14's default "unset" (UINT_MAX) keeps them, but
        # named: 3.14 logs that default as "Ignoring invalid max threads value 4294967295" at
        # every mount, a false alarm at the head of the mount.log a failed mount shows.
        options.update(max_idle_threads=LOOP_MT_MAX_THREADS)
    if allow_other:
        # Other users then reach the mount: the kernel must check mode bits for them as on a
        # disk (without default_permissions it checks nothing and every caller may write).
        options.update(allow_other=True, default_permissions=True)
    try:
        _DirectFUSE(operations, mountpoint, **options)
    except RuntimeError as exc:  # both bindings raise fuse_main's bare return code as one
        code = exc.args[0] if exc.args else None
        if not isinstance(code, int):
            raise
        meaning = FUSE_MAIN_FAILURES.get(code) if LIBFUSE == 3 else None
        raise OSError(errno.EIO, f"libfuse could not serve {mountpoint}" + (f": {meaning}" if meaning else "")
                      + " (its reason is what it wrote before this)") from None
