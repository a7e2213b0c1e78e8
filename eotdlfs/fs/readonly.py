"""The read-only part of the mount (datasets/ and models/) in plain Python terms.

Attributes as `stat` dicts, listings, symlinks, xattrs and reads, built on `Namespace` and
`ContentReader`. The FUSE shim only routes calls here; tests call it directly.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Callable

from eotdlfs.fs.content import Content
from eotdlfs.fs.namespace import DIR, FILE, LINK, Namespace, Node
from eotdlfs.fs.reader import ContentReader, OpenFile

XATTR_PREFIX = "user.eotdl."
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


def read_only(path: str) -> OSError:
    return OSError(errno.EROFS, os.strerror(errno.EROFS), path)


def blocks_of(size: int) -> int:
    """`st_blocks`: 512-byte units, as `du` counts them."""
    return -(-size // 512)


def node_attrs(node: Node, uid: int, gid: int, block_size: int) -> dict:
    if node.type == DIR:
        mode, nlink, size = stat.S_IFDIR | 0o555, 2, 0
    elif node.type == LINK:
        mode, nlink, size = stat.S_IFLNK | 0o777, 1, node.size
    else:
        mode, nlink, size = stat.S_IFREG | 0o444, 1, node.size
    mtime_ns = int(node.mtime * 1e9)  # the shim runs fusepy with use_ns: times in nanoseconds
    return {"st_mode": mode, "st_nlink": nlink, "st_size": size, "st_uid": uid, "st_gid": gid,
            "st_atime": mtime_ns, "st_mtime": mtime_ns, "st_ctime": mtime_ns,
            "st_blocks": blocks_of(size), "st_blksize": block_size}


class ReadOnlyTree:
    def __init__(self, namespace: Namespace, reader: ContentReader):
        self.namespace = namespace
        self.reader = reader
        self.uid, self.gid = os.getuid(), os.getgid()
        # Told of each published file about to be opened (fetching small files ahead, `prefetch.py`).
        self.on_open: Callable[[Node], None] | None = None

    def getattr(self, path: str) -> dict:
        return node_attrs(self.namespace.resolve(path), self.uid, self.gid, self.reader.block_size)

    def listed_file(self, path: str) -> tuple[int, float] | None:
        """(size, mtime) of PATH when it is a file of a version listed before, found without
        building a `Node`; None for anything else (`getattr` answers those)."""
        found = self.namespace.listed_file(path)
        return None if found is None else (found[0].size, found[1])

    def file_attrs(self, size: int, mtime: float) -> dict:
        """`getattr` of a file of SIZE bytes in a version dated MTIME."""
        return node_attrs(Node(FILE, mtime, size), self.uid, self.gid, self.reader.block_size)

    def listdir(self, path: str) -> list[str]:
        return self.namespace.listdir(path)

    def readlink(self, path: str) -> str:
        node = self.namespace.resolve(path)
        if node.type != LINK:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), path)
        return node.target

    def xattrs(self, path: str) -> dict[str, bytes]:
        node = self.namespace.resolve(path)
        if node.type != FILE:
            return {}
        return {XATTR_PREFIX + "checksum": node.entry.checksum.encode(),
                XATTR_PREFIX + "version": str(node.version).encode(),
                XATTR_PREFIX + "file_version": str(node.entry.file_version).encode()}

    def getxattr(self, path: str, name: str) -> bytes:
        value = self.xattrs(path).get(name)
        if value is None:
            raise OSError(errno.ENODATA, os.strerror(errno.ENODATA), path)
        return value

    def open(self, path: str, flags: int) -> OpenFile:
        if flags & WRITE_FLAGS:
            raise read_only(path)
        node = self.namespace.resolve(path)
        if node.type == DIR:
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        if self.on_open is not None:
            self.on_open(node)
        return self.reader.open(Content(node.record, node.entry))

    def read_into(self, handle: OpenFile, target: memoryview, offset: int) -> int:
        return self.reader.read_into(handle, target, offset)

    def release(self, handle: OpenFile) -> None:
        handle.close()
