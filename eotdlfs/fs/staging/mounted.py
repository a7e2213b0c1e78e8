"""Staging wired into a mount: published records from the mount's namespace and block cache, flush by the engine."""

from __future__ import annotations

import errno
import logging
import time
from pathlib import Path

from eotdlfs.client.errors import NotFound
from eotdlfs.client.ingest import run_ingest
from eotdlfs.client.ingest.ledger import LEDGER_FILE, DraftLedger
from eotdlfs.fs.context import MountContext
from eotdlfs.fs.fetcher import Content
from eotdlfs.fs.reader import OpenFile
from eotdlfs.fs.staging.area import StagingArea
from eotdlfs.fs.staging.flush import FlushServices
from eotdlfs.fs.staging.files import BaseVersion
from eotdlfs.repository import FileEntry

log = logging.getLogger(__name__)


class _PublishedFile:
    """A published file read through the mount's reader (block cache, read-ahead)."""

    def __init__(self, context: MountContext, handle: OpenFile):
        self._context, self._handle = context, handle

    def read(self, offset: int, size: int) -> bytes:
        return self._context.reader.read(self._handle, offset, size)

    def drop_cached(self) -> None:
        self._context.fetcher.reject(self._handle.content)

    def close(self) -> None:
        self._handle.close()


class MountPublished:
    """The mount's read-only side as staging sees it (same caches, same TTL)."""

    def __init__(self, context: MountContext):
        self._context = context
        self._namespace = context.namespace

    def names(self, kind: str) -> list[str]:
        return sorted(self._namespace.records(kind))

    def latest(self, kind: str, name: str) -> int | None:
        record = self._namespace.records(kind).get(name)
        return record.published[-1].number if record else None

    def base(self, kind: str, name: str) -> BaseVersion:
        record = self._namespace.records(kind).get(name)
        if record is None:
            return BaseVersion(None, [], time.time_ns())
        version = record.published[-1]
        tree = self._namespace.tree(record, version.number)
        return BaseVersion(version.number, list(tree.files.values()), int(version.created_at.timestamp() * 1e9))

    def open_file(self, kind: str, name: str, entry: FileEntry) -> _PublishedFile:
        record = self._namespace.record(kind, name)
        return _PublishedFile(self._context, self._context.reader.open(Content(record, entry)))


def flush_services(context: MountContext, ledger: DraftLedger) -> FlushServices:
    """The engine and the server, fresh (no TTL): a flush must see the server as it is now.
    LEDGER: the drafts this mount's flushes created (kept with the staged files, so a remount resumes them)."""
    repo = context.repo
    api = repo.api

    def latest(kind: str, name: str) -> int | None:
        try:
            published = repo.record(kind, name).published
        except NotFound:
            return None
        return published[-1].number if published else None

    def files(kind: str, name: str, version: int) -> list[FileEntry]:
        return repo.files(repo.record(kind, name), version)

    def published(kind: str, name: str, version: int) -> None:
        context.namespace.invalidate(kind)

    return FlushServices(
        ingest=lambda kind, metadata, sources, progress, base: run_ingest(api, kind, metadata, sources, progress,
                                                                          ledger, base),
        latest=latest, files=files, published=published)


def make_staging_overlay(context: MountContext) -> StagingArea | None:
    """The object the FUSE shim routes `/staging/...` to; None (a mount without staging) when another
    mount already stages into the same cache dir."""
    folder = Path(context.options.cache_dir) / "staging"
    try:
        return StagingArea(folder, MountPublished(context), flush_services(context, DraftLedger(folder / LEDGER_FILE)),
                           autoflush=context.options.autoflush)
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise
        log.error("no staging folder on this mount: %s", exc.strerror)
        return None
