"""The shape of the windows a TIFF reader reads, learned from its last ones: which tiles its
next jump will want, so they come in one round trip instead of one per kernel request.

GDAL reads a window of a tiled GeoTIFF row by row: it jumps to the row's first tile and
reads the row's tiles, which lie side by side in the file, then jumps one tile row further
(the same distance each time, the stride) for the next row. The kernel asks for a row's
second tile as read-ahead of its first, in 128 KiB requests that look no different from
the read-ahead past a row's end, so only the reader's history can tell that it will be
wanted. A reader of random windows of one size keeps the same shape from window to window:
on a jump to a tile, as many tiles as most of the last three rows spanned are fetched at
once, and on the first row of a window, as many rows below it as most of the last three
windows had, side by side. Windows of varied shapes agree on less, and are fetched less
ahead. Most, not all: a window that overlaps an earlier one finds some of its tiles in the
kernel's page cache and asks the mount for fewer rows or tiles than it reads, and one such
window made the next three fetch a row at a time, a round trip per row (behind 20 ms, 23
of 50 random windows took 3-8 round trips instead of 1).

How far a row went is told by its reads to their second farthest end: the farthest may be
the kernel's read-ahead past the row, which the reader waits for when its last read shares
a kernel request with it, so it is fetched with the row too (as far as it went last time).
A stride is a jump distance seen twice among the last few jumps (random windows' jumps
between windows do not repeat); a jump of the stride is a further row of the window, any
other jump begins a window. What is guessed is bounded (`MAX_COLUMNS`, `MAX_ROWS`,
`MAX_GUESS_BYTES`, `MAX_PAST_ROW`) and only steers what is fetched, never the bytes served:
a wrong guess costs bytes, not correctness.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Iterator

from eotdlfs.fs.tiles import Layout

MAX_COLUMNS = 8  # tiles per row fetched on a jump
MAX_ROWS = 4  # rows of a window fetched at its first
MAX_GUESS_BYTES = 8 << 20  # a window's rows fetched at its first, in all
MAX_STRIDE = 256 << 20
MAX_PAST_ROW = 1 << 20  # the kernel's read-ahead past a row, fetched with the row
KEPT_JUMPS = 8
KEPT_SHAPES = 3  # rows and windows whose shape is remembered
GAP = 64  # bytes between tiles side by side
NEAR = 1 << 20  # a read starting this far past a row's farthest end is not of the row


class TileWindows:
    """Per open file: the tiles to fetch when the reader jumps to a tile. Not thread-safe
    (the handle's lock guards it)."""

    def __init__(self):
        self._run_start: int | None = None  # the tile the current row began at
        self._run_ends = [0, 0]  # the two farthest ends of the row's reads (largest last)
        # Of the last few rows and windows: tiles a row spanned, rows a window had. What most of
        # them had is fetched: a reader of windows of varied shapes (or of one size that does
        # not divide into tiles) would be fetched tiles it does not read.
        self._columns: deque[int] = deque(maxlen=KEPT_SHAPES)  # none yet: the first row is fetched a tile
        self._window_rows: deque[int] = deque([1], maxlen=KEPT_SHAPES)
        self._past_row = 0  # how far the kernel read past the last row's end
        self._jumps: deque[int] = deque(maxlen=KEPT_JUMPS)  # distances of the last jumps
        self._stride: int | None = None
        self._rows = 1  # rows of the window being read so far

    def read(self, offset: int, end: int) -> None:
        """A read that followed on from the reader's last one."""
        if self._run_start is None or not self._run_start <= offset <= self._run_ends[1] + NEAR:
            return
        second, farthest = self._run_ends
        if end > farthest:
            self._run_ends = [farthest, end]
        elif end > second:
            self._run_ends = [end, farthest]

    def continued(self, end: int, layout: Layout) -> int:
        """A read that followed on from the reader's last one reached END: in the reader's first row (its
        shape unknown yet), the end of the row's next tile it reached into; 0 otherwise. The kernel asks
        for that tile in 128 KiB parts, one after the other, and piece by piece each was a round trip:
        behind 20 ms each way, a file's first window took 275 ms where GDAL's /vsicurl/ took 50, 145
        now (a loader reading a window per file paid it on every file). The tile past the row's end is
        the kernel's read-ahead, fetched whole for nothing: one tile per reader. Its next rows are
        fetched as wide as its first was (`jumped`)."""
        if self._run_start is None or self._columns:  # a row read to its end (jumped away from) tells its width
            return 0
        span = layout.span_at(end - 1)
        return span[1] if span is not None and span[0] > self._run_start else 0

    def jumped(self, tile_start: int, layout: Layout) -> list[tuple[int, int]]:
        """The reader jumped to the start of the tile at TILE_START: the (start, end) byte
        ranges worth fetching now, the jumped-to row's first."""
        if self._run_start is not None:
            columns = _tiles_until(self._run_start, self._run_ends[0], layout)
            self._columns.append(max(1, columns))
            # The kernel's read-ahead past the row: fetched with the row, not a round trip after it
            self._past_row = min(MAX_PAST_ROW, max(0, self._run_ends[1] - _row_end(self._run_start, columns, layout)))
            distance = tile_start - self._run_start
            if distance == self._stride:
                self._rows += 1
            else:
                if distance in self._jumps and 0 < abs(distance) <= MAX_STRIDE:
                    self._stride, self._rows = distance, 2  # the stride shows itself: a second row
                    self._window_rows.clear()  # the windows before seemed to have one row each
                else:
                    self._window_rows.append(self._rows)
                    self._rows = 1
                self._jumps.append(distance)
        first_row = self._rows == 1
        self._run_start, self._run_ends = tile_start, [tile_start, tile_start]
        columns, past_row = _most(self._columns), self._past_row
        ranges = [(tile_start, _row_end(tile_start, columns, layout) + past_row)]
        if first_row and self._stride is not None:
            budget = MAX_GUESS_BYTES - (ranges[0][1] - ranges[0][0])
            for row in range(1, min(_most(self._window_rows), MAX_ROWS)):
                start = tile_start + row * self._stride
                span = layout.span_at(start)
                if span is None or span[0] != start:
                    break
                below = (start, _row_end(start, columns, layout) + past_row)
                budget -= below[1] - below[0]
                if budget < 0:
                    break
                ranges.append(below)
        return ranges


def _most(shapes: deque[int]) -> int:
    """What most of SHAPES reach: their median, the lower one of an even count (1 of none)."""
    return sorted(shapes)[(len(shapes) - 1) // 2] if shapes else 1


def _row_end(start: int, columns: int, layout: Layout) -> int:
    """Where up to COLUMNS tiles lying side by side from the tile at START end."""
    end = start + 1
    for span in _side_by_side(start, layout, min(columns, MAX_COLUMNS)):
        end = span[1]
    return end


def _tiles_until(start: int, end: int, layout: Layout) -> int:
    """How many tiles lying side by side from the tile at START end by END."""
    return sum(1 for _ in itertools.takewhile(lambda span: span[1] <= end, _side_by_side(start, layout, MAX_COLUMNS)))


def _side_by_side(start: int, layout: Layout, most: int) -> Iterator[tuple[int, int]]:
    """Up to MOST tiles from the one at START, each beginning where the one before ends (or
    GAP bytes after: GDAL's COG driver puts a few bytes of size and check around each tile)."""
    span = layout.span_from(start)
    for _ in range(most):
        if span is None or not start <= span[0] <= start + GAP:
            return
        yield span
        start = span[1]
        span = layout.span_from(start)
