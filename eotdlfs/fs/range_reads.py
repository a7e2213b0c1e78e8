"""Range requests for a file's bytes, counted in the fetch stats and refused when the repository sends fewer."""

from __future__ import annotations

from eotdlfs.fs.content import Content, FetchStats
from eotdlfs.repository import Arrived, Repository, RepositoryError


def fetch_range(repo: Repository, stats: FetchStats, content: Content, start: int, length: int,
                progress: Arrived | None = None) -> memoryview:
    """LENGTH bytes of CONTENT from START, in one range request; a RepositoryError when the repository
    sends fewer. PROGRESS: see `Repository.read_range`."""
    return _counted(stats, content, repo.read_range(content.record, content.entry, start, length, progress), length)


def fetch_ranges(repo: Repository, stats: FetchStats, content: Content,
                 spans: list[tuple[int, int]]) -> list[memoryview]:
    """`fetch_range` of each (start, length) of SPANS, the requests in flight at once (`Repository.read_ranges`)."""
    found = repo.read_ranges(content.record, content.entry, spans)
    return [_counted(stats, content, data, length) for data, (_, length) in zip(found, spans)]


def _counted(stats: FetchStats, content: Content, data: bytes | memoryview, length: int) -> memoryview:
    if len(data) != length:
        raise RepositoryError(f"short read of {content.entry.path}: {len(data)} of {length} bytes")
    stats.count_fetch(len(data))
    return memoryview(data)
