"""A writable copy-on-write view of one record (kind, name) over its latest published version: its tree.

Unchanged files read through to the published bytes (`open_base`, the mount's block
cache); a file opened for writing or truncated is first copied up into the upper folder
on local disk (`openfiles`); every change of the tree (create, delete, rename, mkdir, ...)
is a transaction of the record's `StagingJournal`; a flush freezes, publishes and merges
through `publishing`. Paths are relative to the record root, '' being the root itself.
Failures are `OSError`s with an explicit errno.

Locks. `StagingOverlay._lock` (an RLock) guards the tree's consistency across the journal
and the upper folder, the counters of open files and writers, the frozen set and the dirty
flag; it is held around every tree change and released while published bytes are copied
up. The journal has its own lock, taken inside the overlay's (never the other way round),
so lookups that read one journal row need only the journal's. `last_change` is a float
written without a lock (a stale value only delays an autoflush by one check).
Order across objects: StagingArea._create_lock -> StagingArea._lock; StagingOverlay._lock ->
StagingJournal._lock; a RecordFlusher's lock is never held while calling the overlay.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator

from eotdlfs.fs.staging.files import BaseVersion, OpenBase, staging_error
from eotdlfs.fs.staging.journal import StagingJournal
from eotdlfs.fs.staging.nodetable import Node, parent_of
from eotdlfs.fs.staging.nodes import Nodes
from eotdlfs.fs.staging.openfiles import OpenFiles, StagedHandle
from eotdlfs.fs.staging.publishing import Publishing

log = logging.getLogger(__name__)


def _attrs(node: Node, nlink: int, size: int, staged: os.stat_result | None = None) -> dict:
    """NODE's `stat`; a staged file's times are its STAGED file's (writes and utimens land there),
    its ctime also moved by what only the journal records (chmod, chown, link, rename), its blocks
    the staged file's, holes left out (`du`, and `cp`'s sign that a file has holes worth keeping)."""
    mtime, atime, ctime, blocks = node.mtime_ns, node.atime_ns, node.ctime_ns, -(-size // 512)
    if staged is not None:
        mtime, atime, ctime = staged.st_mtime_ns, staged.st_atime_ns, max(staged.st_ctime_ns, ctime or 0)
        blocks = staged.st_blocks
    return {"st_mode": node.mode, "st_nlink": nlink, "st_size": size, "st_blocks": blocks,
            "st_mtime": mtime, "st_atime": mtime if atime is None else atime,
            "st_ctime": mtime if ctime is None else ctime, "st_rdev": node.rdev,
            "st_uid": os.getuid() if node.uid is None else node.uid,
            "st_gid": os.getgid() if node.gid is None else node.gid}


class StagingOverlay(OpenFiles, Publishing, Nodes):
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
        self._open_count = 0  # files open (the handles live in the mount's handle table)
        self._writers: Counter[str] = Counter()
        self._settling: dict[str, float] | None = None  # while a flush freezes: upper id -> when its writer closed
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
            return self._open_count > 0

    def start_new(self) -> None:
        """Make a new record (no published version yet) durable, so it outlives a remount while empty."""
        with self._lock:
            self._begin_change_locked()

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
                raise staging_error(errno.ENOENT if above.is_dir else errno.ENOTDIR, path)
            parent = parent_of(parent)
        raise staging_error(errno.ENOENT, path)

    def _check_parent(self, path: str) -> None:
        parent = parent_of(path)
        if parent is None:
            raise staging_error(errno.EBUSY, path)
        if not self._lookup(parent).is_dir:
            raise staging_error(errno.ENOTDIR, path)

    def _size(self, node: Node) -> int:
        if node.upper:
            with self._staged_bytes(node.path, node.upper) as upper:
                return os.stat(upper).st_size
        entry = self.journal.base_entry(node.base_path) if node.base_path else None
        return entry.size if entry else 0

    def getattr(self, path: str, handle: StagedHandle | None = None) -> dict:
        """A `stat` dict, times in nanoseconds; with HANDLE, of the open file even when unlinked (fstat)."""
        if handle is not None and handle.fd is not None:
            node = self.journal.node(path) or Node(path, False)
            st = os.fstat(handle.fd)
            return _attrs(node, self.journal.links(node.ino), st.st_size, st)
        node = self._lookup(path)
        if node.is_dir:  # '.', its name in its parent, and each subfolder's '..'
            return _attrs(node, 2 + self.journal.subfolders(path), 0)
        if node.target is not None:
            return _attrs(node, 1, len(os.fsencode(node.target)))
        nlink = self.journal.links(node.ino)
        if node.upper:
            try:
                st = os.stat(self.upper_path(node.upper))
            except FileNotFoundError:
                self._lost_bytes(path, node.upper)  # logged; a stat that failed would keep `rm` from removing it
                return _attrs(node, nlink, 0)
            return _attrs(node, nlink, st.st_size, st)
        return _attrs(node, nlink, self._size(node))

    def readdir(self, path: str) -> list[str]:
        node = self._lookup(path)
        if not node.is_dir:
            raise staging_error(errno.ENOTDIR, path)
        return [child.path.rpartition("/")[2] for child in self.journal.children(path)]

    def exists(self, path: str) -> bool:
        return self.journal.node(path) is not None

    def _drop_upper_locked(self, upper: str | None) -> None:
        """Delete a staged file no node refers to any more (another hard link may), unless a flush
        is shipping it. Open descriptors keep their bytes (POSIX unlink semantics)."""
        if upper and upper not in self._frozen and not self.journal.upper_in_use(upper):
            self.upper_path(upper).unlink(missing_ok=True)

    # -- tree changes -------------------------------------------------------------------

    def mkdir(self, path: str, mode: int, uid: int | None = None, gid: int | None = None) -> None:
        with self._lock:
            self._new_node_locked(Node(path, True, mode=stat.S_IFDIR | (mode & 0o7777), mtime_ns=time.time_ns(),
                                       uid=uid, gid=gid))

    def rmdir(self, path: str) -> None:
        with self._lock:
            node = self._lookup(path)
            if not node.is_dir:
                raise staging_error(errno.ENOTDIR, path)
            if path == "":
                raise staging_error(errno.EBUSY, path)
            if self.journal.has_children(path):
                raise staging_error(errno.ENOTEMPTY, path)
            self._begin_change_locked()
            with self.journal.transaction() as tx:
                tx.delete(path)
                tx.touch(parent_of(path), time.time_ns())

    def unlink(self, path: str) -> None:
        with self._lock:
            node = self._lookup(path)
            if node.is_dir:
                raise staging_error(errno.EISDIR, path)
            self._begin_change_locked()
            now = time.time_ns()
            with self.journal.transaction() as tx:
                tx.delete(path)
                tx.touch(parent_of(path), now)
                self._unlinked_locked(tx, node, now)
            self._drop_upper_locked(node.upper)

    def rename(self, old: str, new: str) -> None:
        with self._lock:
            if old == "" or new == "":
                raise staging_error(errno.EBUSY, old)
            # The kernel's order: both parent folders, then the source, then the target.
            self._check_parent(old)
            self._check_parent(new)
            source = self._lookup(old)
            if old == new:
                return
            if new.startswith(old + "/"):
                raise staging_error(errno.EINVAL, new)
            if old.startswith(new + "/"):
                raise staging_error(errno.ENOTEMPTY, new)  # moving a folder's content over the folder itself
            target = self.journal.node(new)
            if target is not None:
                if source.is_dir and not target.is_dir:
                    raise staging_error(errno.ENOTDIR, new)
                if target.is_dir and not source.is_dir:
                    raise staging_error(errno.EISDIR, new)
                if target.is_dir and self.journal.has_children(new):
                    raise staging_error(errno.ENOTEMPTY, new)
            self._begin_change_locked()
            now = time.time_ns()
            with self.journal.transaction() as tx:
                tx.delete(old)
                tx.put(replace(source, path=new, ctime_ns=now))
                if source.is_dir:
                    tx.move_subtree(old, new)
                tx.touch(parent_of(old), now)
                tx.touch(parent_of(new), now)
                if target is not None:
                    self._unlinked_locked(tx, target, now)
            if target is not None:
                self._drop_upper_locked(target.upper)

    def utimens(self, path: str, atime_ns: int | None, mtime_ns: int | None) -> None:
        """New access and modification times, None keeping one (UTIME_OMIT); the ctime becomes now."""
        with self._lock:
            node = self._lookup(path)
            if node.upper:
                with self._staged_bytes(path, node.upper) as upper:
                    st = os.stat(upper)
                    os.utime(upper, ns=(st.st_atime_ns if atime_ns is None else atime_ns,
                                        st.st_mtime_ns if mtime_ns is None else mtime_ns))
                return
            self.journal.make_durable()
            with self.journal.transaction() as tx:
                tx.put(replace(node, mtime_ns=node.mtime_ns if mtime_ns is None else mtime_ns, ctime_ns=time.time_ns(),
                               atime_ns=node.atime_ns if atime_ns is None else atime_ns))

    def chmod(self, path: str, mode: int) -> None:
        """Permission bits are kept for `stat` (cp -p, rsync, tar set them) but not versioned."""
        with self._lock:
            node = self._lookup(path)
            self.journal.make_durable()  # kept, but not a change a flush ships
            with self.journal.transaction() as tx:
                tx.put(replace(node, mode=stat.S_IFMT(node.mode) | (mode & 0o7777), ctime_ns=time.time_ns()))

    def chown(self, path: str, uid: int | None, gid: int | None) -> None:
        """Owners are kept for `stat` and the kernel's permission checks (tar and rsync -a as root
        set them) but not versioned; None keeps the current one."""
        with self._lock:
            node = self._lookup(path)
            self.journal.make_durable()  # kept, but not a change a flush ships
            with self.journal.transaction() as tx:
                tx.put(replace(node, uid=node.uid if uid is None else uid, gid=node.gid if gid is None else gid,
                               ctime_ns=time.time_ns()))
