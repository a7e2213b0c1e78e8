"""The nodes a disk keeps and a version does not: symlinks, hard links, FIFOs, sockets, devices.

Staging keeps them as a disk does (`stat`, `readlink`, rename, unlink, owners, times), so
tools that make them (`cp -a`, `tar x`, `ln`, `mkfifo`, pjdfstest) work. A version holds
files only, so a flush follows the rule `eotdlfs ingest FOLDER` applies to a local folder
(`client.ingest.sources`): a symlink is followed inside the record and publishes as the
file (or the folder's files) it leads to; a symlink leading outside the record (absolute,
or `..` above its root), dangling or looping, or a FIFO, socket or device, makes the flush
refuse, naming it. Hard links publish as files of the same content (stored once). Once
published, a symlink stays one in staging (the kernel keeps a name's type: turning it into a
file would fail its next lookups with EIO), standing for the files it published as.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from eotdlfs.fs.staging.files import staging_error
from eotdlfs.fs.staging.nodetable import Node, NodeWriter, parent_of
from eotdlfs.repository import FileEntry

if TYPE_CHECKING:
    from eotdlfs.fs.staging.overlay import StagingOverlay

MAX_SYMLINK_HOPS = 40  # as the kernel's ELOOP limit
REFUSED_SHOWN = 20  # nodes named in one refused flush
_SPECIAL = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
            stat.S_IFBLK: "a block device"}


class RefusedNode(OSError):
    """A node of the staged tree a flush cannot publish; the message names it and says why."""


class Nodes:
    """The special-node half of `StagingOverlay` (a mixin: it uses the overlay's lock and journal)."""

    def _new_node_locked(self: "StagingOverlay", node: Node) -> None:
        if self.journal.node(node.path) is not None:
            raise staging_error(errno.EEXIST, node.path)
        self._check_parent(node.path)
        self._begin_change_locked()
        with self.journal.transaction() as tx:
            tx.put(node)
            tx.touch(parent_of(node.path), node.mtime_ns)

    def symlink(self: "StagingOverlay", path: str, target: str, uid: int | None = None,
                gid: int | None = None) -> None:
        with self._lock:
            self._new_node_locked(Node(path, False, mode=stat.S_IFLNK | 0o777, mtime_ns=time.time_ns(),
                                       uid=uid, gid=gid, target=target))

    def readlink(self: "StagingOverlay", path: str) -> str:
        node = self._lookup(path)
        if node.target is None:
            raise staging_error(errno.EINVAL, path)
        return node.target

    def mknod(self: "StagingOverlay", path: str, mode: int, rdev: int, uid: int | None = None,
              gid: int | None = None) -> None:
        """A FIFO, socket or device node (kept, never published), or an empty file (`mknod` of S_IFREG)."""
        if stat.S_ISREG(mode):
            self.release(self.create(path, mode, os.O_WRONLY | os.O_CREAT | os.O_EXCL, uid, gid))
            return
        if stat.S_IFMT(mode) not in _SPECIAL:
            raise staging_error(errno.EPERM, path)
        with self._lock:
            self._new_node_locked(Node(path, False, mode=mode, mtime_ns=time.time_ns(), uid=uid, gid=gid,
                                       rdev=rdev if stat.S_IFMT(mode) in (stat.S_IFCHR, stat.S_IFBLK) else 0))

    def link(self: "StagingOverlay", old: str, new: str) -> None:
        """NEW, a second name of OLD's file (or node): both see every later write, chmod and chown."""
        with self._lock:
            source = self._lookup(old)
            if source.is_dir:
                raise staging_error(errno.EPERM, old)
            if self.journal.node(new) is not None:
                raise staging_error(errno.EEXIST, new)
            self._check_parent(new)
            self._begin_change_locked()
            now = time.time_ns()
            source = replace(source, ino=source.ino or self.journal.new_ino(), ctime_ns=now)
            with self.journal.transaction() as tx:
                tx.put(source)
                tx.put(replace(source, path=new))
                tx.touch(parent_of(new), now)

    def _unlinked_locked(self, tx: NodeWriter, node: Node, now_ns: int) -> None:
        """NODE lost a name: the names it keeps see a new ctime."""
        if node.ino is not None:
            tx.execute("UPDATE nodes SET ctime_ns = ? WHERE ino = ?", (now_ns, node.ino))

    # -- flush --------------------------------------------------------------------------

    def linked_sources(self: "StagingOverlay") -> list[tuple[str, str | None, FileEntry | None]]:
        """The files the symlinks of the tree publish, as (path, upper id, base entry);
        `RefusedNode` naming every node a version cannot hold (a `tar x` may bring many: one flush
        lists them all, as it lists refused names)."""
        found: list[tuple[str, Node]] = []
        refused: list[str] = []
        for node in self.journal.special_nodes():
            try:
                if node.target is None:
                    raise RefusedNode(f"{self._where(node.path)}: not a regular file "
                                      f"({_SPECIAL[stat.S_IFMT(node.mode)]}); a version holds files only: remove it, "
                                      "then flush again")
                self._follow(node, node.path, (), found)
            except RefusedNode as exc:
                refused.append(str(exc))
        if refused:
            raise RefusedNode("; ".join(refused[:REFUSED_SHOWN]) + ("; ..." if len(refused) > REFUSED_SHOWN else ""))
        return [(path, file.upper, None if file.upper else self.journal.base_entry(file.base_path))
                for path, file in found]

    def _follow(self: "StagingOverlay", link: Node, path: str, walked: tuple[str, ...],
                found: list[tuple[str, Node]]) -> None:
        """Add to FOUND the files LINK publishes at PATH, following the symlinks inside a folder it
        leads to as ingest does; WALKED are the folders followed down to it (a loop is refused)."""
        resolved = self._resolve(link)
        if not resolved.is_dir:
            found.append((path, resolved))
            return
        if any(f"{folder}/".startswith(f"{resolved.path}/") for folder in walked):
            raise RefusedNode(f"{self._where(link.path)}: symlink to {link.target} is a loop (it leads to a "
                              "folder that contains it)")
        for node in self.journal.below(resolved.path):
            inner = path + node.path[len(resolved.path):]
            if node.is_file:
                found.append((inner, node))
            elif node.target is not None:
                self._follow(node, inner, walked + (resolved.path,), found)

    def _where(self: "StagingOverlay", path: str) -> str:
        return f"staging/{self.kind}/{self.name}/{path}"

    def _resolve(self: "StagingOverlay", link: Node) -> Node:
        """The file or folder of the tree LINK leads to; `RefusedNode` when outside, dangling or a loop."""
        node = link
        for _ in range(MAX_SYMLINK_HOPS):
            if node.target is None:
                break
            if node.target.startswith("/"):
                raise self._outside(link)
            parts = [p for p in parent_of(node.path).split("/") if p]
            for part in node.target.split("/"):
                if part == "..":
                    if not parts:
                        raise self._outside(link)
                    parts.pop()
                elif part not in ("", "."):
                    parts.append(part)
            node = self.journal.node("/".join(parts))
            if node is None:
                raise RefusedNode(f"{self._where(link.path)}: dangling symlink (to {link.target}, which does not "
                                  "exist)")
        else:
            raise RefusedNode(f"{self._where(link.path)}: symlink to {link.target} is a symlink loop")
        if node.is_dir and (node.path == "" or link.path.startswith(node.path + "/")):
            raise RefusedNode(f"{self._where(link.path)}: symlink to {link.target} is a loop (it leads to a "
                              "folder that contains it)")
        if not node.is_dir and not node.is_file:
            raise RefusedNode(f"{self._where(link.path)}: symlink to {link.target}, not a regular file")
        return node

    def _outside(self: "StagingOverlay", link: Node) -> RefusedNode:
        return RefusedNode(f"{self._where(link.path)}: symlink to {link.target} leads outside staging/{self.kind}/"
                           f"{self.name}; a flush takes only files inside the record (copy the file in to include it)")
