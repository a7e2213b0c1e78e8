"""The ports: what the filesystem needs from an EOTDL repository, independent of HTTP.

Reading (`Repository`: records, versions, listings, byte ranges), publishing (`Publisher`:
a flush's ingest, planned, uploaded and published onto a base version), progress
(`TransferProgress`), their dataclasses, and the domain errors. `eotdlfs.client`
implements them over the API; `eotdlfs.fs` depends only on this module, so its tests can use
an in-memory fake and fault tests a wrapper. `eotdlfs.fs.errors.errno_for` is the one table
turning these errors into errno values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

if TYPE_CHECKING:
    from eotdlfs.metadata import Metadata

# --- reading -------------------------------------------------------------------------------

# Told (body, bytes arrived so far) as a range's body comes in; BODY is the memory the bytes
# land in (a retry starts a new one).
Arrived = Callable[[memoryview, int], None]


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
    """A file of one record version: its path, the file version that holds its bytes, SHA-1 and size,
    and when that file version was made (POSIX seconds; None when the repository does not say). The
    time is not part of the identity: two listings of the same bytes are the same entry."""

    path: str
    file_version: int
    checksum: str
    size: int
    created_at: float | None = field(default=None, compare=False)

    def mtime(self, version_mtime: float, per_second: float = 1) -> float:
        """Its mtime in a version dated VERSION_MTIME: when its file version was made, so a file
        carried unchanged into later versions keeps its time (`rsync -a` from one version to the
        next skips it); the version's date when the repository does not say. PER_SECOND gives
        VERSION_MTIME's unit (1e9: nanoseconds), in which the answer comes."""
        return version_mtime if self.created_at is None else self.created_at * per_second


class Repository(Protocol):
    def records(self, kind: str) -> list[Record]:
        """Every record of KIND."""

    def record(self, kind: str, name: str) -> Record:
        """The record named NAME; raises NotFound."""

    def files(self, record: Record, version: int) -> list[FileEntry]:
        """The files of one version of RECORD, with true sizes."""

    def lookup(self, record: Record, version: int, path: str) -> list[FileEntry]:
        """PATH in one version of RECORD in one small request: its entry if it is a file, else
        one entry under PATH/ if it is a folder, else none. A server that cannot filter
        answers the whole list (`files`)."""

    def lookup_at_once(self, record: Record, version: int, path: str) -> list[FileEntry] | None:
        """`lookup` on the caller's thread, tried once and within the read timeout (a FUSE lookup
        waits for it); None when only `lookup` can answer (its retries, its fallbacks)."""

    def read_range(self, record: Record, entry: FileEntry, start: int, length: int,
                   progress: Arrived | None = None) -> bytes | memoryview:
        """LENGTH bytes of ENTRY from START (fewer only at end of file). PROGRESS, if given, may
        be told how far the body has arrived as it comes (readers waiting for its start)."""

    def read_ranges(self, record: Record, entry: FileEntry,
                    spans: Sequence[tuple[int, int]]) -> list[bytes | memoryview]:
        """`read_range` of each (start, length) of SPANS, the requests in flight at once where the
        repository allows, all on the caller's thread (a seeking reader's tile rows)."""

    def read_files(self, record: Record, entries: Sequence[FileEntry]) -> list[bytes | memoryview]:
        """The whole bytes of each of ENTRIES (small files), in as few requests as the repository
        allows; unchecked (the caller checks each against its SHA-1)."""


# --- publishing ------------------------------------------------------------------------------


class TransferProgress:
    """Progress of a transfer, kept apart from the work: `start` once with the totals, then
    `advance` as files and bytes go. This base ignores everything (the quiet default)."""

    def start(self, files: int, bytes_total: int) -> None:
        pass

    def advance(self, files: int = 0, bytes_done: int = 0) -> None:
        pass

    def __enter__(self) -> "TransferProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class FileToShip(Protocol):
    """A file the new version should hold: its bytes on local disk (LOCAL_PATH), or known to the
    repository by CHECKSUM (a published file that was only renamed)."""

    path: str
    size: int
    checksum: str | None
    local_path: Path | None


@dataclass(frozen=True)
class IngestResult:
    version: int
    uploaded: int
    carried: int
    dropped: int
    bytes_sent: int
    resumed: int = 0  # files an interrupted run had already put into the reused draft
    record_note: str = ""  # what became of the record's fields when metadata.yml changed them


class Publisher(Protocol):
    def ingest(self, kind: str, metadata: Metadata, files: Sequence[FileToShip], progress: TransferProgress,
               base: int) -> IngestResult:
        """Make FILES the next version of the record METADATA names, published only if BASE (0: none)
        is still its latest version, else `VersionConflict`; `NothingToIngest` when FILES equal it.
        Resumable: a retry after a failure finishes the same draft."""


# --- errors ----------------------------------------------------------------------------------


class RepositoryError(Exception):
    """Any failure of a repository. `detail` is its own message; `status` the code it answered
    with, 0 when none came back (`eotdlfs.client` fills it in)."""

    def __init__(self, detail: str, status: int = 0):
        super().__init__(detail)
        self.detail = detail
        self.status = status


class BadRequest(RepositoryError):
    """The repository refused what was sent as invalid."""


class Unauthorized(RepositoryError):
    """Credentials missing or refused."""


class Forbidden(RepositoryError):
    """Credentials fine, but not allowed (someone else's record)."""


class NotFound(RepositoryError):
    pass


class Conflict(RepositoryError):
    """The repository holds something that clashes (a record of that name exists, say)."""


class VersionConflict(Conflict):
    """A version was published after the one a writer based its draft on; nothing of the draft was published."""

    def __init__(self, noun: str, latest: int, base: int):
        based = f"version {base}" if base else "no version"
        super().__init__(f"{noun} version {latest} was published meanwhile (this ingest was based on {based}); "
                         "run it again to ingest onto the new version", 409)
        self.latest = latest
        self.base = base


class TooLarge(RepositoryError):
    pass


class Unreachable(RepositoryError):
    """No answer: connection refused, reset or timed out."""


class NothingToIngest(Exception):
    """An ingest found nothing new, changed or removed since the latest version: no version made."""

    def __init__(self, name: str, version: int):
        super().__init__(f"{name}: nothing changed since version {version}")
        self.name = name
        self.version = version


class ContentMismatch(Exception):
    """Bytes read do not hash to the file's SHA-1, or fewer came than asked for."""
