"""An ingest as data: the operations that turn the latest version into the new one, computed offline.

`plan_ingest` diffs the wanted files against the latest version's files by path and SHA-1:
new and changed files become `Upload`s, unchanged ones `Carry`s (route 7, no bytes sent),
and paths no longer wanted `Drop`s (simply left out of the new version). On a server whose
route 7 takes known bytes under any path (`carry_any_path`), a file whose SHA-1 the latest
version holds under another path (a rename, a copy, a hard link), or that an upload of this
plan sends (carries run after the uploads), is a `Carry` too. Everything here
is pure, so plans and batches are tested without a server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence, TypeVar

from eotdlfs.paths import validate_file_path

MULTIPART_THRESHOLD = 16 * 1024 * 1024  # files over this go through routes 10-12, as in the official client


@dataclass(frozen=True)
class SourceFile:
    """A file the new version should contain.

    `local_path` is where its bytes are; None when they are not on this machine (a staged
    file that was only renamed, say): then its checksum must be known and some file of the
    latest version must have the same checksum, whose bytes the engine fetches.
    """

    path: str
    size: int
    checksum: str | None = None
    local_path: Path | None = None

    def __post_init__(self) -> None:
        validate_file_path(self.path)
        if self.local_path is None and self.checksum is None:
            raise ValueError(f"{self.path}: needs a checksum or local bytes")


@dataclass(frozen=True)
class LatestFile:
    """A file of the latest version, as route 5 lists it."""

    path: str
    file_version: int
    checksum: str


@dataclass(frozen=True)
class Upload:
    """Send the bytes of SOURCE; ORIGIN is the latest-version file to fetch them from when not local."""

    source: SourceFile
    origin: LatestFile | None = None

    @property
    def multipart(self) -> bool:
        return self.source.size > MULTIPART_THRESHOLD


@dataclass(frozen=True)
class Carry:
    """Put the already-stored file PATH (same CHECKSUM) into the new version; NEW_PATH: bytes the
    record holds under another path (route 7 with `any_path`)."""

    path: str
    checksum: str
    new_path: bool = False


@dataclass(frozen=True)
class Drop:
    """Leave PATH, present in the latest version, out of the new one."""

    path: str


@dataclass(frozen=True)
class IngestPlan:
    uploads: tuple[Upload, ...]
    carries: tuple[Carry, ...]
    drops: tuple[Drop, ...]
    wanted: Mapping[str, str] = field(default_factory=dict)  # path -> checksum of the new version

    @property
    def nothing_changed(self) -> bool:
        return not self.uploads and not self.drops and not any(c.new_path for c in self.carries)

    @property
    def bytes_to_send(self) -> int:
        return sum(u.source.size for u in self.uploads)

    def without(self, present: Mapping[str, str]) -> "IngestPlan":
        """This plan minus the files a resumed draft already holds with the wanted checksum."""
        return IngestPlan(
            uploads=tuple(u for u in self.uploads if present.get(u.source.path) != u.source.checksum),
            carries=tuple(c for c in self.carries if present.get(c.path) != c.checksum),
            drops=self.drops,
            wanted=self.wanted,
        )

    def accepts(self, present: Mapping[str, str]) -> bool:
        """True when every file already in a draft belongs in the new version as it is."""
        return all(self.wanted.get(path) == checksum for path, checksum in present.items())


def plan_ingest(sources: Sequence[SourceFile], latest_files: Iterable[LatestFile],
                carry_any_path: bool = False) -> IngestPlan:
    """The operations that make the new version hold exactly SOURCES (whose checksums must be known);
    CARRY_ANY_PATH: the server carries known bytes under new paths."""
    latest = {f.path: f for f in latest_files}
    by_checksum = {f.checksum: f for f in latest.values()}
    stored = set(by_checksum) if carry_any_path else set()  # bytes the record holds once the uploads are done
    uploads: list[Upload] = []
    carries: list[Carry] = []
    wanted: dict[str, str] = {}
    for source in sources:
        if source.checksum is None:
            raise ValueError(f"{source.path}: checksum not computed")
        if source.path in wanted:
            raise ValueError(f"{source.path}: listed twice")
        wanted[source.path] = source.checksum
        current = latest.get(source.path)
        if current is not None and current.checksum == source.checksum:
            carries.append(Carry(source.path, source.checksum))
        elif source.checksum in stored:
            carries.append(Carry(source.path, source.checksum, new_path=True))
        elif source.local_path is not None:
            uploads.append(Upload(source))
            if carry_any_path:
                stored.add(source.checksum)
        elif source.checksum in by_checksum:
            uploads.append(Upload(source, origin=by_checksum[source.checksum]))
        else:
            raise ValueError(f"{source.path}: changed, but its bytes are neither local nor in the latest version")
    drops = tuple(Drop(path) for path in latest if path not in wanted)
    return IngestPlan(uploads=tuple(uploads), carries=tuple(carries), drops=drops, wanted=wanted)


T = TypeVar("T")


def chunked(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def upload_batches(uploads: Iterable[Upload], max_bytes: int, max_files: int) -> list[list[Upload]]:
    """Small uploads grouped into zip batches of at most MAX_FILES files and MAX_BYTES bytes
    (a single file larger than MAX_BYTES gets a batch of its own)."""
    batches: list[list[Upload]] = []
    size = 0
    for upload in uploads:
        if not batches or len(batches[-1]) >= max_files or size + upload.source.size > max_bytes:
            batches.append([])
            size = 0
        batches[-1].append(upload)
        size += upload.source.size
    return batches
