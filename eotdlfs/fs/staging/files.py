"""What staging exchanges with the mount and the flusher: published files and versions,
staged files, pending changes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

from eotdlfs.repository import FileEntry


class BaseFile(Protocol):
    """An open published file (the mount's reader: block cache and read-ahead)."""

    def read(self, offset: int, size: int) -> bytes: ...

    def drop_cached(self) -> None:
        """Forget the file's cached bytes (they failed its SHA-1): the next open fetches them again."""

    def close(self) -> None: ...


OpenBase = Callable[[FileEntry], BaseFile]

# The key prefix of a file the flush itself makes (a STAC version's item index): no staged node
# holds it, so publishing gives it one, and the staged tree shows the version it published.
MADE_BY_FLUSH = "made:"


@dataclass(frozen=True)
class BaseVersion:
    """The published version a staged record starts from (number None: a new record)."""

    number: int | None
    entries: Sequence[FileEntry]
    mtime_ns: int


@dataclass(frozen=True)
class StagedFile:
    """One file of a flush: bytes known to the server (checksum) or on local disk (local_path)."""

    path: str
    size: int
    checksum: str | None
    local_path: Path | None
    key: str  # what names its bytes across renames: the upper id, 'base:' + its base path, or MADE_BY_FLUSH + path

    def to_json(self) -> dict:
        return {"path": self.path, "size": self.size, "checksum": self.checksum,
                "local_path": str(self.local_path) if self.local_path else None, "key": self.key}

    @classmethod
    def from_json(cls, data: dict) -> "StagedFile":
        local = data.get("local_path")
        return cls(data["path"], data["size"], data.get("checksum"), Path(local) if local else None, data["key"])


@dataclass(frozen=True)
class PendingChanges:
    """What a flush would ship: paths added, changed and deleted relative to the base, and staged bytes."""

    added: tuple[str, ...]
    changed: tuple[str, ...]
    deleted: tuple[str, ...]
    bytes_pending: int

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.deleted)


def staging_error(code: int, path: str) -> OSError:
    """The OSError a staging operation on PATH fails with (the errno table keeps its errno)."""
    return OSError(code, os.strerror(code), path)
