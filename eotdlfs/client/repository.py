"""`eotdlfs.repository.Repository` over the HTTP API: the records, versions and files the filesystem shows.

Thin on purpose: the fs layer caches; this only turns JSON into the dataclasses of
`eotdlfs.repository`. Thread-safe because `ApiClient` is.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Sequence, TypeVar

from eotdlfs.client.api import ApiClient
from eotdlfs.oncelog import OnceLog
from eotdlfs.parallel import in_parallel
from eotdlfs.repository import Arrived, FileEntry, Record, RepositoryError, Version

log = logging.getLogger(__name__)
_malformed = OnceLog(log)

SIZE_LOOKUPS = 8  # HEADs in flight when a server lists no sizes
T = TypeVar("T")


def parsed(parse: Callable[[Any], T], items: Iterable[Any], what: str) -> list[T]:
    """PARSE of each of ITEMS. An item a broken server sent malformed (a field missing or not a
    number) is left out and logged: it must not take the rest of the listing with it."""
    out = []
    for item in items:
        try:
            out.append(parse(item))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            _malformed.warning(f"left out a malformed {what} from the server: {item!r:.200} "
                               f"({type(exc).__name__}: {exc})")
    return out


def parse_time(value: Any) -> datetime:
    """An ISO 8601 `createdAt` as an aware datetime (UTC when the server gives no zone)."""
    return given_time(value) or datetime.fromtimestamp(0, timezone.utc)


def given_time(value: Any) -> datetime | None:
    """An ISO 8601 `createdAt` as an aware datetime, None when missing or odd (a listing must
    not fail over a date)."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (AttributeError, TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def record_versions(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Published and draft version entries of a record's JSON, drafts marked `"draft": true`.

    Our server lists drafts apart (`"drafts"`) so the official client never sees them.
    """
    return [*(data.get("versions") or []), *({**d, "draft": True} for d in data.get("drafts") or [])]


def parse_version(data: dict[str, Any]) -> Version:
    return Version(number=int(data["version_id"]), created_at=parse_time(data.get("createdAt")),
                   size=int(data.get("size") or 0), draft=bool(data.get("draft", False)))


def parse_record(kind: str, data: dict[str, Any]) -> Record:
    versions = sorted(parsed(parse_version, record_versions(data), "version"), key=lambda v: v.number)
    return Record(kind=kind, id=str(data["id"]), name=str(data["name"]), owner=str(data.get("uid", "")),
                  versions=tuple(versions))


class ApiRepository:
    """A repository server reached over HTTP."""

    def __init__(self, api: ApiClient):
        self.api = api

    def records(self, kind: str, match: str | None = None) -> list[Record]:
        """The records of KIND (with MATCH, those whose names contain it, case-insensitive)."""
        return parsed(lambda data: parse_record(kind, data), self.api.records(kind, match=match), f"{kind} record")

    def record(self, kind: str, name: str) -> Record:
        return parse_record(kind, self.api.record_by_name(kind, name))

    def files(self, record: Record, version: int) -> list[FileEntry]:
        return self._entries(record, self.api.files(record.kind, record.id, version))

    def lookup(self, record: Record, version: int, path: str) -> list[FileEntry]:
        return self._entries(record, self.api.files(record.kind, record.id, version, path))

    def lookup_at_once(self, record: Record, version: int, path: str) -> list[FileEntry] | None:
        answer = self.api.lookup_at_once(record.kind, record.id, version, path)
        return None if answer is None else self._entries(record, answer)

    def _entries(self, record: Record, answer: list[dict[str, Any]]) -> list[FileEntry]:
        listed = parsed(_file_row, answer, "file entry")

        def size(f: dict[str, Any]) -> int:
            if f["size"] is not None:
                return f["size"]
            return self.api.head_file(record.kind, record.id, f["filename"], f["version"])

        # a server without sizes in listings costs one HEAD per file: a few in flight
        sizes = in_parallel(size, listed, SIZE_LOOKUPS) if any(f["size"] is None for f in listed) \
            else [size(f) for f in listed]
        return [FileEntry(path=f["filename"], file_version=f["version"], checksum=f["checksum"], size=n,
                          created_at=f["created_at"]) for f, n in zip(listed, sizes)]

    def read_range(self, record: Record, entry: FileEntry, start: int, length: int,
                   progress: Arrived | None = None) -> bytes | memoryview:
        return self.api.read_range(record.kind, record.id, entry.path, entry.file_version, start, length, progress)

    def read_ranges(self, record: Record, entry: FileEntry,
                    spans: Sequence[tuple[int, int]]) -> list[bytes | memoryview]:
        return self.api.read_ranges(record.kind, record.id, entry.path, entry.file_version, spans)

    def read_files(self, record: Record, entries: Sequence[FileEntry]) -> list[bytes | memoryview]:
        """`contents` requests within the server's limits when it has the extension, else one
        range request per file, a few at a time."""
        limits = self.api.capabilities().get("contents")
        if not isinstance(limits, dict):
            return in_parallel(lambda e: self.read_range(record, e, 0, e.size), entries, SIZE_LOOKUPS)
        out: list[bytes | memoryview] = []
        max_bytes = int(limits.get("max_bytes") or 0)
        for group in _groups(entries, int(limits.get("max_files") or 1), max_bytes):
            if group[0].size > max_bytes:  # alone in its group: too large for the route
                out.append(self.read_range(record, group[0], 0, group[0].size))
                continue
            data = memoryview(self.api.contents(record.kind, record.id, [(e.path, e.file_version) for e in group]))
            if len(data) != sum(e.size for e in group):
                raise RepositoryError(f"the contents of {len(group)} files came back {len(data)} bytes long,"
                                      f" not {sum(e.size for e in group)}")
            start = 0
            for entry in group:
                out.append(data[start:start + entry.size])
                start += entry.size
        return out


def _groups(entries: Sequence[FileEntry], max_files: int, max_bytes: int) -> list[list[FileEntry]]:
    """ENTRIES in order, cut into groups of at most MAX_FILES and MAX_BYTES (a larger file alone)."""
    groups: list[list[FileEntry]] = []
    size = 0
    for entry in entries:
        if not groups or len(groups[-1]) >= max_files or (groups[-1] and size + entry.size > max_bytes):
            groups.append([])
            size = 0
        groups[-1].append(entry)
        size += entry.size
    return groups

def _file_row(data: dict[str, Any]) -> dict[str, Any]:
    """A file entry of route 5 with the fields `files` reads, checked for type. `createdAt` is our
    server's (an older or official one sends none: the mount then dates files by their version)."""
    size, created = data.get("size"), given_time(data.get("createdAt"))
    return {"filename": str(data["filename"]), "version": int(data["version"]), "checksum": str(data["checksum"]),
            "size": None if size is None else int(size), "created_at": created and created.timestamp()}
