"""How far ahead of a reader to fetch: a window that grows while reads are sequential.

As in mountpoint-s3 and rclone, a reader proves itself sequential before any read-ahead is
spent on it, the window doubles with each sequential read up to a cap, and small
out-of-order gaps (the kernel reorders concurrent requests) do not count as seeks. A random
reader gets no read-ahead at all, so it wastes nothing; neither does a reader that reads a
header and then jumps, because a run must cover half a window before read-ahead starts. A read counts as sequential when it
starts within `first_window` of where the last one ended (either way), or inside the window
already being fetched.
"""

from __future__ import annotations

class ReadAheadWindow:
    """Per open file: given each read, the byte range worth having fetched beyond it."""

    def __init__(self, first_window: int, max_window: int):
        self.first_window = first_window
        self.max_window = max_window
        self.window = 0
        self._expected: int | None = None
        self._run_start = 0  # where the current sequential run began

    def advise(self, offset: int, size: int) -> tuple[int, int]:
        """Record a read of SIZE bytes at OFFSET; return (start, end) to read ahead (may be empty)."""
        end = offset + size
        sequential = (
            self._expected is not None
            and self._expected - self.first_window <= offset
            <= self._expected + max(self.first_window, self.window)
        )
        if not sequential:
            self._run_start = offset
            self.window = 0
        elif end - self._run_start >= self.first_window // 2:
            self.window = min(max(self.window * 2, self.first_window), self.max_window)
        self._expected = max(end, self._expected or 0) if sequential else end
        return end, end + self.window
