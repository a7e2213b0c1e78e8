"""How far ahead of a reader to fetch: a window that grows while reads are sequential.

As in mountpoint-s3 and rclone, a reader proves itself sequential before any read-ahead is
spent on it, the window doubles as the reader consumes it, up to a cap, and small
out-of-order gaps (the kernel reorders concurrent requests) do not count as seeks. A random
reader gets no read-ahead at all, so it wastes nothing; neither does a reader that reads a
header and then jumps, because a run must cover half a window before read-ahead starts. The
window doubles only when the reader has consumed half of it (as mountpoint-s3 grows when the
reader reaches the part being fetched), not on every request: the kernel's own read-ahead
burst of a few 128 KiB requests does not blow it up. A read counts as sequential when it
starts within `first_window` of where the last one ended (either way), or inside the window
already being fetched.
"""

from __future__ import annotations

class ReadAheadWindow:
    """Per open file: given each read, the byte range worth having fetched beyond it."""

    def __init__(self, first_window: int, max_window: int, seeking_only: bool = False):
        self.first_window = first_window
        # A reader that is never read ahead for and always fetched in pieces (a TIFF header's
        # reader: a few small reads near the start that must not cost a whole block)
        self.seeking_only = seeking_only
        self.max_window = max_window
        self.window = 0
        self._expected: int | None = None
        self._run_start = 0  # where the current sequential run began
        self._grow_at = 0  # the window doubles once a read ends past this offset
        # Whether the last read was far from the one before: the kernel's own read-ahead
        # requests never are, so a jump is the reader's (a TIFF reader's jump to a tile, `tiles`).
        self.jumped = False

    def advise(self, offset: int, size: int) -> tuple[int, int]:
        """Record a read of SIZE bytes at OFFSET; return (start, end) to read ahead (may be empty)."""
        end = offset + size
        sequential = (
            self._expected is not None
            and self._expected - self.first_window <= offset
            <= self._expected + max(self.first_window, self.window)
        )
        self.jumped = not sequential
        if self.seeking_only:
            self._expected = end
            return end, end
        if not sequential:
            self._run_start = offset
            self.window = 0
        elif self.window == 0 and end - self._run_start >= self._earns_read_ahead():
            self.window, self._grow_at = self.first_window, end + self.first_window // 2
        elif self.window and end >= self._grow_at:  # the reader used half the window: double it
            self.window = min(self.window * 2, self.max_window)
            self._grow_at = end + self.window // 2
        self._expected = max(end, self._expected or 0) if sequential else end
        return end, end + self.window

    @property
    def seeking(self) -> bool:
        """Whether the reader jumped (anywhere but the file's start) and has not read on far
        enough since to earn read-ahead: it is fetched only what it reads, in small pieces."""
        return self.seeking_only or (self.window == 0 and self._run_start > 0)

    def _earns_read_ahead(self) -> int:
        # A run that began with a jump must cover a whole window: a COG reader reads rows of
        # two or three tiles (1-1.5 MiB) at a place and then jumps.
        return self.first_window if self._run_start > 0 else self.first_window // 2
