"""What the mount's read-only tree is made of: nodes (what a path is) and a version's files as a tree.

Plain data, built by `namespace.py`; published data never changes, so none of it does once made.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field

from eotdlfs.repository import FileEntry, Record

DIR, FILE, LINK = "dir", "file", "link"


@dataclass(frozen=True)
class Node:
    """What a path is: a directory, a file (with its record, version and entry) or a symlink."""

    type: str
    mtime: float
    size: int = 0
    record: Record | None = None
    version: int = 0
    entry: FileEntry | None = None
    target: str = ""


@dataclass
class VersionTree:
    """One published version's files, indexed by path, with every folder's children."""

    files: dict[str, FileEntry]
    children: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def build(cls, entries: list[FileEntry]) -> "VersionTree":
        files = {e.path: e for e in entries}
        children: dict[str, set[str]] = {"": set()}
        for path in files:
            parent, _, name = path.rpartition("/")
            children.setdefault(parent, set()).add(name)
            while parent:
                grand, _, folder = parent.rpartition("/")
                known = grand in children
                children.setdefault(grand, set()).add(folder)
                children.setdefault(parent, set())
                if known:
                    break
                parent = grand
        return cls(files, {k: sorted(v) for k, v in children.items()})


@dataclass(frozen=True)
class ListedVersion:
    """A version folder already resolved: its date (its folders' mtime) and its files."""

    mtime: float
    tree: VersionTree


def not_found(path: str) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
