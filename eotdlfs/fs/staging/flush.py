"""Flushing a staged record: freeze its tree, ingest it as the next version, restart staging from that version.

The flusher knows the ingestion engine only as a callable (`Ingest`), as rclone's
write-back knows only a put function. Order, and why:
1. if the server published a version after the one staging started from, apply the
   staged changes onto it first (staged files win), so a flush never undoes it;
2. freeze the tree (waiting, bounded, for files open for writing and for files closed
   meanwhile to keep their names) — or, after a crash, take the frozen list the journal
   kept, so the resumed flush ships the same bytes;
3. validate every file name and metadata.yml before anything is hashed or sent (a STAC
   record: its whole catalog once hashed, and its documents become their self-contained
   rewrites, `stacflush`);
4. ingest: the engine reuses the draft an interrupted run of THIS mount left (its draft
   ledger sits in the staging folder), so exactly one version comes out however often this
   is retried; nothing changed -> no version. The engine publishes only if the version the
   staged tree is based on is still the latest: when another writer (another mount, an
   `eotdlfs ingest`) published meanwhile, it discards its draft and raises
   `VersionConflict`; the flush then goes back to step 1 (apply the staged changes onto the
   new version) and tries again, at most `CONFLICT_RETRIES` times. No version ever mixes
   two writers' files, and no staged change is lost;
5. only once the server has published, rebase the overlay onto the new version and drop
   the staged bytes it now holds. On any failure the frozen files are released and every
   staged change stays; the error is kept for `eotdlfs status`.

Locks. `RecordFlusher._lock` guards the flush state and the running thread; it is held for
those fields only, never while calling the overlay, the journal or the services, so it is a
leaf (the engine's progress calls take it from the ingest's threads).
"""

from __future__ import annotations

import logging
import sqlite3
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from eotdlfs.fs.staging.control import Stage
from eotdlfs.fs.staging.files import BaseVersion, StagedFile
from eotdlfs.fs.staging.overlay import StagingOverlay
from eotdlfs.fs.staging.stacflush import is_stac, stac_files
from eotdlfs.metadata import METADATA_FILE, Metadata, MetadataError, check_metadata_size, load_metadata
from eotdlfs.paths import BadPath, validate_file_path
from eotdlfs.stac.rules import ROOT_DOCUMENT
from eotdlfs.repository import (FileEntry, FileToShip, IngestResult, NothingToIngest, RepositoryError,
                                TransferProgress, Unauthorized, VersionConflict)

log = logging.getLogger(__name__)

WRITER_WAIT_S = 60.0  # longest a flush waits for a file open for writing
CONFLICT_RETRIES = 3  # flushes re-planned onto a version another writer published meanwhile
NAMES_SHOWN = 20  # refused names a failed flush lists


# `Publisher.ingest`: (kind, metadata, files, progress, base: the published version the files derive from, 0 for none)
Ingest = Callable[[str, Metadata, Sequence[FileToShip], TransferProgress, int], IngestResult]


@dataclass(frozen=True)
class FlushServices:
    """What a flush needs from the repository, as plain callables (tests pass fakes)."""

    ingest: Ingest
    latest: Callable[[str, str], int | None]  # the newest published version on the server now
    files: Callable[[str, str, int], list[FileEntry]]  # a version's files, from the server
    published: Callable[[str, str, int], None]  # tell the mount's read-only tree


@dataclass(frozen=True)
class FlushOutcome:
    """How one flush ended (a failure is an exception instead)."""

    stage: Stage
    message: str
    version: int | None = None
    result: dict = field(default_factory=dict)


class FlushError(Exception):
    """A flush refused before anything was sent; the message says what to fix."""


@dataclass
class FlushState:
    """What `eotdlfs flush` and `eotdlfs status` see of a record's flushes; `run` counts them."""

    run: int = 0
    state: Stage = Stage.IDLE
    message: str = ""
    error: str | None = None
    version: int | None = None
    files_total: int = 0
    files_done: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    queued: bool = False
    finished_at: float | None = None
    result: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


class _StateProgress(TransferProgress):
    """The engine's progress calls, written into the flush state."""

    def __init__(self, flusher: "RecordFlusher"):
        self._flusher = flusher

    def start(self, files: int, bytes_total: int) -> None:
        self._flusher._update(files_total=files, bytes_total=bytes_total, files_done=0, bytes_done=0)

    def advance(self, files: int = 0, bytes_done: int = 0) -> None:
        with self._flusher._lock:
            self._flusher._state.files_done += files
            self._flusher._state.bytes_done += bytes_done


# Failures that `_describe` puts in words: logged without a traceback
EXPECTED_FAILURES = (FlushError, OSError, RepositoryError, MetadataError, sqlite3.Error)


def _describe(exc: Exception) -> str:
    """The one line `eotdlfs flush` and `eotdlfs status` show for a failed flush."""
    if isinstance(exc, Unauthorized):
        return (f"{exc} (the mount's credentials are missing or refused: set EOTDL_TOKEN or EOTDL_API_KEY,"
                " or the config file, and mount again)")
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    if isinstance(exc, sqlite3.Error):  # SQLite's words for a disk that fails ("database disk image is malformed")
        return (f"the staging journal in the cache dir could not be read or written ({exc}): is its disk failing "
                "or full? flush again once it answers")
    return str(exc) or type(exc).__name__


def _check_names(shipped: list[StagedFile]) -> None:
    """Every path the repository would refuse, in one error, before anything is hashed or sent (staging
    refuses such names when they are made; a journal an older eotdlfs wrote may still hold some)."""
    bad = []
    for staged in shipped:
        try:
            validate_file_path(staged.path)
        except BadPath as exc:
            bad.append(str(exc))
    if bad:
        raise FlushError(f"{len(bad)} file name(s) the repository refuses (rename them, then flush again): "
                         + "; ".join(bad[:NAMES_SHOWN]) + ("; ..." if len(bad) > NAMES_SHOWN else ""))


class RecordFlusher:
    """Runs the flushes of one staged record, one at a time, on a background thread."""

    def __init__(self, overlay: StagingOverlay, services: FlushServices, writer_wait: float = WRITER_WAIT_S):
        # set once
        self.overlay = overlay
        self._services = services
        self._writer_wait = writer_wait
        # guarded by _lock
        self._lock = threading.Lock()
        self._state = FlushState(**{k: v for k, v in overlay.journal.get_meta("last_flush", {}).items()
                                    if k in ("run", "state", "error", "version", "finished_at", "message")})
        self._state.state = Stage(self._state.state)
        if not self._state.state.finished:
            self._state.state = Stage.IDLE  # a flush the last process did not finish: resumable, not running
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        with self._lock:
            return self._thread is not None

    @property
    def last_attempt(self) -> float | None:
        with self._lock:
            return self._state.finished_at

    def state(self) -> FlushState:
        with self._lock:
            return FlushState(**asdict(self._state))

    def request(self) -> None:
        """Start a flush; while one runs, queue one more to ship what changed since it froze."""
        with self._lock:
            if self._thread is not None:
                self._state.queued = True
                return
            self._state = FlushState(run=self._state.run + 1, state=Stage.WAITING, message="preparing")
            self._thread = threading.Thread(target=self._loop, name=f"flush-{self.overlay.name}", daemon=True)
            self._thread.start()

    def wait(self, timeout: float) -> bool:
        """Wait for the running flush (if any) to end; False on timeout."""
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def _update(self, **changes) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(self._state, key, value)

    def _loop(self) -> None:
        while True:
            self._run_once()
            with self._lock:
                if not self._state.queued:
                    self._thread = None
                    return
                self._state = FlushState(run=self._state.run + 1, state=Stage.WAITING, message="preparing")

    def _run_once(self) -> None:
        ov = self.overlay
        try:
            outcome = self.flush()
        except Exception as exc:  # every failure is reported, none may kill the mount
            message = _describe(exc)
            log.warning("flush of %s/%s failed: %s", ov.kind, ov.name, message,
                        exc_info=not isinstance(exc, EXPECTED_FAILURES))
            self._finish(FlushOutcome(Stage.FAILED, message), error=message)
            return
        self._finish(outcome)

    def _finish(self, outcome: FlushOutcome, error: str | None = None) -> None:
        with self._lock:
            s = self._state
            s.state, s.message, s.error, s.version = outcome.stage, outcome.message, error, outcome.version
            s.finished_at, s.result = time.time(), dict(outcome.result)
            kept = {"run": s.run, "state": s.state.value, "message": s.message, "error": error,
                    "version": s.version, "finished_at": s.finished_at}
        try:
            self.overlay.journal.set_meta("last_flush", kept)
        except Exception:  # the disk may be full; the live state still tells the user
            log.exception("cannot record the flush result of %s", self.overlay.name)

    # -- the flush itself ---------------------------------------------------------------

    def flush(self) -> FlushOutcome:
        """One flush, re-planned when another writer published meanwhile."""
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                return self._flush_once()
            except VersionConflict as exc:
                if attempt == CONFLICT_RETRIES:
                    raise
                log.warning("flush of %s/%s: %s; applying the staged changes onto v%d", self.overlay.kind,
                            self.overlay.name, exc, exc.latest)
        raise AssertionError("unreachable")  # the loop always returns or raises

    def _flush_once(self) -> FlushOutcome:
        ov, services = self.overlay, self._services
        started = time.monotonic()
        shipped = ov.frozen_files()
        resuming = bool(shipped)
        note = "" if resuming else self._catch_up()
        if not resuming:
            if ov.base_version is not None and not ov.journal.has_changes():
                ov.settle()
                return FlushOutcome(Stage.NOTHING, f"nothing to flush: no staged changes since v{ov.base_version}"
                                    f"{self._empty_folders_note()}")
            self._update(state=Stage.WAITING, message="freezing the staged files")
            shipped = ov.freeze(self._writer_wait, self._waiting_for)
        frozen_at = time.monotonic()
        try:
            _check_names(shipped)
            stac = is_stac(shipped)
            metadata = None if stac else self._metadata(shipped)
            self._update(state=Stage.FLUSHING, message="hashing the staged files")
            shipped = ov.hash_frozen(shipped)
            if stac:  # after hashing: a rewritten document equal to its staged file is shipped as it is
                metadata, shipped = stac_files(ov, shipped)
                self._check_name(metadata.name, f"the catalog id in {ROOT_DOCUMENT}")
            self._update(state=Stage.FLUSHING, message=f"ingesting {len(shipped)} files")
            try:
                result = services.ingest(ov.kind, metadata, shipped, _StateProgress(self), ov.base_version or 0)
                version, summary = result.version, asdict(result)
            except NothingToIngest as exc:
                version, summary = exc.version, {}
            ingested_at = time.monotonic()
            entries = services.files(ov.kind, ov.name, version)
            ov.publish(version, entries, shipped)
        except BaseException:
            ov.unfreeze()
            raise
        services.published(ov.kind, ov.name, version)
        timings = {"freeze_s": round(frozen_at - started, 3), "ingest_s": round(ingested_at - frozen_at, 3),
                   "restage_s": round(time.monotonic() - ingested_at, 3)}
        log.info("flush of %s/%s: %d files as v%d, %s", ov.kind, ov.name, len(shipped), version, timings)
        note += self._empty_folders_note()
        if not summary:
            return FlushOutcome(Stage.NOTHING, f"nothing to flush: the staged files equal v{version}{note}", version,
                                timings)
        return FlushOutcome(Stage.DONE, f"published v{version}: {summary['uploaded']} uploaded, "
                            f"{summary['carried']} carried, {summary['dropped']} removed, "
                            f"{summary['bytes_sent']} bytes sent{note}", version, dict(summary, **timings))

    def _empty_folders_note(self, shown: int = 5) -> str:
        """What the result says of empty folders: a version holds files only, so they are not
        published; they stay in staging (a tool may be about to write there), named here."""
        empty = self.overlay.journal.empty_folders()
        if not empty:
            return ""
        names = ", ".join(f"{path}/" for path in empty[:shown]) + (f" and {len(empty) - shown} more"
                                                                    if len(empty) > shown else "")
        log.warning("flush of %s/%s: empty folders not published: %s", self.overlay.kind, self.overlay.name, names)
        return f" (not published: a version holds files only; empty folders kept in staging: {names})"

    def _waiting_for(self, path: str) -> None:
        log.info("flush of %s waits for %s, open for writing", self.overlay.name, path)
        self._update(message=f"waiting for {path}: open for writing")

    def _metadata(self, shipped: list[StagedFile]) -> Metadata:
        ov = self.overlay
        found = next((f for f in shipped if f.path == METADATA_FILE), None)
        if found is None:
            noun = "a new dataset" if ov.kind == "datasets" else "a new model"
            top = sorted({f.path.split("/")[0] for f in shipped})
            raise FlushError(f"{ov.kind}/{ov.name} has no {METADATA_FILE} (nor a STAC {ROOT_DOCUMENT}) at its root "
                             f"(it has: {', '.join(top[:5]) or 'nothing'}{', ...' if len(top) > 5 else ''}); "
                             f"{noun} needs one (name, authors, license, source) before it can be flushed")
        check_metadata_size(found.size)  # before its bytes are read into memory
        with tempfile.TemporaryDirectory(prefix="eotdlfs-flush-") as folder:
            (Path(folder) / METADATA_FILE).write_bytes(ov.read_staged(found))
            metadata = load_metadata(Path(folder))
        self._check_name(metadata.name, METADATA_FILE)
        return metadata

    def _check_name(self, name: str, given_by: str) -> None:
        if name != self.overlay.name:
            raise FlushError(f"{given_by} names {name!r} but this staging folder is {self.overlay.name!r}; "
                             "make them the same")

    def _catch_up(self) -> str:
        """When the server published a version after the one staging started from, apply the staged
        changes onto it (staged files win), so the flush does not undo it; a note for the result."""
        ov = self.overlay
        latest = self._services.latest(ov.kind, ov.name)
        if latest is None or latest == ov.base_version:
            return ""
        if ov.base_version is None:
            raise FlushError(f"{ov.kind}/{ov.name} was created on the server (v{latest}) after it was made here; "
                             f"move the staged files into another new folder (mkdir staging/{ov.kind}/OTHER-NAME) "
                             "and flush that")
        started = f"v{ov.base_version}"
        entries = self._services.files(ov.kind, ov.name, latest)
        blocked = ov.merge_onto(BaseVersion(latest, entries, time.time_ns()))
        log.warning("%s/%s: v%d was published after staging started from %s; staged changes applied onto it%s",
                    ov.kind, ov.name, latest, started, f", {len(blocked)} of its files hidden by staged files"
                    if blocked else "")
        return f" (staged changes applied onto v{latest}, published after staging started from {started})"
