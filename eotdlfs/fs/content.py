"""What the fetchers fetch and count: a file's bytes (`Content`), runs of blocks, the fetch statistics.

Locks. `FetchStats.lock` guards the counters and is a leaf.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from eotdlfs.repository import ContentMismatch, FileEntry, Record


@dataclass(frozen=True)
class Content:
    """A file's bytes: named by checksum, with the record and entry to fetch them from."""

    record: Record
    entry: FileEntry

    @property
    def checksum(self) -> str:
        return self.entry.checksum

    @property
    def size(self) -> int:
        return self.entry.size

    def block_count(self, block_size: int) -> int:
        return -(-self.entry.size // block_size)


class StaleFetch(ContentMismatch):
    """Bytes fetched while the same file failed its checksum: dropped, not trusted."""


def runs(indices: list[int], longest: int) -> list[list[int]]:
    """Consecutive runs of sorted INDICES, none longer than LONGEST."""
    found: list[list[int]] = []
    for index in indices:
        if found and found[-1][-1] == index - 1 and len(found[-1]) < longest:
            found[-1].append(index)
        else:
            found.append([index])
    return found


@dataclass
class FetchStats:
    bytes_fetched: int = 0
    requests: int = 0
    errors: int = 0
    last_error: str = ""
    last_fetch_at: float = 0.0  # time.monotonic() of the last bytes the repository sent
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_fetch(self, nbytes: int) -> None:
        with self.lock:
            self.bytes_fetched += nbytes
            self.requests += 1
            self.last_fetch_at = time.monotonic()

    def count_error(self, exc: BaseException) -> None:
        with self.lock:
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"

    def as_dict(self) -> dict:
        with self.lock:
            return {"bytes_fetched": self.bytes_fetched, "requests": self.requests,
                    "fetch_errors": self.errors, "last_fetch_error": self.last_error}
