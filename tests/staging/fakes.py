"""In-memory stand-ins for the published side and the ingestion engine, for staging tests without a mount."""

from __future__ import annotations

import hashlib

from eotdlfs.fs.staging.flush import FlushServices
from eotdlfs.fs.staging.files import BaseVersion, StagedFile
from eotdlfs.fs.staging.overlay import StagingOverlay
from eotdlfs.repository import FileEntry, FileToShip, IngestResult, NothingToIngest, VersionConflict


# A small published version: what most overlay tests start from (the `versions` fixture).
BASE = {"metadata.yml": b"name: x\n", "a/one.txt": b"one", "a/b/two.bin": bytes(range(256)) * 40}


class FakeVersions:
    """Published versions in memory: what the mount's namespace and block cache would serve."""

    def __init__(self, files: dict[str, bytes], publish: bool = True):
        self.blobs: dict[str, bytes] = {}
        self.versions: list[list[FileEntry]] = []
        self.reads = 0
        self.damaged: dict[str, int] = {}  # checksum -> opens still served a flipped byte (a damaged cache)
        if publish:
            self.publish(files)

    def publish(self, files: dict[str, bytes]) -> int:
        entries = []
        for path, data in sorted(files.items()):
            checksum = hashlib.sha1(data).hexdigest()
            self.blobs[checksum] = data
            entries.append(FileEntry(path, len(self.versions) + 1, checksum, len(data)))
        self.versions.append(entries)
        return len(self.versions)

    def base(self) -> BaseVersion:
        return BaseVersion(len(self.versions), self.versions[-1], 1_700_000_000 * 10**9)

    def open(self, entry: FileEntry) -> "FakeFile":
        return FakeFile(self, entry)

    def ship(self, files: list[StagedFile]) -> int:
        """What a flush would make the server publish."""
        return self.publish({f.path: f.local_path.read_bytes() if f.local_path else self.blobs[f.checksum]
                             for f in files})


class FakeFile:
    def __init__(self, versions: FakeVersions, entry: FileEntry):
        self.versions, self.entry = versions, entry

    def read(self, offset: int, size: int) -> bytes:
        self.versions.reads += 1
        data = self.versions.blobs[self.entry.checksum][offset:offset + size]
        if self.versions.damaged.get(self.entry.checksum) and offset == 0 and data:
            data = bytes([data[0] ^ 1]) + data[1:]
        return data

    def drop_cached(self) -> None:
        if self.versions.damaged.get(self.entry.checksum):
            self.versions.damaged[self.entry.checksum] -= 1

    def close(self) -> None:
        pass


class FakeRepository:
    """Records of one kind, each a FakeVersions, plus an engine that publishes into them."""

    def __init__(self):
        self.records: dict[str, FakeVersions] = {}
        self.fail_with: Exception | None = None
        self.ingests = 0
        self.meanwhile: list[dict[str, bytes]] = []  # versions another writer publishes during the next ingests

    # PublishedRecords
    def names(self, kind: str) -> list[str]:
        return sorted(self.records)

    def latest(self, kind: str, name: str) -> int | None:
        record = self.records.get(name)
        return len(record.versions) if record else None

    def base(self, kind: str, name: str) -> BaseVersion:
        return self.records[name].base()

    def open_file(self, kind: str, name: str, entry: FileEntry) -> "FakeFile":
        return self.records[name].open(entry)

    # the engine
    def ingest(self, kind, metadata, sources: list[FileToShip], progress, base: int = 0) -> IngestResult:
        """Like the engine: publish only if BASE is still the latest version (else VersionConflict)."""
        self.ingests += 1
        if self.fail_with is not None:
            raise self.fail_with
        record = self.records.setdefault(metadata.name, FakeVersions({}, publish=False))
        if self.meanwhile:
            record.publish(self.meanwhile.pop(0))
        if len(record.versions) != base:
            raise VersionConflict("Dataset", len(record.versions), base)
        blobs = {s.path: s.local_path.read_bytes() if s.local_path else record.blobs[s.checksum] for s in sources}
        latest = {e.path: e.checksum for e in record.versions[-1]} if record.versions else None
        wanted = {p: hashlib.sha1(b).hexdigest() for p, b in blobs.items()}
        if latest == wanted:
            raise NothingToIngest(metadata.name, len(record.versions))
        uploaded = sum(1 for p, c in wanted.items() if (latest or {}).get(p) != c)
        version = record.publish(blobs)
        return IngestResult(version, uploaded, len(wanted) - uploaded,
                            len(set(latest or {}) - set(wanted)), 0)

    def services(self) -> FlushServices:
        return FlushServices(ingest=self.ingest, latest=self.latest,
                             files=lambda kind, name, n: self.records[name].versions[n - 1],
                             published=lambda kind, name, n: None)


def flush(overlay: StagingOverlay, versions: FakeVersions) -> int:
    """Freeze OVERLAY, publish what it ships as VERSIONS' next version, and rebase it there; the number."""
    shipped = overlay.freeze(1.0, lambda path: None)
    number = versions.ship(shipped)
    overlay.publish(number, versions.versions[-1], shipped)
    return number
