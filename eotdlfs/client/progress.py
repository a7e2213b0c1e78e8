"""Progress of a transfer (ingest or download), reported through an object kept apart from the work.

The work calls `start` once with the totals, then `advance` as files and bytes go;
`TransferProgress` (the port, in `eotdlfs.repository`) ignores everything (the quiet
default, used when not on a terminal), `RichTransferProgress` draws a bytes bar and a files bar on stderr.

Locks. `RichTransferProgress._lock` serialises the bars' updates from the worker threads; a
leaf.
"""

from __future__ import annotations

import threading

from eotdlfs.repository import TransferProgress

__all__ = ["RichTransferProgress", "TransferProgress", "progress_for"]


class RichTransferProgress(TransferProgress):
    """Two rich bars (bytes, files) on stderr, safe to advance from worker threads; gone when done."""

    def __init__(self, label: str):
        self._label = label
        self._lock = threading.Lock()
        self._live = None

    def start(self, files: int, bytes_total: int) -> None:
        from rich.console import Console, Group
        from rich.live import Live
        from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TransferSpeedColumn)

        self._bytes = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
        self._files = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        self._bytes_task = self._bytes.add_task(f"{self._label} bytes", total=bytes_total)
        self._files_task = self._files.add_task(f"{self._label} files", total=files)
        self._live = Live(Group(self._bytes, self._files), console=Console(stderr=True), transient=True,
                          refresh_per_second=8)
        self._live.start()

    def advance(self, files: int = 0, bytes_done: int = 0) -> None:
        if self._live is None:
            return
        with self._lock:
            self._bytes.advance(self._bytes_task, bytes_done)
            self._files.advance(self._files_task, files)

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


def progress_for(label: str, interactive: bool) -> TransferProgress:
    """Bars on a terminal, nothing otherwise."""
    return RichTransferProgress(label) if interactive else TransferProgress()
