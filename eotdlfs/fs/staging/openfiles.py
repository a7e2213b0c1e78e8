"""Open files of a staged record: open, create, read, write, truncate, release, and copy-up.

A file opened for writing (or truncated) first gets a staged file of its own in the upper
folder: its published bytes are copied up without the overlay's lock (they may come from
the server), then the node is pointed at the copy if it did not change meanwhile. Open
files are `StagedHandle`s: the mount keeps them in its one handle table (the FUSE
adapter's) and hands them back on every call; the overlay only counts them.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import logging
import os
import stat
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from eotdlfs.fs.staging.files import BaseFile, staging_error
from eotdlfs.fs.staging.nodetable import Node, parent_of
from eotdlfs.repository import FileEntry

if TYPE_CHECKING:
    from eotdlfs.fs.staging.overlay import StagingOverlay

COPY_CHUNK = 4 << 20
STAGED_FILE_MODE = 0o600  # staged bytes may be unpublished: the mount's user alone reads them on disk
# Staged bytes never take the last of the disk: the journal needs room to record even the
# unlink that frees space again, else a full disk could not be cleaned through the mount.
MIN_FREE_BYTES = 1 << 20
MAX_RETRIES = 8  # copy-ups lost to a concurrent change before giving up
FALLOC_FL_PUNCH_HOLE = 0x02  # linux/falloc.h: frees the range (with FALLOC_FL_KEEP_SIZE)

_libc = ctypes.CDLL(None, use_errno=True)  # fallocate(2) with a mode: os has posix_fallocate alone
_libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)

log = logging.getLogger(__name__)


@dataclass(eq=False)
class StagedHandle:
    """One open staged or published file of a record (pread and pwrite on its fd need no lock)."""

    overlay: "StagingOverlay"
    upper: str | None  # staged file open through fd
    fd: int | None
    base: BaseFile | None  # else a published file
    size: int  # of the published file
    writable: bool
    unwritten_copy: bool = False  # a copy-up of published bytes, not written yet through any handle


def _new_staged_file(path: Path) -> BinaryIO:
    """PATH created for writing with STAGED_FILE_MODE, whatever the umask."""
    return os.fdopen(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, STAGED_FILE_MODE), "wb")


class OpenFiles:
    """The open-file half of `StagingOverlay` (a mixin: it uses the overlay's lock, journal and counters)."""

    def _opened_locked(self, upper: str | None, fd: int | None, base: BaseFile | None, size: int,
                       writable: bool) -> StagedHandle:
        self._open_count += 1
        if writable and upper:
            self._writers[upper] += 1
        return StagedHandle(self, upper, fd, base, size, writable)

    def _new_upper_locked(self, node: Node, now_ns: int, created: bool = False) -> Node:
        """Give NODE a new, empty staged file (O_TRUNC, truncate to 0, or a frozen file being replaced);
        CREATED: NODE is new, its folder's times change too."""
        upper = uuid.uuid4().hex
        _new_staged_file(self.upper_path(upper)).close()
        staged = replace(node, upper=upper, base_path=None, mtime_ns=now_ns)
        try:
            with self.journal.transaction() as tx:
                tx.put(staged)
                if created:
                    tx.touch(parent_of(node.path), now_ns)
        except BaseException:
            self.upper_path(upper).unlink(missing_ok=True)
            raise
        self._drop_upper_locked(node.upper)
        return staged

    def _copy_up(self, node: Node, limit: int | None = None) -> None:
        """Copy NODE's bytes (at most LIMIT) into a new staged file and point NODE at it.

        Runs without the lock (the base may be remote and slow); if the node changed
        meanwhile the copy is discarded and the caller looks again.
        """
        upper = uuid.uuid4().hex
        target = self.upper_path(upper)
        size = self._size(node) if limit is None else min(limit, self._size(node))
        _check_room(os.statvfs(self.upper_dir), size)
        try:
            if node.upper:
                with self._staged_bytes(node.path, node.upper) as source, open(source, "rb") as src, \
                        _new_staged_file(target) as dst:
                    _copy_bytes(src, dst, size)
            else:
                self._copy_base(node, target, size)
            with self._lock:
                if self.journal.node(node.path) != node:
                    target.unlink(missing_ok=True)
                    return
                with self.journal.transaction() as tx:
                    tx.put(replace(node, upper=upper, base_path=None))
                    if limit is None and not node.upper:  # all its published bytes, checked by SHA-1
                        tx.execute("INSERT INTO copies VALUES (?, ?)",
                                   (upper, self.journal.base_entry(node.base_path).checksum))
        except BaseException:
            target.unlink(missing_ok=True)
            raise

    def _copy_base(self, node: Node, target: Path, size: int) -> None:
        """The first SIZE bytes of NODE's published file into TARGET, never bytes that fail its
        SHA-1 (a damaged cache): after a mismatch its cached bytes are dropped and copied once
        more, fetched afresh; EIO if they fail again."""
        entry = self.journal.base_entry(node.base_path)
        if entry is None:
            raise staging_error(errno.EIO, node.path)
        for _ in range(2):
            source = self._open_base(entry)
            try:
                if _copy_checked(source, entry, target, size):
                    return
                log.warning("copy-up of %s: its published bytes failed their SHA-1; dropped", node.path)
                source.drop_cached()
            finally:
                source.close()
        raise staging_error(errno.EIO, node.path)

    def _writable_node(self, path: str, truncate_to: int | None) -> Node:
        """PATH's node once it has a staged file of its own that is not frozen; lock held on return.

        TRUNCATE_TO 0 skips copying bytes that would be thrown away at once."""
        for _ in range(MAX_RETRIES):
            self._lock.acquire()
            try:
                node = self._lookup(path)
                if node.is_dir:
                    raise staging_error(errno.EISDIR, path)
                self._begin_change_locked()
                if node.upper and node.upper not in self._frozen:
                    return node
                if truncate_to == 0:
                    return self._new_upper_locked(node, time.time_ns())
            except BaseException:
                self._lock.release()
                raise
            self._lock.release()
            self._copy_up(node, truncate_to)
        raise staging_error(errno.EAGAIN, path)

    def open(self, path: str, flags: int) -> StagedHandle:
        writable = flags & os.O_ACCMODE != os.O_RDONLY
        if not writable:
            with self._lock:
                node = self._lookup(path)
                if node.is_dir:
                    raise staging_error(errno.EISDIR, path)
                if node.upper:
                    with self._staged_bytes(path, node.upper) as upper:
                        fd = os.open(upper, os.O_RDONLY)
                    return self._opened_locked(node.upper, fd, None, 0, False)
                entry = self.journal.base_entry(node.base_path)
                if entry is None:
                    raise staging_error(errno.EIO, path)
            base = self._open_base(entry)  # outside the lock: it may ask the server
            with self._lock:
                return self._opened_locked(None, None, base, entry.size, False)
        node = self._writable_node(path, 0 if flags & os.O_TRUNC else None)
        try:
            # O_APPEND on the staged file makes every pwrite append, whatever size the kernel believed.
            with self._staged_bytes(path, node.upper) as upper:
                fd = os.open(upper, os.O_RDWR | (flags & os.O_APPEND))
            if flags & os.O_TRUNC:
                os.ftruncate(fd, 0)
            handle = self._opened_locked(node.upper, fd, None, 0, True)
            handle.unwritten_copy = self.journal.copy_checksum(node.upper) is not None
            if handle.unwritten_copy and flags & os.O_TRUNC:
                self._written(handle)
            return handle
        finally:
            self._lock.release()

    def create(self, path: str, mode: int, flags: int = os.O_WRONLY, uid: int | None = None,
               gid: int | None = None) -> StagedHandle:
        """A new staged file (or PATH opened, when it exists), owned by UID:GID (None: the mount's user)."""
        for _ in range(MAX_RETRIES):
            with self._lock:
                if self.journal.node(path) is None:
                    self._check_parent(path)
                    self._begin_change_locked()
                    node = Node(path, False, mode=stat.S_IFREG | (mode & 0o7777), uid=uid, gid=gid)
                    node = self._new_upper_locked(node, time.time_ns(), created=True)
                    fd = os.open(self.upper_path(node.upper), os.O_RDWR | (flags & os.O_APPEND))
                    return self._opened_locked(node.upper, fd, None, 0, True)
                if flags & os.O_EXCL:
                    raise staging_error(errno.EEXIST, path)
            try:  # outside the lock: opening for writing may copy up a published file from the server
                return self.open(path, flags)
            except FileNotFoundError:
                continue  # removed meanwhile: create it after all
        raise staging_error(errno.EAGAIN, path)

    def read(self, handle: StagedHandle, size: int, offset: int) -> bytes:
        if handle.fd is not None:
            return os.pread(handle.fd, size, offset)
        if handle.base is None or offset >= handle.size:
            return b""
        return handle.base.read(offset, min(size, handle.size - offset))

    def write(self, handle: StagedHandle, data: bytes, offset: int) -> int:
        if not handle.writable:
            raise staging_error(errno.EBADF, "file not open for writing")
        _check_room(os.fstatvfs(handle.fd), len(data))
        self._written(handle)
        written = os.pwrite(handle.fd, data, offset)
        self.last_change = time.monotonic()
        return written

    def fallocate(self, handle: StagedHandle, mode: int, offset: int, length: int) -> None:
        """fallocate(2) with MODE on the staged file: reserve or extend, punch a hole, zero a range."""
        if not handle.writable:
            raise staging_error(errno.EBADF, "file not open for writing")
        if not mode & FALLOC_FL_PUNCH_HOLE:
            _check_room(os.fstatvfs(handle.fd), length)
        self._written(handle)
        if _libc.fallocate(handle.fd, mode, offset, length) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        self.last_change = time.monotonic()

    def truncate(self, path: str, length: int, handle: StagedHandle | None = None) -> None:
        if handle is not None and handle.writable:
            self._written(handle)
            os.ftruncate(handle.fd, length)
            self.last_change = time.monotonic()
            return
        node = self._writable_node(path, length)
        try:
            self.journal.forget_copy(node.upper)
            with self._staged_bytes(path, node.upper) as upper:
                os.truncate(upper, length)
        finally:
            self._lock.release()

    def _written(self, handle: StagedHandle) -> None:
        """HANDLE's staged file is about to change: from now on it is a change, whatever its bytes."""
        if handle.unwritten_copy:
            self.journal.forget_copy(handle.upper)
            handle.unwritten_copy = False

    def fsync(self, handle: StagedHandle) -> None:
        if handle.fd is not None and handle.writable:
            os.fsync(handle.fd)

    def release(self, handle: StagedHandle) -> None:
        with self._lock:
            self._open_count -= 1
            if handle.writable and handle.upper:
                self._writers[handle.upper] -= 1
                if not self._writers[handle.upper]:
                    del self._writers[handle.upper]
                    if self._settling is not None:  # a flush waits: it lets this file settle
                        self._settling[handle.upper] = time.monotonic()
                self._released.notify_all()
        if handle.fd is not None:
            os.close(handle.fd)
        if handle.base is not None:
            handle.base.close()


def _check_room(st: os.statvfs_result, size: int) -> None:
    """ENOSPC unless SIZE more bytes leave MIN_FREE_BYTES free on the staging disk."""
    if st.f_bavail * st.f_frsize < size + MIN_FREE_BYTES:
        raise OSError(errno.ENOSPC, "no space left for staged files (the staging journal keeps 1 MiB free)")


def _copy_checked(source: BaseFile, entry: FileEntry, target: Path, size: int) -> bool:
    """SOURCE's first SIZE bytes into a new file TARGET, reading on to its end to hash it all;
    whether the bytes matched ENTRY's SHA-1 (TARGET is removed when not)."""
    digest = hashlib.sha1()
    with _new_staged_file(target) as dst:
        offset = 0
        while offset < entry.size:
            chunk = source.read(offset, min(COPY_CHUNK, entry.size - offset))
            if not chunk:
                raise staging_error(errno.EIO, entry.path)
            digest.update(chunk)
            if offset < size:
                dst.write(memoryview(chunk)[:size - offset])
            offset += len(chunk)
    if digest.hexdigest() == entry.checksum:
        return True
    target.unlink()
    return False


def _copy_bytes(src, dst, size: int) -> None:
    remaining = size
    while remaining > 0:
        chunk = src.read(min(COPY_CHUNK, remaining))
        if not chunk:
            break
        dst.write(chunk)
        remaining -= len(chunk)
