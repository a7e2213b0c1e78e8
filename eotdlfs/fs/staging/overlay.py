"""A writable copy-on-write view of one record (kind, name) over its latest published version.

Unchanged files read through to the published bytes (`open_base`, the mount's block
cache); a file opened for writing or truncated is first copied up into the upper folder
on local disk; every change of the tree (create, delete, rename, mkdir, ...) is a
transaction of the record's `StagingJournal`. Paths are relative to the record root, ''
being the root itself. Failures are `OSError`s with an explicit errno.

A flush freezes the staged files it ships (`freeze`): until it ends, a writer of a frozen
file gets a fresh copy, so the bytes being uploaded never change under the uploader, and
the journal keeps the frozen list so a flush interrupted by a crash can resume.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import stat
import threading
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Sequence

from eotdlfs.hashing import sha1_file
from eotdlfs.fs.staging.files import BaseFile, BaseVersion, OpenBase, PendingChanges, StagedFile
from eotdlfs.fs.staging.journal import Node, StagingJournal, parent_of
from eotdlfs.repository import FileEntry

log = logging.getLogger(__name__)

COPY_CHUNK = 4 << 20
STAGED_FILE_MODE = 0o600  # staged bytes may be unpublished: the mount's user alone reads them on disk
# Staged bytes never take the last of the disk: the journal needs room to record even the
# unlink that frees space again, else a full disk could not be cleaned through the mount.
MIN_FREE_BYTES = 1 << 20
MAX_RETRIES = 8  # copy-ups lost to a concurrent change before giving up


@dataclass
class _Handle:
    upper: str | None  # staged file open through fd
    fd: int | None
    base: BaseFile | None  # else a published file
    size: int  # of the published file
    writable: bool


def _err(code: int, path: str) -> OSError:
    return OSError(code, os.strerror(code), path)


def _attrs(node: Node, nlink: int, size: int, mtime_ns: int) -> dict:
    return {"st_mode": node.mode, "st_nlink": nlink, "st_size": size, "st_blocks": -(-size // 512),
            "st_mtime": mtime_ns, "st_atime": mtime_ns, "st_ctime": mtime_ns,
            "st_uid": os.getuid() if node.uid is None else node.uid,
            "st_gid": os.getgid() if node.gid is None else node.gid}


def _new_staged_file(path: Path) -> BinaryIO:
    """PATH created for writing with STAGED_FILE_MODE, whatever the umask."""
    return os.fdopen(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, STAGED_FILE_MODE), "wb")


class StagingOverlay:
    """The staged tree of one record; thread-safe (FUSE calls it from many threads)."""

    def __init__(self, kind: str, name: str, folder: Path, base: Callable[[], BaseVersion], open_base: OpenBase):
        """BASE is asked for the published version only when FOLDER holds no journal yet."""
        # set once
        self.kind, self.name = kind, name
        self.folder = folder
        self.upper_dir = folder / "upper"
        self.journal = StagingJournal(folder)
        self._open_base = open_base
        if not self.journal.durable:
            first = base()
            self.journal.load_base(first.number, first.entries, first.mtime_ns)
        # guarded by _lock (held around every tree change, never inside a journal transaction)
        self._lock = threading.RLock()
        self._released = threading.Condition(self._lock)
        self._handles: dict[int, _Handle] = {}
        self._next_fh = 1
        self._writers: Counter[str] = Counter()
        self._lost: set[str] = set()  # upper ids found deleted behind our back (logged once each)
        self._frozen: set[str] = {f.key for f in self.frozen_files()}
        self._dirty: bool = self.journal.get_meta("dirty", False)
        self.last_change = 0.0  # time.monotonic() of the last change, for autoflush
        self._collect_garbage_locked()  # staged files a killed process created but never recorded

    # -- state --------------------------------------------------------------------------

    @property
    def base_version(self) -> int | None:
        return self.journal.get_meta("base_version")

    @property
    def dirty(self) -> bool:
        """True from the first change until a flush leaves nothing pending."""
        with self._lock:
            return self._dirty

    @property
    def busy(self) -> bool:
        """True while any file is open (a clean overlay may be rebased only when idle)."""
        with self._lock:
            return bool(self._handles)

    def start_new(self) -> None:
        """Make a new record (no published version yet) durable, so it outlives a remount while empty."""
        with self._lock:
            self._begin_change_locked()

    def follow(self, base: BaseVersion) -> None:
        """Move an unchanged, idle overlay onto BASE (a newer published version); otherwise keep it pinned."""
        with self._lock:
            if self._dirty or self._handles or self._frozen or base.number == self.base_version:
                return
            self.journal.load_base(base.number, base.entries, base.mtime_ns)

    def merge_onto(self, base: BaseVersion) -> list[str]:
        """Apply the staged changes onto BASE, published since staging started (see `StagingJournal.merge_base`)."""
        for _ in range(MAX_RETRIES):
            renamed = [n for n in self.journal.files() if n.upper is None and n.base_path != n.path]
            for node in renamed:  # their base bytes may not be in BASE: keep them here
                self._copy_up(node)
            with self._lock:
                try:
                    return self.journal.merge_base(base.number, base.entries, base.mtime_ns)
                except ValueError:
                    continue  # renamed again meanwhile
        raise _err(errno.EAGAIN, "the staged tree kept changing while merging")

    def upper_path(self, upper: str) -> Path:
        return self.upper_dir / upper

    def _lost_bytes(self, path: str, upper: str) -> OSError:
        """EIO naming the user's file PATH, whose staged file UPPER was deleted outside eotdlfs
        (logged once with the internal path). Not ENOENT: `ls` shows the file, and `rm` removes it."""
        where = f"{self.kind}/{self.name}/{path}"
        with self._lock:
            first = upper not in self._lost
            self._lost.add(upper)
        if first:
            log.error("staged file %s lost its bytes: %s was deleted outside eotdlfs; remove the file and "
                      "copy it in again", where, self.upper_path(upper))
        return OSError(errno.EIO, "its staged bytes were deleted outside eotdlfs; remove the file and copy it in "
                                  "again", where)

    @contextmanager
    def _staged_bytes(self, path: str, upper: str) -> Iterator[Path]:
        """The staged file UPPER of the user's file PATH; FileNotFoundError inside becomes `_lost_bytes`."""
        try:
            yield self.upper_path(upper)
        except FileNotFoundError:
            raise self._lost_bytes(path, upper) from None

    def _begin_change_locked(self) -> None:
        self.last_change = time.monotonic()
        if self._dirty:
            return
        self.journal.make_durable()
        self.upper_dir.mkdir(parents=True, exist_ok=True)
        self.journal.set_meta("dirty", True)
        self._dirty = True

    # -- lookups ------------------------------------------------------------------------

    def _lookup(self, path: str) -> Node:
        node = self.journal.node(path)
        if node is not None:
            return node
        parent = parent_of(path)
        while parent is not None:
            above = self.journal.node(parent)
            if above is not None:
                raise _err(errno.ENOENT if above.is_dir else errno.ENOTDIR, path)
            parent = parent_of(parent)
        raise _err(errno.ENOENT, path)

    def _check_parent(self, path: str) -> None:
        parent = parent_of(path)
        if parent is None:
            raise _err(errno.EBUSY, path)
        if not self._lookup(parent).is_dir:
            raise _err(errno.ENOTDIR, path)

    def _size(self, node: Node) -> int:
        if node.upper:
            with self._staged_bytes(node.path, node.upper) as upper:
                return os.stat(upper).st_size
        entry = self.journal.base_entry(node.base_path) if node.base_path else None
        return entry.size if entry else 0

    def getattr(self, path: str, fh: int | None = None) -> dict:
        """A `stat` dict, times in nanoseconds; with FH, of the open file even when unlinked (fstat)."""
        handle = self._handles.get(fh) if fh is not None else None
        if handle is not None and handle.fd is not None:
            node = self.journal.node(path) or Node(path, False)
            st = os.fstat(handle.fd)
            return _attrs(node, 1, st.st_size, st.st_mtime_ns)
        node = self._lookup(path)
        if node.is_dir:
            return _attrs(node, 2, 0, node.mtime_ns)
        if node.upper:
            try:
                st = os.stat(self.upper_path(node.upper))
            except FileNotFoundError:
                self._lost_bytes(path, node.upper)  # logged; a stat that failed would keep `rm` from removing it
                return _attrs(node, 1, 0, node.mtime_ns)
            return _attrs(node, 1, st.st_size, st.st_mtime_ns)
        return _attrs(node, 1, self._size(node), node.mtime_ns)

    def readdir(self, path: str) -> list[str]:
        node = self._lookup(path)
        if not node.is_dir:
            raise _err(errno.ENOTDIR, path)
        return [child.path.rpartition("/")[2] for child in self.journal.children(path)]

    def exists(self, path: str) -> bool:
        return self.journal.node(path) is not None

    # -- open files ---------------------------------------------------------------------

    def _register_locked(self, handle: _Handle) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = handle
        if handle.writable and handle.upper:
            self._writers[handle.upper] += 1
        return fh

    def _handle(self, fh: int) -> _Handle:
        try:
            return self._handles[fh]
        except KeyError:
            raise OSError(errno.EBADF, "bad file handle") from None

    def _new_upper_locked(self, node: Node, now_ns: int) -> Node:
        """Give NODE a new, empty staged file (O_TRUNC, truncate to 0, or a frozen file being replaced)."""
        upper = uuid.uuid4().hex
        _new_staged_file(self.upper_path(upper)).close()
        staged = replace(node, upper=upper, base_path=None, mtime_ns=now_ns)
        try:
            with self.journal.transaction() as tx:
                tx.put(staged)
        except BaseException:
            self.upper_path(upper).unlink(missing_ok=True)
            raise
        self._drop_upper_locked(node.upper)
        return staged

    def _drop_upper_locked(self, upper: str | None) -> None:
        """Delete a staged file no node refers to any more, unless a flush is shipping it.

        Open descriptors keep their bytes (POSIX unlink semantics)."""
        if upper and upper not in self._frozen:
            self.upper_path(upper).unlink(missing_ok=True)

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
        except BaseException:
            target.unlink(missing_ok=True)
            raise

    def _copy_base(self, node: Node, target: Path, size: int) -> None:
        """The first SIZE bytes of NODE's published file into TARGET, never bytes that fail its
        SHA-1 (a damaged cache): after a mismatch its cached bytes are dropped and copied once
        more, fetched afresh; EIO if they fail again."""
        entry = self.journal.base_entry(node.base_path)
        if entry is None:
            raise _err(errno.EIO, node.path)
        for _ in range(2):
            source = self._open_base(entry)
            try:
                if _copy_checked(source, entry, target, size):
                    return
                log.warning("copy-up of %s: its published bytes failed their SHA-1; dropped", node.path)
                source.drop_cached()
            finally:
                source.close()
        raise _err(errno.EIO, node.path)

    def _writable_node(self, path: str, truncate_to: int | None) -> Node:
        """PATH's node once it has a staged file of its own that is not frozen; lock held on return.

        TRUNCATE_TO 0 skips copying bytes that would be thrown away at once."""
        for _ in range(MAX_RETRIES):
            self._lock.acquire()
            try:
                node = self._lookup(path)
                if node.is_dir:
                    raise _err(errno.EISDIR, path)
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
        raise _err(errno.EAGAIN, path)

    def open(self, path: str, flags: int) -> int:
        writable = flags & os.O_ACCMODE != os.O_RDONLY
        if not writable:
            with self._lock:
                node = self._lookup(path)
                if node.is_dir:
                    raise _err(errno.EISDIR, path)
                if node.upper:
                    with self._staged_bytes(path, node.upper) as upper:
                        fd = os.open(upper, os.O_RDONLY)
                    return self._register_locked(_Handle(node.upper, fd, None, 0, False))
                entry = self.journal.base_entry(node.base_path)
                if entry is None:
                    raise _err(errno.EIO, path)
            base = self._open_base(entry)  # outside the lock: it may ask the server
            with self._lock:
                return self._register_locked(_Handle(None, None, base, entry.size, False))
        node = self._writable_node(path, 0 if flags & os.O_TRUNC else None)
        try:
            # O_APPEND on the staged file makes every pwrite append, whatever size the kernel believed.
            with self._staged_bytes(path, node.upper) as upper:
                fd = os.open(upper, os.O_RDWR | (flags & os.O_APPEND))
            if flags & os.O_TRUNC:
                os.ftruncate(fd, 0)
            return self._register_locked(_Handle(node.upper, fd, None, 0, True))
        finally:
            self._lock.release()

    def create(self, path: str, mode: int, flags: int = os.O_WRONLY, uid: int | None = None,
               gid: int | None = None) -> int:
        """A new staged file (or PATH opened, when it exists), owned by UID:GID (None: the mount's user)."""
        with self._lock:
            if self.journal.node(path) is not None:
                if flags & os.O_EXCL:
                    raise _err(errno.EEXIST, path)
                return self.open(path, flags)
            self._check_parent(path)
            self._begin_change_locked()
            node = self._new_upper_locked(Node(path, False, mode=stat.S_IFREG | (mode & 0o7777), uid=uid, gid=gid),
                                          time.time_ns())
            fd = os.open(self.upper_path(node.upper), os.O_RDWR | (flags & os.O_APPEND))
            return self._register_locked(_Handle(node.upper, fd, None, 0, True))

    def read(self, fh: int, size: int, offset: int) -> bytes:
        handle = self._handle(fh)
        if handle.fd is not None:
            return os.pread(handle.fd, size, offset)
        if handle.base is None or offset >= handle.size:
            return b""
        return handle.base.read(offset, min(size, handle.size - offset))

    def write(self, fh: int, data: bytes, offset: int) -> int:
        handle = self._handle(fh)
        if not handle.writable:
            raise OSError(errno.EBADF, "file not open for writing")
        _check_room(os.fstatvfs(handle.fd), len(data))
        written = os.pwrite(handle.fd, data, offset)
        self.last_change = time.monotonic()
        return written

    def truncate(self, path: str, length: int, fh: int | None = None) -> None:
        handle = self._handles.get(fh) if fh is not None else None
        if handle is not None and handle.writable:
            os.ftruncate(handle.fd, length)
            self.last_change = time.monotonic()
            return
        node = self._writable_node(path, length)
        try:
            with self._staged_bytes(path, node.upper) as upper:
                os.truncate(upper, length)
        finally:
            self._lock.release()

    def fsync(self, fh: int) -> None:
        handle = self._handle(fh)
        if handle.fd is not None and handle.writable:
            os.fsync(handle.fd)

    def release(self, fh: int) -> None:
        with self._lock:
            handle = self._handles.pop(fh, None)
            if handle is None:
                return
            if handle.writable and handle.upper:
                self._writers[handle.upper] -= 1
                if not self._writers[handle.upper]:
                    del self._writers[handle.upper]
                self._released.notify_all()
        if handle.fd is not None:
            os.close(handle.fd)
        if handle.base is not None:
            handle.base.close()

    # -- tree changes -------------------------------------------------------------------

    def mkdir(self, path: str, mode: int, uid: int | None = None, gid: int | None = None) -> None:
        with self._lock:
            if self.journal.node(path) is not None:
                raise _err(errno.EEXIST, path)
            self._check_parent(path)
            self._begin_change_locked()
            with self.journal.transaction() as tx:
                tx.put(Node(path, True, mode=stat.S_IFDIR | (mode & 0o7777), mtime_ns=time.time_ns(), uid=uid, gid=gid))

    def rmdir(self, path: str) -> None:
        with self._lock:
            node = self._lookup(path)
            if not node.is_dir:
                raise _err(errno.ENOTDIR, path)
            if path == "":
                raise _err(errno.EBUSY, path)
            if self.journal.has_children(path):
                raise _err(errno.ENOTEMPTY, path)
            self._begin_change_locked()
            with self.journal.transaction() as tx:
                tx.delete(path)

    def unlink(self, path: str) -> None:
        with self._lock:
            node = self._lookup(path)
            if node.is_dir:
                raise _err(errno.EISDIR, path)
            self._begin_change_locked()
            with self.journal.transaction() as tx:
                tx.delete(path)
            self._drop_upper_locked(node.upper)

    def rename(self, old: str, new: str) -> None:
        with self._lock:
            if old == "" or new == "":
                raise _err(errno.EBUSY, old)
            # The kernel's order: both parent folders, then the source, then the target.
            self._check_parent(old)
            self._check_parent(new)
            source = self._lookup(old)
            if old == new:
                return
            if new.startswith(old + "/"):
                raise _err(errno.EINVAL, new)
            if old.startswith(new + "/"):
                raise _err(errno.ENOTEMPTY, new)  # moving a folder's content over the folder itself
            target = self.journal.node(new)
            if target is not None:
                if source.is_dir and not target.is_dir:
                    raise _err(errno.ENOTDIR, new)
                if target.is_dir and not source.is_dir:
                    raise _err(errno.EISDIR, new)
                if target.is_dir and self.journal.has_children(new):
                    raise _err(errno.ENOTEMPTY, new)
            self._begin_change_locked()
            with self.journal.transaction() as tx:
                tx.delete(old)
                tx.put(replace(source, path=new))
                if source.is_dir:
                    tx.move_subtree(old, new)
            if target is not None:
                self._drop_upper_locked(target.upper)

    def utimens(self, path: str, mtime_ns: int) -> None:
        with self._lock:
            node = self._lookup(path)
            if node.upper:
                with self._staged_bytes(path, node.upper) as upper:
                    os.utime(upper, ns=(mtime_ns, mtime_ns))
                return
            with self.journal.transaction() as tx:
                tx.put(replace(node, mtime_ns=mtime_ns))

    def chmod(self, path: str, mode: int) -> None:
        """Permission bits are kept for `stat` (cp -p, rsync, tar set them) but not versioned."""
        with self._lock:
            node = self._lookup(path)
            with self.journal.transaction() as tx:
                tx.put(replace(node, mode=stat.S_IFMT(node.mode) | (mode & 0o7777)))

    def chown(self, path: str, uid: int | None, gid: int | None) -> None:
        """Owners are kept for `stat` and the kernel's permission checks (tar and rsync -a as root
        set them) but not versioned; None keeps the current one."""
        with self._lock:
            node = self._lookup(path)
            with self.journal.transaction() as tx:
                tx.put(replace(node, uid=node.uid if uid is None else uid, gid=node.gid if gid is None else gid))

    def statfs(self) -> os.statvfs_result:
        folder = self.folder
        while not folder.exists():
            folder = folder.parent
        return os.statvfs(folder)

    # -- flush support ------------------------------------------------------------------

    def pending(self) -> PendingChanges:
        staged, moved, deleted = self.journal.changes()
        added = [path for path, _, in_base in staged if not in_base] + [path for path, _ in moved]
        changed = [path for path, _, in_base in staged if in_base]
        staged_bytes = sum(size for _, size in moved)
        for _, upper, _ in staged:
            try:
                staged_bytes += os.stat(self.upper_path(upper)).st_size
            except FileNotFoundError:
                pass
        return PendingChanges(tuple(sorted(added)), tuple(changed), tuple(deleted), staged_bytes)

    def frozen_files(self) -> list[StagedFile]:
        """The files of the flush in progress (empty when none)."""
        return [StagedFile.from_json(f) for f in self.journal.get_meta("frozen", [])]

    def freeze(self, timeout: float, on_wait: Callable[[str], None]) -> list[StagedFile]:
        """The staged tree as files to ship, frozen until `unfreeze` or `publish`.

        Waits, at most TIMEOUT seconds, until no file of the tree is open for writing,
        calling ON_WAIT with the path it waits for; raises EBUSY after that.
        """
        deadline = time.monotonic() + timeout
        reported = None
        with self._lock:
            while True:
                files = self.journal.file_sources()
                busy = [path for path, upper, _ in files if upper and self._writers.get(upper)]
                if not busy:
                    break
                if busy[0] != reported:
                    on_wait(busy[0])
                    reported = busy[0]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise OSError(errno.EBUSY, f"{busy[0]} is still open for writing after {timeout:.0f} s;"
                                               " close it and flush again")
                self._released.wait(min(remaining, 1.0))
            staged = [self._staged_file(path, upper) if upper
                      else StagedFile(path, entry.size, entry.checksum, None, f"base:{entry.path}")
                      for path, upper, entry in files]
            self.journal.set_meta("frozen", [f.to_json() for f in staged])
            self._frozen = {f.key for f in staged}
            return staged

    def hash_frozen(self, shipped: list[StagedFile]) -> list[StagedFile]:
        """SHIPPED with the SHA-1 of every staged file filled in, and kept in the journal.

        Frozen files cannot change, so their hash is exact (no size+mtime guess) and a
        resumed flush does not read them again."""
        hashed = [f if f.checksum or f.local_path is None else replace(f, checksum=self._hash_staged(f))
                  for f in shipped]
        with self._lock:
            if self._frozen == {f.key for f in hashed}:
                self.journal.set_meta("frozen", [f.to_json() for f in hashed])
        return hashed

    def _staged_file(self, path: str, upper: str) -> StagedFile:
        with self._staged_bytes(path, upper) as local:
            return StagedFile(path, os.stat(local).st_size, None, local, upper)

    def _hash_staged(self, staged: StagedFile) -> str:
        with self._staged_bytes(staged.path, staged.key):
            return sha1_file(staged.local_path)

    def read_staged(self, staged: StagedFile) -> bytes:
        """The whole content of a frozen file (metadata.yml, read before a flush)."""
        if staged.local_path is not None:
            return staged.local_path.read_bytes()
        entry = self.journal.base_entry(staged.key.removeprefix("base:"))
        if entry is None:
            raise _err(errno.EIO, staged.path)
        source = self._open_base(entry)
        try:
            return source.read(0, entry.size)
        finally:
            source.close()

    def settle(self) -> None:
        """Mark the overlay clean when nothing is pending, so it follows new published versions again."""
        with self._lock:
            if self._dirty and not self._frozen and not self.journal.has_changes():
                self._dirty = False
                self.journal.set_meta("dirty", False)
                self._collect_garbage_locked()

    def unfreeze(self) -> None:
        """End a flush that did not publish: staged files become writable in place again."""
        with self._lock:
            self.journal.set_meta("frozen", [])
            self._frozen = set()
            self._collect_garbage_locked()

    def publish(self, version: int, entries: Sequence[FileEntry], shipped: Sequence[StagedFile]) -> None:
        """The server published SHIPPED as VERSION: make it the base; later changes stay staged."""
        missing = {f.path for f in shipped} - {e.path for e in entries}
        if missing:
            raise ValueError(f"version {version} lacks {len(missing)} shipped file(s), e.g. {min(missing)}")
        mtimes = {f.key: os.stat(f.local_path).st_mtime_ns for f in shipped if f.local_path is not None}
        with self._lock:
            self.journal.rebase(version, entries, {f.key: f.path for f in shipped}, mtimes)
            self.journal.set_meta("frozen", [])
            self._frozen = set()
            self._collect_garbage_locked()
            self._dirty = self.journal.has_changes()
            self.journal.set_meta("dirty", self._dirty)

    def _collect_garbage_locked(self) -> None:
        """Delete staged files no node refers to (open descriptors keep theirs)."""
        if not self.upper_dir.is_dir():
            return
        keep = self.journal.upper_ids() | self._frozen
        for path in self.upper_dir.iterdir():
            if path.name not in keep:
                path.unlink(missing_ok=True)

    def discard(self) -> None:
        """Forget every staged change and the journal (a new record removed with rmdir)."""
        with self._lock:
            self.journal.close()
            shutil.rmtree(self.folder, ignore_errors=True)


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
                raise _err(errno.EIO, entry.path)
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
