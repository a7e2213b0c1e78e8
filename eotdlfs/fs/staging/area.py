"""The `staging/` folder of a mount: `staging/KIND/NAME/...` routed to one StagingOverlay per record.

The FUSE shim calls these methods with paths relative to `/staging` ('/', '/datasets',
'/datasets/NAME/a/b') and plain integer file handles; failures are OSErrors with an
explicit errno. `staging/KIND/` lists the published records plus the new ones made with
`mkdir`; the record folders carry the flush control attribute (`control.FLUSH_XATTR`).
With AUTOFLUSH, a record is flushed once that many seconds passed without a change.

FOLDER belongs to one process: the mount holds its cache dir (`eotdlfs.fs.mountlock`), as two
areas on one folder would collect each other's files.

Open files are `StagedHandle`s, kept in the mount's one handle table (the FUSE adapter's)
and passed back here as `fh`; each carries the overlay it belongs to.

Locks. `_create_lock` makes loading a record's overlay (or making a new record) happen
once; `_lock` guards the per-record maps (`_overlays`, `_flushers`, `_followed`) and is
held only for dict operations. Order: `_create_lock` -> `_lock`; `_create_lock` -> a
StagingOverlay's lock (mkdir of a new record) and the namespace's (listing names). Neither
is held while a flusher runs or a file is read.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Protocol

from eotdlfs.fs.staging.control import FLUSH_XATTR, Stage
from eotdlfs.fs.staging.flush import FlushServices, RecordFlusher
from eotdlfs.fs.staging.journal import DIR_MODE, JOURNAL_FILE
from eotdlfs.fs.staging.files import BaseFile, BaseVersion, staging_error
from eotdlfs.fs.staging.nodecalls import NodeCalls
from eotdlfs.fs.staging.openfiles import StagedHandle
from eotdlfs.fs.staging.overlay import StagingOverlay
from eotdlfs.metadata import KINDS, MetadataError, validate_name
from eotdlfs.paths import BadPath, PathTooLong, not_utf8, too_long, validate_file_path
from eotdlfs.repository import FileEntry

log = logging.getLogger(__name__)

FOLLOW_CHECK_S = 5.0  # how often an unchanged overlay looks for a newer published version
REFUSED_KEPT = 5  # names refused when made that `eotdlfs status` shows, newest last
# A name the repository refuses: "Operation not permitted" in every tool. EINVAL read as
# `mv`'s "cannot move A to a subdirectory of itself" (coreutils' reading of rename's EINVAL).
REFUSED_NAME = errno.EPERM
SHUTDOWN_WAIT_S = 10.0  # unmount waits this long for a running flush (it resumes at the next mount)


class PublishedRecords(Protocol):
    """What staging needs from the read-only side of the mount."""

    def names(self, kind: str) -> list[str]: ...

    def latest(self, kind: str, name: str) -> int | None: ...

    def base(self, kind: str, name: str) -> BaseVersion: ...

    def open_file(self, kind: str, name: str, entry: FileEntry) -> BaseFile: ...


def _split(path: str) -> tuple[str | None, str | None, str]:
    """'/datasets/NAME/a/b' -> ('datasets', 'NAME', 'a/b'); '/datasets' -> ('datasets', None, '')."""
    parts = [p for p in path.split("/") if p]
    if parts and parts[0] not in KINDS:
        raise staging_error(errno.ENOENT, path)
    kind = parts[0] if parts else None
    name = parts[1] if len(parts) > 1 else None
    return kind, name, "/".join(parts[2:])


class StagingArea(NodeCalls):
    def __init__(self, folder: Path, published: PublishedRecords, services: FlushServices,
                 autoflush: float | None = None):
        # set once
        self.folder = Path(folder)
        self._published = published
        self._services = services
        self._autoflush = autoflush
        self.folder.mkdir(parents=True, exist_ok=True)
        self._started_ns = time.time_ns()
        self._stop = threading.Event()
        self._create_lock = threading.Lock()  # one overlay per record, even when two threads look at once
        # guarded by _lock
        self._lock = threading.Lock()
        self._overlays: dict[tuple[str, str], StagingOverlay] = {}
        self._flushers: dict[tuple[str, str], RecordFlusher] = {}
        self._followed: dict[tuple[str, str], float] = {}
        self._refused: list[dict] = []  # the last REFUSED_KEPT names refused when made, for `eotdlfs status`
        self._resume_interrupted()
        self._autoflusher = None
        if autoflush:
            self._autoflusher = threading.Thread(target=self._autoflush_loop, name="autoflush", daemon=True)
            self._autoflusher.start()

    # -- records ------------------------------------------------------------------------

    def _local_names(self, kind: str) -> set[str]:
        """Records with a journal on disk: staged changes, or a new record made with mkdir."""
        try:
            return {p.name for p in (self.folder / kind).iterdir() if (p / JOURNAL_FILE).exists()}
        except FileNotFoundError:
            return set()

    def _names(self, kind: str) -> list[str]:
        with self._lock:
            loaded = {name for (k, name) in self._overlays if k == kind}
        try:
            published = set(self._published.names(kind))
        except Exception as exc:  # server down and nothing listed before: what is staged here still shows
            log.warning("cannot list the published %s (%s); staging shows the records staged here", kind, exc)
            published = set()
        return sorted(published | self._local_names(kind) | loaded)

    def _overlay(self, kind: str, name: str, path: str = "") -> StagingOverlay:
        key = (kind, name)
        with self._lock:
            overlay = self._overlays.get(key)
        if overlay is None:
            with self._create_lock:
                with self._lock:
                    overlay = self._overlays.get(key)
                if overlay is None:
                    if name not in self._names(kind):
                        raise staging_error(errno.ENOENT, path or f"{kind}/{name}")
                    overlay = self._load(kind, name)
        else:
            self._follow(overlay)
        return overlay

    def _load(self, kind: str, name: str, new: bool = False) -> StagingOverlay:
        key = (kind, name)
        base = (lambda: BaseVersion(None, [], time.time_ns())) if new else (lambda: self._published.base(kind, name))
        overlay = StagingOverlay(kind, name, self.folder / kind / name, base,
                                 lambda entry: self._published.open_file(kind, name, entry))
        with self._lock:
            self._overlays[key] = overlay
            self._flushers[key] = RecordFlusher(overlay, self._services)
            self._followed[key] = time.monotonic()
        return overlay

    def _follow(self, overlay: StagingOverlay) -> None:
        """Let an unchanged overlay move onto a version published since (checked every few seconds)."""
        key = (overlay.kind, overlay.name)
        now = time.monotonic()
        with self._lock:
            if overlay.dirty or now - self._followed.get(key, 0.0) < FOLLOW_CHECK_S:
                return
            self._followed[key] = now
        latest = self._published.latest(overlay.kind, overlay.name)
        if latest is not None and latest != overlay.base_version:
            overlay.follow(self._published.base(overlay.kind, overlay.name))

    def _flusher(self, kind: str, name: str) -> RecordFlusher:
        self._overlay(kind, name)
        with self._lock:
            return self._flushers[(kind, name)]

    def _resume_interrupted(self) -> None:
        """Reload every record staged on disk; resume the flushes a killed mount left half done."""
        for kind in KINDS:
            for name in sorted(self._local_names(kind)):
                try:
                    overlay = self._load(kind, name)
                except Exception:
                    log.exception("cannot reload the staged state of %s/%s", kind, name)
                    continue
                if overlay.frozen_files():
                    log.info("resuming the interrupted flush of %s/%s", kind, name)
                    with self._lock:
                        flusher = self._flushers[(kind, name)]
                    flusher.request()

    # -- names ------------------------------------------------------------------------------

    def _check_new_path(self, path: str, rel: str) -> None:
        """Refuse at once a file path REL (inside the record of PATH) that a flush would fail on:
        ENAMETOOLONG when too long, else REFUSED_NAME."""
        try:
            validate_file_path(rel)
        except BadPath as exc:
            code = errno.ENAMETOOLONG if isinstance(exc, PathTooLong) else REFUSED_NAME
            raise self._refuse(path, str(exc), code) from exc

    def _refuse(self, path: str, reason: str, code: int) -> OSError:
        """The error for a name refused when made; the reason goes to the log and to `eotdlfs status`
        (the writer sees only the errno). The status keeps a refusal repeating the newest once:
        coreutils' `mv` asks twice (renameat2 with RENAME_NOREPLACE, then rename)."""
        log.warning("staging%s refused: %s", path, reason)
        refused = {"path": f"staging{path}", "reason": reason, "at": time.time()}
        with self._lock:
            if self._refused and {**self._refused[-1], "at": refused["at"]} == refused:
                self._refused[-1] = refused
            else:
                self._refused.append(refused)
                del self._refused[:-REFUSED_KEPT]
        return staging_error(code, path)

    # -- attributes and listings ----------------------------------------------------------

    def _dir_attrs(self) -> dict:
        return {"st_mode": DIR_MODE, "st_nlink": 2, "st_size": 0, "st_uid": os.getuid(), "st_gid": os.getgid(),
                "st_atime": self._started_ns, "st_mtime": self._started_ns, "st_ctime": self._started_ns}

    def getattr(self, path: str, fh: StagedHandle | None = None) -> dict:
        """A `stat` dict; ENAMETOOLONG for a name longer than any staged name can be, as a disk answers."""
        if any(too_long(part) for part in path.split("/")):
            raise staging_error(errno.ENAMETOOLONG, path)
        if not_utf8(path):  # refused when made, so never staged; and the journal cannot even look it up
            raise staging_error(errno.ENOENT, path)
        kind, name, rel = _split(path)
        if name is None:
            return self._dir_attrs()
        if fh is not None:
            return fh.overlay.getattr(rel, fh)
        if rel == "":
            with self._lock:
                loaded = (kind, name) in self._overlays
            if not loaded:  # `ls -l staging/datasets` must not list every record's files
                if name not in self._names(kind):
                    raise staging_error(errno.ENOENT, path)
                return self._dir_attrs()
        return self._overlay(kind, name, path).getattr(rel)

    def access(self, path: str, amode: int) -> int:
        self.getattr(path)
        return 0

    def readdir(self, path: str, fh: int | None = None) -> list[str]:
        kind, name, rel = _split(path)
        if kind is None:
            return list(KINDS)
        if name is None:
            return self._names(kind)
        return self._overlay(kind, name, path).readdir(rel)

    def statfs(self, path: str) -> dict:
        folder = self.folder
        while not folder.exists():
            folder = folder.parent
        st = os.statvfs(folder)
        return {key: getattr(st, key) for key in ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail",
                                                   "f_ffree", "f_files", "f_flag", "f_frsize", "f_namemax")}

    # -- open files -----------------------------------------------------------------------

    def _inside(self, path: str) -> tuple[StagingOverlay, str]:
        """The overlay and relative path of a path inside a record folder; EPERM above them."""
        kind, name, rel = _split(path)
        if name is None or rel == "":
            raise staging_error(errno.EPERM, path)
        return self._overlay(kind, name, path), rel

    def _node_at(self, path: str) -> tuple[StagingOverlay | None, str]:
        kind, name, rel = _split(path)
        return (None, rel) if name is None else (self._overlay(kind, name, path), rel)

    def _new_path(self, path: str) -> tuple[StagingOverlay, str]:
        overlay, rel = self._inside(path)
        self._check_new_path(path, rel)
        return overlay, rel

    def open(self, path: str, flags: int) -> StagedHandle:
        overlay, rel = self._inside(path)
        return overlay.open(rel, flags)

    def create(self, path: str, mode: int, flags: int = os.O_WRONLY, uid: int | None = None,
               gid: int | None = None) -> StagedHandle:
        overlay, rel = self._new_path(path)
        return overlay.create(rel, mode, flags, uid, gid)

    def read(self, path: str, size: int, offset: int, fh: StagedHandle) -> bytes:
        return fh.overlay.read(fh, size, offset)

    def write(self, path: str, data: bytes, offset: int, fh: StagedHandle) -> int:
        return fh.overlay.write(fh, data, offset)

    def truncate(self, path: str, length: int, fh: StagedHandle | None = None) -> None:
        overlay, rel = self._inside(path)
        overlay.truncate(rel, length, fh)

    def fallocate(self, path: str, mode: int, offset: int, length: int, fh: StagedHandle) -> int:
        fh.overlay.fallocate(fh, mode, offset, length)
        return 0

    def flush(self, path: str, fh: StagedHandle) -> int:
        return 0  # writes go straight to the staged file; nothing is buffered here

    def fsync(self, path: str, datasync: int, fh: StagedHandle) -> int:
        fh.overlay.fsync(fh)
        return 0

    def release(self, path: str, fh: StagedHandle) -> int:
        fh.overlay.release(fh)
        return 0

    # -- tree changes ---------------------------------------------------------------------

    def mkdir(self, path: str, mode: int, uid: int | None = None, gid: int | None = None) -> None:
        """A folder owned by UID:GID (None: the mount's user); a record folder always belongs to the mount's user."""
        kind, name, rel = _split(path)
        if name is None:
            raise staging_error(errno.EPERM, path)
        if rel:
            overlay = self._overlay(kind, name, path)
            self._check_new_path(path, rel)
            return overlay.mkdir(rel, mode, uid, gid)
        try:
            validate_name(name)
        except MetadataError as exc:
            raise self._refuse(path, f"not a {kind[:-1]} name: {exc}", REFUSED_NAME) from exc
        with self._create_lock:
            if name in self._names(kind):
                raise staging_error(errno.EEXIST, path)
            self._load(kind, name, new=True).start_new()
        log.info("new %s record %s staged; it needs a metadata.yml (or a STAC catalog.json) before a flush", kind, name)

    def rmdir(self, path: str) -> None:
        kind, name, rel = _split(path)
        if name is None:
            raise staging_error(errno.EPERM, path)
        overlay = self._overlay(kind, name, path)
        if rel:
            return overlay.rmdir(rel)
        # Only a new, empty record may go: a published one is not deleted through a mount.
        if overlay.base_version is not None or overlay.busy:
            raise staging_error(errno.EPERM if overlay.base_version is not None else errno.EBUSY, path)
        if overlay.readdir(""):
            raise staging_error(errno.ENOTEMPTY, path)
        with self._lock:
            del self._overlays[(kind, name)], self._flushers[(kind, name)], self._followed[(kind, name)]
        overlay.discard()

    def unlink(self, path: str) -> None:
        overlay, rel = self._inside(path)
        overlay.unlink(rel)

    def rename(self, old: str, new: str) -> None:
        old_kind, old_name, old_rel = _split(old)
        new_kind, new_name, new_rel = _split(new)
        if not old_rel or not new_rel:
            raise staging_error(errno.EPERM, old)
        if (old_kind, old_name) != (new_kind, new_name):
            raise staging_error(errno.EXDEV, new)  # mv falls back to copy + delete
        overlay = self._overlay(old_kind, old_name, old)
        self._check_new_path(new, new_rel)
        overlay.rename(old_rel, new_rel)

    # -- extended attributes: the flush control -----------------------------------------

    def _record_root(self, path: str) -> tuple[str, str] | None:
        kind, name, rel = _split(path)
        return (kind, name) if name is not None and rel == "" else None

    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        record = self._record_root(path)
        if record is not None and name == FLUSH_XATTR:
            return json.dumps(self._flusher(*record).state().to_json()).encode()
        raise staging_error(errno.ENODATA, path)  # cheap: `ls -l` asks for ACLs and labels of every file

    def listxattr(self, path: str) -> list[str]:
        return []

    def setxattr(self, path: str, name: str, value: bytes, options: int, position: int = 0,
                 uid: int | None = None) -> None:
        """Only the flush control; UID (None: the mount's user) must be the mount's user, whose token publishes."""
        record = self._record_root(path)
        if record is None or name != FLUSH_XATTR:
            raise staging_error(errno.ENOTSUP, path)  # tar, rsync -X and cp -a carry on without them
        if uid is not None and uid != os.getuid():
            log.warning("uid %d may not flush %s: only the mount's user (uid %d) publishes", uid, path, os.getuid())
            raise staging_error(errno.EACCES, path)
        self._flusher(*record).request()

    def removexattr(self, path: str, name: str) -> None:
        raise staging_error(errno.ENODATA, path)

    # -- flushes, status, shutdown --------------------------------------------------------

    def flush_record(self, kind: str, name: str) -> RecordFlusher:
        """Start a flush of KIND/NAME (as `eotdlfs flush` does); the flusher tells how it goes."""
        flusher = self._flusher(kind, name)
        flusher.request()
        return flusher

    def _autoflush_loop(self) -> None:
        while not self._stop.wait(min(1.0, self._autoflush)):
            with self._lock:
                flushers = list(self._flushers.values())
            for flusher in flushers:
                overlay = flusher.overlay
                last = flusher.last_attempt
                if (overlay.dirty and not flusher.running
                        and time.monotonic() - overlay.last_change >= self._autoflush
                        and (last is None or time.time() - last >= self._autoflush)):
                    log.info("autoflush of %s/%s after %.0f s without writes", overlay.kind, overlay.name,
                             self._autoflush)
                    flusher.request()

    def status(self) -> dict:
        """Per staged record: files added / changed / deleted, bytes pending, and the last or running flush."""
        with self._lock:
            flushers = list(self._flushers.values())
        records = []
        for flusher in flushers:
            overlay = flusher.overlay
            state = flusher.state()
            if not overlay.dirty and state.state is Stage.IDLE:
                continue
            pending = overlay.pending()
            records.append({
                "record": f"{overlay.kind}/{overlay.name}", "base_version": overlay.base_version,
                "added": len(pending.added), "changed": len(pending.changed), "deleted": len(pending.deleted),
                "bytes_pending": pending.bytes_pending, "flush": state.state, "message": state.message,
                "error": state.error, "version": state.version,
            })
        with self._lock:
            refused = list(self._refused)
        return {"autoflush_s": self._autoflush, "records": sorted(records, key=lambda r: r["record"]),
                "refused_names": refused}

    def destroy(self) -> None:
        self._stop.set()
        with self._lock:
            flushers = list(self._flushers.values())
        deadline = time.monotonic() + SHUTDOWN_WAIT_S
        for flusher in flushers:
            if not flusher.wait(max(0.0, deadline - time.monotonic())):
                log.warning("unmounting during the flush of %s; it resumes at the next mount", flusher.overlay.name)
        for flusher in flushers:
            if not flusher.running:  # a flush still running keeps its journal until the process ends
                flusher.overlay.journal.close()
