"""An in-memory `Repository` for the fs unit tests, with counters and fault switches."""

from __future__ import annotations

import hashlib
import threading
import time
from datetime import datetime, timezone

from eotdlfs.repository import FileEntry, NotFound, Record, Unreachable, Version


class MemoryRepository:
    def __init__(self):
        self._records: dict[tuple[str, str], Record] = {}
        self._files: dict[tuple[str, int], list[FileEntry]] = {}
        self._blobs: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self.range_calls: list[tuple[str, int, int]] = []
        self.list_calls = 0
        self.file_lists = 0
        self.offline = False
        self.corrupt: set[str] = set()  # checksums whose bytes come back altered
        self.delay = 0.0
        self.read_files_calls: list[list[str]] = []  # the paths of each `read_files`
        self.corrupt_in_bulk: set[str] = set()  # checksums whose bytes `read_files` alone alters
        # A body that stops after its first `stall_at` bytes until `resume` is set (told to progress).
        self.stall_at: int | None = None
        self.resume = threading.Event()

    def publish(self, kind: str, name: str, files: dict[str, bytes], draft: bool = False,
                file_times: dict[str, float] | None = None) -> Record:
        """Add a version of NAME holding FILES (path -> bytes), made at FILE_TIMES (path -> POSIX
        seconds; a file without one has no time of its own, as from an official server)."""
        old = self._records.get((kind, name))
        number = len(old.versions) + 1 if old else 1
        entries = []
        for path, data in sorted(files.items()):
            checksum = hashlib.sha1(data).hexdigest()
            self._blobs[checksum] = data
            entries.append(FileEntry(path, number, checksum, len(data), (file_times or {}).get(path)))
        version = Version(number, datetime(2024, 1, number, tzinfo=timezone.utc), sum(len(d) for d in files.values()), draft)
        record = Record(kind, f"id-{name}", name, "alice", (old.versions if old else ()) + (version,))
        self._records[(kind, name)] = record
        self._files[(record.id, number)] = entries
        return record

    def _check(self):
        if self.offline:
            raise Unreachable("cannot reach the repository (test)")

    def records(self, kind: str) -> list[Record]:
        self._check()
        self.list_calls += 1
        return [r for (k, _), r in self._records.items() if k == kind]

    def record(self, kind: str, name: str) -> Record:
        self._check()
        try:
            return self._records[(kind, name)]
        except KeyError:
            raise NotFound("Dataset doesn't exist", 404) from None

    def files(self, record: Record, version: int) -> list[FileEntry]:
        self._check()
        with self.lock:
            self.file_lists += 1
        return list(self._files[(record.id, version)])

    def lookup(self, record: Record, version: int, path: str) -> list[FileEntry]:
        self._check()
        entries = self._files[(record.id, version)]
        found = [e for e in entries if e.path == path]
        return found or [e for e in entries if e.path.startswith(path + "/")][:1]

    def lookup_at_once(self, record: Record, version: int, path: str) -> None:
        return None  # always the way of `lookup`, whose waits the tests control

    def read_ranges(self, record: Record, entry: FileEntry, spans) -> list[bytes]:
        return [self.read_range(record, entry, start, length) for start, length in spans]

    def read_range(self, record: Record, entry: FileEntry, start: int, length: int, progress=None) -> bytes:
        self._check()
        started = time.monotonic()
        while time.monotonic() < started + self.delay:  # a test lowering it (a server back) ends the wait
            time.sleep(0.01)
        with self.lock:
            self.range_calls.append((entry.checksum, start, length))
        data = self._blobs[entry.checksum][start:start + length]
        if entry.checksum in self.corrupt and data:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        if self.stall_at is not None:
            if progress is not None:
                progress(memoryview(data), min(self.stall_at, len(data)))
            self.resume.wait(30)
        return data

    @property
    def bytes_served(self) -> int:
        with self.lock:
            return sum(min(length, max(0, len(self._blobs[c]) - start)) for c, start, length in self.range_calls)

    def read_files(self, record: Record, entries: list[FileEntry]) -> list[bytes]:
        self._check()
        with self.lock:
            self.read_files_calls.append([e.path for e in entries])
        return [bytes([self._blobs[e.checksum][0] ^ 0xFF]) + self._blobs[e.checksum][1:]
                if e.checksum in self.corrupt_in_bulk else self._blobs[e.checksum] for e in entries]
