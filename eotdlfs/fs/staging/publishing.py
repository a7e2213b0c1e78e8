"""Freezing, publishing and merging a staged record: what a flush does to the overlay.

A flush freezes the staged files it ships (`freeze`): until it ends, a writer of a frozen
file gets a fresh copy, so the bytes being uploaded never change under the uploader, and
the journal keeps the frozen list so a flush interrupted by a crash can resume. Once the
server published them, `publish` rebases the tree onto the new version; `merge_onto` applies
the staged changes onto a version another writer published meanwhile.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from dataclasses import replace
from typing import Callable, Sequence

from eotdlfs.fs.staging.files import MADE_BY_FLUSH, BaseVersion, PendingChanges, StagedFile, staging_error
from eotdlfs.fs.staging.journal import LINKS_PUBLISHED
from eotdlfs.fs.staging.openfiles import MAX_RETRIES
from eotdlfs.hashing import sha1_file
from eotdlfs.repository import FileEntry

# How long a file closed while a flush waits must stay closed before the flush reads the tree
# (rclone's --vfs-write-back waits 5 s after the last close for the same reason).
SETTLE_S = 2.0
LINKS_FROZEN = "links_frozen_ns"  # meta: when the flush in progress froze the symlinks it ships


class Publishing:
    """The flush half of `StagingOverlay` (a mixin: it uses the overlay's lock, journal and sets)."""

    def follow(self, base: BaseVersion) -> None:
        """Move an unchanged, idle overlay onto BASE (a newer published version); otherwise keep it pinned."""
        with self._lock:
            if self._dirty or self._open_count or self._frozen or base.number == self.base_version:
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
        raise staging_error(errno.EAGAIN, "the staged tree kept changing while merging")

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

        Waits, at most TIMEOUT seconds, until no file of the tree is open for writing and every
        file closed while it waited has stayed closed for SETTLE_S (rsync and editors close a
        temporary file, then rename it: the tree is read again once they did, so a temporary
        name is never shipped); calls ON_WAIT with the path of a writer it waits for; raises
        EBUSY after that.
        """
        deadline = time.monotonic() + timeout
        reported = None
        with self._lock:
            self._settling = {}  # `release` notes here when each writer closed while this waits
            try:
                while True:
                    files = self.journal.file_sources()
                    now = time.monotonic()
                    busy = [path for path, upper, _ in files if upper and self._writers.get(upper)]
                    settling = [(closed + SETTLE_S - now, path) for path, upper, _ in files
                                if upper and (closed := self._settling.get(upper)) and now < closed + SETTLE_S]
                    if not busy and not settling:
                        break
                    if busy and busy[0] != reported:
                        on_wait(busy[0])
                        reported = busy[0]
                    remaining = deadline - now
                    if remaining <= 0:
                        why = "open for writing" if busy else f"closed less than {SETTLE_S:g} s ago"
                        raise OSError(errno.EBUSY, f"{(busy or [min(settling)[1]])[0]} is still {why} after "
                                                   f"{timeout:.0f} s; close it and flush again")
                    self._released.wait(min(remaining, 1.0, *(left for left, _ in settling)))
            finally:
                self._settling = None
            # A file through a symlink shares its key with the file it leads to, which comes later in
            # the list, so that `publish` maps the key to that file's own path.
            staged = [self._staged_file(path, upper) if upper
                      else StagedFile(path, entry.size, entry.checksum, None, f"base:{entry.path}")
                      for path, upper, entry in self.linked_sources() + files]
            self.journal.set_meta("frozen", [f.to_json() for f in staged])
            self.journal.set_meta(LINKS_FROZEN, time.time_ns())
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
            raise staging_error(errno.EIO, staged.path)
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
        made = {f.path: mtimes.pop(f.key) for f in shipped if f.key.startswith(MADE_BY_FLUSH)}
        with self._lock:
            self.journal.rebase(version, entries, {f.key: f.path for f in shipped if f.path not in made}, mtimes, made)
            self.journal.set_meta(LINKS_PUBLISHED, self.journal.get_meta(LINKS_FROZEN, 0))
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


