"""Progress of an ingest, reported through an object kept apart from the operations.

The engine calls `start` once with the totals, then `advance` as files and bytes go out;
`IngestProgress` itself ignores everything (the quiet default), `RichIngestProgress`
draws a bytes bar and a files bar on a terminal.
"""

from __future__ import annotations

import threading
from types import TracebackType


class IngestProgress:
    """Quiet progress: the base the engine calls, doing nothing."""

    def start(self, files: int, bytes_total: int) -> None:
        pass

    def advance(self, files: int = 0, bytes_sent: int = 0) -> None:
        pass

    def __enter__(self) -> "IngestProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class RichIngestProgress(IngestProgress):
    """Two rich bars (bytes sent, files done), safe to advance from upload threads."""

    def __init__(self, label: str):
        from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TransferSpeedColumn

        self._lock = threading.Lock()
        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                             transient=True)
        self._files_bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), transient=True)
        self._label = label
        self._bytes_task = self._files_task = None

    def start(self, files: int, bytes_total: int) -> None:
        from rich.console import Group
        from rich.live import Live

        self._bytes_task = self._bar.add_task(f"{self._label} bytes", total=bytes_total)
        self._files_task = self._files_bar.add_task(f"{self._label} files", total=files)
        self._live = Live(Group(self._bar, self._files_bar), transient=True, refresh_per_second=8)
        self._live.start()

    def advance(self, files: int = 0, bytes_sent: int = 0) -> None:
        if self._bytes_task is None:
            return
        with self._lock:
            self._bar.advance(self._bytes_task, bytes_sent)
            self._files_bar.advance(self._files_task, files)

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._bytes_task is not None:
            self._live.stop()
