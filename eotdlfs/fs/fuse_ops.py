"""The FUSE adapter: the callbacks, written to the API of the binding `fuse_binding` loads.

Each callback routes a path to its owner and maps failures to errno in one place
(`errors.errno_for`). The mount's one handle table is here: `fi.fh` names a published
file's `OpenFile`, a staged file's handle, or a virtual file's bytes.
- `/datasets/...`, `/models/...`  -> `ReadOnlyTree` (EROFS for every write);
- `/staging/...`                  -> the staging overlay, if one is installed. Its methods
  mirror fusepy's `Operations`, taking and returning handle objects instead of `fi`:
  `getattr(path, fh=None)`, `readdir(path, fh)`, `open(path, flags) -> fh`,
  `create(path, mode, flags) -> fh`, `read(path, size, offset, fh)`, `write(path, data, offset, fh)`,
  `truncate(path, length, fh=None)`, `flush`, `fsync`, `release`, `mkdir`, `rmdir`, `unlink`,
  `rename(old, new)` (both under staging; across trees is EXDEV), `chmod`, `chown`,
  `utimens`, `getxattr`, `listxattr`, `readlink`, `symlink(new, target)`, `link(new, existing)`,
  `mknod(path, mode, rdev)`, `statfs`, `status() -> dict`, `destroy()`. Paths given to it
  are relative to `/staging` ('/', '/datasets/NAME/...').
  Times are in nanoseconds (fusepy `use_ns`). An operation it lacks answers ENOTSUP.
  `create`, `mkdir`, `symlink` and `mknod` also get the caller's `uid=`, `gid=` (the new node's owner) and
  `setxattr` its `uid=` (only the mount's user may flush): with `--allow-other` the
  caller is not always the mount's user.
- `/.eotdlfs/status.json`         -> a snapshot of the mount's statistics.

Locks. `EotdlfsOperations._lock` guards changes of the handle table and is a leaf; lookups
by fh read the table without it (a dict lookup; the kernel uses an fh only after `open`
returned it and never after `release`).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import itertools
import logging
import os
import stat
import threading
import time
from typing import Any, Callable

from eotdlfs.fs.context import MountContext
from eotdlfs.fs.errors import is_failure, logged_errno
from eotdlfs.fs.fuse_binding import (BINDING, LIBFUSE, FuseOSError, Operations, c_stat, fuse_get_context, requests,
                                     set_st_attrs)
from eotdlfs.fs.inodes import StagedInodes, path_inode
from eotdlfs.fs.readonly import XATTR_PREFIX, blocks_of, read_only
from eotdlfs.fs.status import STATUS_DIR, STATUS_FILE, STATUS_PATH, collect_status, status_bytes
from eotdlfs.metadata import KINDS
from eotdlfs.repository import Unreachable

log = logging.getLogger(__name__)

STAGING = "staging"
TREE, STAGED, VIRTUAL = "tree", "staging", "virtual"


_thread_pinned = threading.local()


def _pin_thread_state() -> None:
    """Keep this libfuse worker thread's Python thread state between callbacks.

    A ctypes callback on a thread Python does not know creates a thread state on entry and
    destroys it on return, for every FUSE request; one extra PyGILState_Ensure, never
    released, makes the next callbacks on this thread reuse it."""
    if not getattr(_thread_pinned, "done", False):
        ctypes.pythonapi.PyGILState_Ensure()
        _thread_pinned.done = True


def _guarded(method: Callable) -> Callable:
    """Run a callback; turn any failure into a FuseOSError with an explicit errno."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        _pin_thread_state()
        try:
            return method(self, *args, **kwargs)
        except FuseOSError:
            raise
        except Exception as exc:
            raise FuseOSError(self.failed(args[0] if args and isinstance(args[0], str) else None, exc)) from exc
    return wrapper


def _packed_stat(attrs: dict) -> bytes:
    """The `struct stat` fusepy fills from ATTRS (a `getattr` answer), as bytes."""
    st = c_stat()
    set_st_attrs(st, attrs, use_ns=EotdlfsOperations.use_ns)
    return bytes(st)


def _staged_path(path: str) -> str | None:
    """PATH relative to /staging ('/' for /staging itself), or None when outside it."""
    if path == "/" + STAGING:
        return "/"
    if path.startswith("/" + STAGING + "/"):
        return path[len(STAGING) + 1:]
    return None


class EotdlfsOperations(Operations):
    use_ns = True
    # fusepy copies this field of `fuse_operations` from here. Without it libfuse 2 drops every
    # utimensat that sets one time and omits the other (`touch -m`, `tar x`): `utimens` gets
    # UTIME_OMIT / UTIME_NOW as they are, and staging handles both. (libfuse 3 always does so.)
    flag_utime_omit_ok = 1

    def __init__(self, context: MountContext, mountpoint: str, staging: Any = None):
        self.context = context
        self.tree = context.tree
        self.mountpoint = mountpoint
        self.staging = staging
        self.started = time.time()
        # changed under _lock, read without it (see the module's note on locks)
        self._lock = threading.Lock()
        self._handles: dict[int, tuple[str, Any]] = {}
        self.last_failure: dict[str, Any] | None = None  # replaced whole, for the status
        self._next_fh = itertools.count(1)
        self._staged_inodes = StagedInodes()
        # The `struct stat` of a 0-byte file dated 0: a published file's differs only in size and times.
        self._file_stat = _packed_stat(self.tree.file_attrs(0, 0.0))

    # --- helpers -------------------------------------------------------------------------

    def _stage(self, op: str, path: str, *args, **kwargs):
        method = getattr(self.staging, op, None)
        if method is None:
            raise FuseOSError(errno.ENOTSUP)
        return method(path, *args, **kwargs)

    def _add_handle(self, owner: str, value: Any) -> int:
        with self._lock:
            fh = next(self._next_fh)
            self._handles[fh] = (owner, value)
        return fh

    def _handle(self, fi) -> tuple[str, Any]:
        try:
            return self._handles[fi.fh]
        except KeyError:
            raise FuseOSError(errno.EBADF) from None

    def _root_attrs(self) -> dict:
        started_ns = int(self.started * 1e9)
        return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2, "st_uid": self.tree.uid,
                "st_gid": self.tree.gid, "st_atime": started_ns, "st_mtime": started_ns,
                "st_ctime": started_ns}

    def _status(self) -> bytes:
        status = collect_status(self.context, self.mountpoint, self.staging, self.started)
        status["fuse"] = {"binding": BINDING, "libfuse": LIBFUSE, **requests}
        status["last_failure"] = self.last_failure
        return status_bytes(status)

    def failed(self, path: str | None, exc: Exception) -> int:
        """The errno for EXC met at PATH, logged with PATH: `cat` can only print the errno's words,
        so the log and the status name the file and the cause. A repository that could not be
        reached makes the status say so at once, not at the listing's next refresh."""
        code = logged_errno(exc, path)
        if isinstance(exc, Unreachable):
            self.context.namespace.server_reachable = False
        if is_failure(exc):
            self.last_failure = {"path": path, "error": str(exc), "errno": errno.errorcode.get(code, str(code)),
                                 "at": time.time()}
        return code

    def _writable_for(self, path: str) -> str | None:
        staged = _staged_path(path)
        if staged is None or self.staging is None:
            raise read_only(path)
        return staged

    # --- attributes and listings -------------------------------------------------------------

    def inode(self, path: str) -> int:
        """The inode number `stat` shows for PATH (`eotdlfs.fs.inodes`)."""
        if self.staging is not None and _staged_path(path) not in (None, "/"):
            return self._staged_inodes.number(path)
        return path_inode(path)

    @_guarded
    def getattr(self, path, fh=None):
        if path == "/":
            return self._root_attrs()
        staged = _staged_path(path)
        if staged is not None and self.staging is not None:
            owner = self._handles.get(fh.fh) if fh is not None else None
            return self._stage("getattr", staged, owner[1] if owner and owner[0] == STAGED else None)
        if path == "/" + STATUS_DIR:
            return dict(self._root_attrs(), st_mode=stat.S_IFDIR | 0o555)
        if path == STATUS_PATH:
            return dict(self._root_attrs(), st_mode=stat.S_IFREG | 0o444, st_nlink=1,
                        st_size=len(self._status()), st_mtime=time.time_ns())
        return self.tree.getattr(path)

    @_guarded
    def fill_listed_stat(self, path: str, st: c_stat) -> bool:
        """Fill ST as `getattr` would for a file of a version listed before; False for any other
        path. `ls -l` of a fresh folder looks up every file once: this skips the attribute dict
        and fusepy's field-by-field copy of it, most of what such a lookup costs in Python."""
        found = self.tree.listed_file(path)
        if found is None:
            return False
        size, mtime = found
        ctypes.memmove(ctypes.addressof(st), self._file_stat, len(self._file_stat))
        st.st_size, st.st_blocks = size, blocks_of(size)
        seconds, nanos = divmod(int(mtime * 1e9), 1_000_000_000)  # as `getattr` rounds it
        for spec in (st.st_atimespec, st.st_mtimespec, st.st_ctimespec):
            spec.tv_sec, spec.tv_nsec = seconds, nanos
        return True

    @_guarded
    def readdir(self, path, fh):
        if path == "/":
            names = list(KINDS) + ([STAGING] if self.staging is not None else []) + [STATUS_DIR]
        elif path == "/" + STATUS_DIR:
            names = [STATUS_FILE]
        elif (staged := _staged_path(path)) is not None and self.staging is not None:
            return [".", ".."] + list(self._stage("readdir", staged, fh))
        else:
            names = self.tree.listdir(path)
        return [".", ".."] + names

    @_guarded
    def readlink(self, path):
        staged = _staged_path(path)
        if staged is not None and self.staging is not None:
            return self._stage("readlink", staged)
        return self.tree.readlink(path)

    @_guarded
    def getxattr(self, path, name, position=0):
        staged = _staged_path(path)
        if staged is not None and self.staging is not None:
            return self._stage("getxattr", staged, name, position)
        if not name.startswith(XATTR_PREFIX) or path == "/" or path.startswith("/" + STATUS_DIR):
            raise FuseOSError(errno.ENODATA)  # (names outside user.* never get here: `fuse_binding`)
        return self.tree.getxattr(path, name)

    @_guarded
    def listxattr(self, path):
        staged = _staged_path(path)
        if staged is not None and self.staging is not None:
            return self._stage("listxattr", staged)
        if path == "/" or path.startswith("/" + STATUS_DIR):
            return []
        return list(self.tree.xattrs(path))

    @_guarded
    def access(self, path, amode):
        staged = _staged_path(path)
        if staged is not None and self.staging is not None:
            return self._stage("access", staged, amode) if hasattr(self.staging, "access") else 0
        if amode & os.W_OK and path != "/":
            raise read_only(path)
        if path not in ("/", "/" + STATUS_DIR, STATUS_PATH):
            self.tree.getattr(path)
        return 0

    @_guarded
    def statfs(self, path):
        staged = _staged_path(path)
        if staged is not None and self.staging is not None and hasattr(self.staging, "statfs"):
            return self.staging.statfs(staged)
        size = self.context.cache.block_size
        return {"f_bsize": size, "f_frsize": size, "f_blocks": 0, "f_bfree": 0, "f_bavail": 0,
                "f_files": 0, "f_ffree": 0, "f_favail": 0, "f_namemax": 255}

    # --- files -----------------------------------------------------------------------------

    @_guarded
    def open(self, path, fi):
        staged = _staged_path(path)
        if staged is not None and self.staging is not None:
            fi.fh = self._add_handle(STAGED, self._stage("open", staged, fi.flags))
            return 0
        if path == STATUS_PATH:
            fi.direct_io = 1  # its size changes between reads
            fi.fh = self._add_handle(VIRTUAL, self._status())
            return 0
        handle = self.tree.open(path, fi.flags)
        fi.fh = self._add_handle(TREE, handle)
        # Published bytes never change, so the kernel keeps its pages across opens; unless the
        # file once failed its checksum: then pages it may hold from that read are dropped.
        fi.keep_cache = 0 if self.context.fetcher.has_failed(handle.content.checksum) else 1
        return 0

    @_guarded
    def read_into(self, path, target, offset, fi):
        """Fill TARGET (the kernel's buffer) from OFFSET; the byte count (see `fuse_binding._DirectFUSE`)."""
        owner, value = self._handle(fi)
        if owner == TREE:
            return self.tree.read_into(value, target, offset)
        if owner == VIRTUAL:
            data = value[offset:offset + len(target)]
        else:
            data = self._stage("read", _staged_path(path) or path, len(target), offset, value)
        target[:len(data)] = data
        return len(data)

    read = read_into  # the name the binding looks for; `_DirectFUSE.read` calls read_into

    @_guarded
    def release(self, path, fi):
        with self._lock:
            owner, value = self._handles.pop(fi.fh, (None, None))
        if owner == TREE:
            self.tree.release(value)
        elif owner == STAGED:
            self._stage("release", _staged_path(path) or path, value)
        return 0

    @_guarded
    def flush(self, path, fi):
        owner, value = self._handle(fi)
        if owner == STAGED:
            return self._stage("flush", _staged_path(path) or path, value)
        return 0

    @_guarded
    def fsync(self, path, datasync, fi):
        owner, value = self._handle(fi)
        if owner == STAGED:
            return self._stage("fsync", _staged_path(path) or path, datasync, value)
        return 0

    # --- writes: staging only ---------------------------------------------------------------

    @_guarded
    def create(self, path, mode, fi):
        uid, gid, _ = fuse_get_context()
        fi.fh = self._add_handle(STAGED, self._stage("create", self._writable_for(path), mode, fi.flags,
                                                     uid=uid, gid=gid))
        return 0

    @_guarded
    def write(self, path, data, offset, fi):
        owner, value = self._handle(fi)
        if owner != STAGED:
            raise read_only(path)
        return self._stage("write", _staged_path(path) or path, data, offset, value)

    @_guarded
    def fallocate(self, path, mode, offset, length, fi):
        owner, value = self._handle(fi)
        if owner != STAGED:
            raise read_only(path)
        return self._stage("fallocate", _staged_path(path) or path, mode, offset, length, value)

    @_guarded
    def truncate(self, path, length, fh=None):
        staged = self._writable_for(path)
        owner = self._handles.get(fh.fh) if fh is not None else None
        return self._stage("truncate", staged, length, owner[1] if owner and owner[0] == STAGED else None)

    @_guarded
    def rename(self, old, new):
        old_staged, new_staged = _staged_path(old), _staged_path(new)
        if old_staged is None and new_staged is None:
            raise read_only(old)
        if old_staged is None or new_staged is None:
            raise FuseOSError(errno.EXDEV)
        self._writable_for(old)
        self.staging.rename(old_staged, new_staged)
        try:
            folder = stat.S_ISDIR(self.staging.getattr(new_staged, None)["st_mode"])
        except OSError:
            folder = False  # gone meanwhile
        self._staged_inodes.renamed(old, new, folder)
        return 0

    @_guarded
    def mkdir(self, path, mode):
        uid, gid, _ = fuse_get_context()
        return self._stage("mkdir", self._writable_for(path), mode, uid=uid, gid=gid)

    @_guarded
    def rmdir(self, path):
        self._stage("rmdir", self._writable_for(path))
        self._staged_inodes.removed(path)
        return 0

    @_guarded
    def unlink(self, path):
        self._stage("unlink", self._writable_for(path))
        self._staged_inodes.removed(path)
        return 0

    @_guarded
    def chmod(self, path, mode):
        return self._stage("chmod", self._writable_for(path), mode)

    @_guarded
    def chown(self, path, uid, gid):
        return self._stage("chown", self._writable_for(path), uid, gid)

    @_guarded
    def utimens(self, path, times=None):
        return self._stage("utimens", self._writable_for(path), times)

    @_guarded
    def symlink(self, target, source):
        uid, gid, _ = fuse_get_context()
        return self._stage("symlink", self._writable_for(target), source, uid=uid, gid=gid)

    @_guarded
    def link(self, target, source):
        new = self._writable_for(target)
        existing = _staged_path(source)
        if existing is None:
            raise FuseOSError(errno.EXDEV)  # a published file: `cp` it instead
        self._stage("link", new, existing)
        self._staged_inodes.linked(source, target)
        return 0

    @_guarded
    def mknod(self, path, mode, dev):
        uid, gid, _ = fuse_get_context()
        return self._stage("mknod", self._writable_for(path), mode, dev, uid=uid, gid=gid)

    @_guarded
    def setxattr(self, path, name, value, options, position=0):
        staged = self._writable_for(path)
        return self._stage("setxattr", staged, name, value, options, position, uid=fuse_get_context()[0])

    @_guarded
    def removexattr(self, path, name):
        return self._stage("removexattr", self._writable_for(path), name)

    def destroy(self, path):
        if self.staging is not None and hasattr(self.staging, "destroy"):
            try:
                self.staging.destroy()
            except Exception:
                log.exception("staging overlay failed to shut down cleanly")
        self.context.close()
