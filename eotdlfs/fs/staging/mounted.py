"""Staging wired into a mount: published records from the mount's namespace and block cache,
flushes through the repository's ports (`Repository` read fresh, `Publisher` to ingest)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, TypeVar

from eotdlfs.fs.context import MountContext
from eotdlfs.fs.content import Content
from eotdlfs.fs.reader import OpenFile
from eotdlfs.fs.staging.area import StagingArea
from eotdlfs.fs.staging.files import BaseVersion
from eotdlfs.fs.staging.flush import FlushServices
from eotdlfs.repository import FileEntry, NotFound, Publisher, Repository, Unreachable

T = TypeVar("T")


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


def _noting_reach(context: MountContext, call: Callable[..., T]) -> Callable[..., T]:
    """CALL, whose outcome also sets `server_reachable` of the status: a flush that could not reach
    the server must not sit beside "reachable: yes" from the listing's last refresh (up to the TTL old)."""
    def noted(*args: Any, **kwargs: Any) -> T:
        try:
            result = call(*args, **kwargs)
        except Unreachable:
            context.namespace.server_reachable = False
            raise
        context.namespace.server_reachable = True
        return result
    return noted


def flush_services(context: MountContext, publisher: Publisher) -> FlushServices:
    """The engine and the server, fresh (no TTL): a flush must see the server as it is now."""
    repo: Repository = context.repo

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

    return FlushServices(ingest=_noting_reach(context, publisher.ingest), latest=_noting_reach(context, latest),
                         files=_noting_reach(context, files), published=published)


def make_staging_area(context: MountContext, publisher: Publisher, folder: Path) -> StagingArea:
    """The object the FUSE adapter routes `/staging/...` to, keeping its state in FOLDER (which the
    mount holds: `eotdlfs.fs.mountlock`). PUBLISHER's draft ledger belongs in FOLDER too, so a
    remount resumes the drafts of this mount's flushes."""
    return StagingArea(folder, MountPublished(context), flush_services(context, publisher),
                       autoflush=context.options.autoflush)
