"""What the filesystem needs from an EOTDL repository, independent of HTTP.

`eotdlfs.client` implements `Repository` over the API; `eotdlfs.fs` depends only on
this module, so its tests can use an in-memory fake and fault tests a wrapper.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class Version:
    """One version of a record; a draft is being ingested and is not for readers."""

    number: int
    created_at: datetime
    size: int
    draft: bool = False


@dataclass(frozen=True)
class Record:
    """A dataset or model: its id, owner and versions (oldest first)."""

    kind: str
    id: str
    name: str
    owner: str
    versions: tuple[Version, ...]

    @property
    def published(self) -> tuple[Version, ...]:
        return tuple(v for v in self.versions if not v.draft)


@dataclass(frozen=True)
class FileEntry:
    """A file of one record version: its path, the file version that holds its bytes, SHA-1 and size."""

    path: str
    file_version: int
    checksum: str
    size: int


class Repository(Protocol):
    def records(self, kind: str) -> list[Record]:
        """Every record of KIND."""

    def record(self, kind: str, name: str) -> Record:
        """The record named NAME; raises NotFound."""

    def files(self, record: Record, version: int) -> list[FileEntry]:
        """The files of one version of RECORD, with true sizes."""

    def read_range(self, record: Record, entry: FileEntry, start: int, length: int) -> bytes | memoryview:
        """LENGTH bytes of ENTRY from START (fewer only at end of file)."""
