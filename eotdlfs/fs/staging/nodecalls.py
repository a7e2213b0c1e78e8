"""The `staging/` folder's calls on a node's attributes and on the nodes a version does not hold
(chmod, chown, utimens, symlink, readlink, link, mknod), routed to the record's overlay.

A new node belongs to the caller (UID:GID from the FUSE context; None: the mount's user);
who may make it, and who may change its mode or owner, the kernel decides
(`default_permissions` on an `--allow-other` mount), as on a disk.
"""

from __future__ import annotations

import errno
import time

from eotdlfs.fs.staging.files import staging_error

UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2  # <sys/stat.h>, as fusepy's use_ns hands them over
_UNCHANGED_ID = (-1, (1 << 32) - 1)  # chown's "keep this one": (uid_t) -1


def _time(value: int, now_ns: int) -> int | None:
    """One time of utimensat: None to keep (UTIME_OMIT), NOW_NS for UTIME_NOW."""
    return None if value == UTIME_OMIT else now_ns if value == UTIME_NOW else value


class NodeCalls:
    """A mixin of `StagingArea`: it uses the area's `_node_at` (the overlay and relative path of a
    path, None above the records) and `_new_path` (the same for a name being made, checked)."""

    def chmod(self, path: str, mode: int) -> None:
        overlay, rel = self._node_at(path)
        if overlay is not None:
            overlay.chmod(rel, mode)

    def chown(self, path: str, uid: int, gid: int) -> None:
        """A new owner and group, each -1 (as libfuse hands it: 2**32 - 1) for unchanged; above
        the records they stay."""
        overlay, rel = self._node_at(path)
        if overlay is not None:
            overlay.chown(rel, None if uid in _UNCHANGED_ID else uid, None if gid in _UNCHANGED_ID else gid)

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> None:
        """Access and modification times. libfuse passes UTIME_NOW / UTIME_OMIT as a zero second with
        that marker in the nanoseconds (`touch`, `touch -a`, `tar x`)."""
        overlay, rel = self._node_at(path)
        if overlay is None:
            return
        now = time.time_ns()
        atime, mtime = (_time(t, now) for t in times) if times else (now, now)
        if atime is None and mtime is None:
            overlay.getattr(rel)  # ENOENT still applies
            return
        overlay.utimens(rel, atime, mtime)

    def readlink(self, path: str) -> str:
        overlay, rel = self._node_at(path)
        if overlay is None:
            raise staging_error(errno.EINVAL, path)
        return overlay.readlink(rel)

    def symlink(self, path: str, target: str, uid: int | None = None, gid: int | None = None) -> None:
        """PATH, a new symlink to TARGET (fusepy's order: the new name first)."""
        overlay, rel = self._new_path(path)
        overlay.symlink(rel, target, uid, gid)

    def mknod(self, path: str, mode: int, rdev: int, uid: int | None = None, gid: int | None = None) -> None:
        overlay, rel = self._new_path(path)
        overlay.mknod(rel, mode, rdev, uid, gid)

    def link(self, path: str, existing: str) -> None:
        """PATH, a new name of EXISTING (fusepy's order); across records EXDEV, as a disk across devices."""
        overlay, rel = self._new_path(path)
        source, old = self._node_at(existing)
        if source is not overlay:
            raise staging_error(errno.EXDEV if source is not None else errno.EPERM, path)
        overlay.link(old, rel)
