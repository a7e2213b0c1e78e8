"""The rows of a staged record's node table, and the writes one journal transaction makes.

A row per path: a directory, a file (its bytes a staged upper file or a base file), or a
node a disk keeps but a version does not (a symlink, FIFO, socket or device: its type in
`mode`). Hard links are rows sharing an `ino`: writing one row writes the shared fields
(bytes, mode, owner, times) of every row with that `ino`, so all names see one file.
"""

from __future__ import annotations

import json
import sqlite3
import stat
from dataclasses import dataclass, replace
from typing import Any, Iterable

FILE_MODE = 0o100644
NODE_COLUMNS = "path, is_dir, upper, base_path, mode, mtime_ns, uid, gid, atime_ns, ctime_ns, target, rdev, ino"
_SHARED = ("upper", "base_path", "mode", "mtime_ns", "uid", "gid", "atime_ns", "ctime_ns")  # by hard links


@dataclass(frozen=True)
class Node:
    """One path of the staged tree."""

    path: str
    is_dir: bool
    upper: str | None = None  # id of the staged file holding the bytes
    base_path: str | None = None  # else the base file whose bytes these are
    mode: int = FILE_MODE
    mtime_ns: int = 0
    uid: int | None = None  # who created it (another user on an --allow-other mount); None: the mount's user
    gid: int | None = None
    atime_ns: int | None = None  # None: the modification time
    ctime_ns: int | None = None
    target: str | None = None  # what a symlink points to
    rdev: int = 0  # a device node's number
    ino: int | None = None  # the hard-link group (None: a single name)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode) and not self.is_dir


def parent_of(path: str) -> str | None:
    """The parent path ('' for a top-level path, None for the root itself)."""
    if path == "":
        return None
    return path.rpartition("/")[0]


def node_of(row: tuple) -> Node:
    """The Node of a row selected as NODE_COLUMNS."""
    return Node(row[0], bool(row[1]), *row[2:11], row[11] or 0, row[12])


def below(path: str) -> tuple[str, tuple]:
    """SQL condition and arguments selecting the paths strictly below PATH ('0' sorts right after '/')."""
    if path == "":
        return "path != ''", ()
    return "path > ? AND path < ?", (path + "/", path + "0")


class NodeWriter:
    """The changes one transaction makes."""

    def __init__(self, db: sqlite3.Connection):
        self._db = db

    def execute(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        return self._db.execute(sql, args)

    def executemany(self, sql: str, rows: Iterable) -> sqlite3.Cursor:
        return self._db.executemany(sql, rows)

    def set_meta(self, key: str, value: Any) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def nodes(self, where: str, args: tuple = ()) -> list[Node]:
        return [node_of(r) for r in self._db.execute(f"SELECT {NODE_COLUMNS} FROM nodes WHERE {where}", args)]

    def put(self, node: Node) -> None:
        self.put_many((node,))

    def put_many(self, nodes: Iterable[Node]) -> None:
        nodes = list(nodes)
        self._db.executemany(
            f"INSERT OR REPLACE INTO nodes (parent, {NODE_COLUMNS}) VALUES (?{', ?' * 13})",
            ((parent_of(n.path), n.path, int(n.is_dir), n.upper, n.base_path, n.mode, n.mtime_ns, n.uid, n.gid,
              n.atime_ns, n.ctime_ns, n.target, n.rdev, n.ino) for n in nodes),
        )
        self._db.executemany(  # the other names of a hard link see the same file
            f"UPDATE nodes SET {', '.join(c + ' = ?' for c in _SHARED)} WHERE ino = ? AND path != ?",
            ([getattr(n, c) for c in _SHARED] + [n.ino, n.path] for n in nodes if n.ino is not None))

    def touch(self, path: str | None, now_ns: int) -> None:
        """Folder PATH's content changed: its mtime and ctime become NOW_NS (None: nothing to touch)."""
        if path is not None:
            self._db.execute("UPDATE nodes SET mtime_ns = ?, ctime_ns = ? WHERE path = ? AND is_dir = 1",
                             (now_ns, now_ns, path))

    def delete(self, path: str) -> None:
        self._db.execute("DELETE FROM nodes WHERE path = ?", (path,))

    def move_subtree(self, old: str, new: str) -> None:
        """Move every node strictly below OLD to the same place below NEW."""
        where, args = below(old)
        moved = self.nodes(where, args)
        self._db.execute(f"DELETE FROM nodes WHERE {where}", args)
        self.put_many(replace(n, path=new + n.path[len(old):]) for n in moved)
