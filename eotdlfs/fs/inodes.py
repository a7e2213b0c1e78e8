"""The inode numbers `stat` shows (the mount runs with libfuse's `use_ino`).

libfuse's own numbers are node ids handed out in lookup order, anew at each mount: after a
remount, tools keyed on inodes (borg's files cache, `tar --listed-incremental`) took every
file of a version for a new one and read it again. A published path never changes what it
names, so its number is a hash of the path, the same at every mount. A staged node keeps its
number through a rename and shares it with its hard links, as on a disk, for as long as the
mount lives. The kernel still tells nodes apart by node id; these numbers are only shown.
"""

from __future__ import annotations

import hashlib
import itertools
import threading

# Staged nodes are numbered from here up; a path's hash stays below. Both below 2**63: tools
# that print inodes as signed 64-bit numbers (pjdfstest) showed the staged ones negative.
STAGED_FIRST = 1 << 62


def path_inode(path: str) -> int:
    """PATH's number: 62 bits of its hash, never 0."""
    digest = hashlib.blake2b(path.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 2 or 2


class StagedInodes:
    """Numbers of staged paths, given at first sight, moved by renames, shared by hard links."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # guarded by _lock
        self._numbers: dict[str, int] = {}
        self._next = itertools.count(STAGED_FIRST)

    def number(self, path: str) -> int:
        with self._lock:
            found = self._numbers.get(path)
            if found is None:
                found = self._numbers[path] = next(self._next)
            return found

    def renamed(self, old: str, new: str, folder: bool) -> None:
        """OLD is now NEW (a FOLDER: everything below it moves too); what NEW named before is gone."""
        with self._lock:
            self._numbers.pop(new, None)  # a file or an empty folder: nothing below it
            number = self._numbers.pop(old, None)
            if number is not None:
                self._numbers[new] = number
            if folder:  # a scan of every number: folders are renamed seldom, files often (rsync)
                prefix = old + "/"
                for path in [p for p in self._numbers if p.startswith(prefix)]:
                    self._numbers[new + path[len(old):]] = self._numbers.pop(path)

    def linked(self, existing: str, new: str) -> None:
        """NEW is a hard link to EXISTING: the same number."""
        number = self.number(existing)
        with self._lock:
            self._numbers[new] = number

    def removed(self, path: str) -> None:
        """PATH is gone (a file, or a folder, which is empty when removed)."""
        with self._lock:
            self._numbers.pop(path, None)
