"""The window shape a TIFF reader's last windows show (`TileWindows`), on a made-up tile layout."""

from __future__ import annotations

from eotdlfs.fs.tiles import Layout
from eotdlfs.fs.tilewindows import TileWindows

TILE, COLUMNS, REQUEST = 512 << 10, 28, 128 << 10
STRIDE = COLUMNS * TILE
LAYOUT = Layout([(i * TILE, (i + 1) * TILE) for i in range(COLUMNS * COLUMNS)])


def read_row(windows: TileWindows, row: int, col: int, tiles: int = 2) -> list[tuple[int, int]]:
    """A jump to tile (ROW, COL), then the kernel's 128 KiB requests over TILES tiles and one past
    them (its read-ahead); what the jump asked to fetch."""
    start = (row * COLUMNS + col) * TILE
    fetch = windows.jumped(start, LAYOUT)
    for offset in range(start, start + tiles * TILE + REQUEST, REQUEST):
        windows.read(offset, offset + REQUEST)
    return fetch


def test_a_window_whose_rows_the_page_cache_held_does_not_shrink_the_next_ones():
    """A random window overlapping an earlier one finds a row in the kernel's page cache, and
    the mount sees a window of one row. Fetching only what all of the last three windows had
    made the next three fetch a row at a time: a round trip per row behind latency."""
    windows = TileWindows()
    for row, col in ((3, 4), (10, 20), (17, 8)):  # 2 x 2 tiles each
        read_row(windows, row, col)
        read_row(windows, row + 1, col)
    read_row(windows, 18, 8)  # overlaps the last one: its first row came from the page cache
    fetch = read_row(windows, 5, 12)
    assert [start for start, _ in fetch] == [(5 * COLUMNS + 12) * TILE, (6 * COLUMNS + 12) * TILE]
    assert all(end - start >= 2 * TILE for start, end in fetch)  # both tiles of each row


def test_windows_mostly_of_one_tile_are_fetched_one_tile():
    """Most, not the most: a reader whose last windows were mostly one tile is not fetched the
    rows and tiles of the one larger window among them."""
    windows = TileWindows()
    for row, col, rows, tiles in ((3, 4, 2, 2), (10, 20, 2, 2), (17, 8, 1, 1), (6, 2, 2, 2), (12, 5, 1, 1),
                                  (22, 9, 1, 1)):
        for r in range(rows):
            read_row(windows, row + r, col, tiles)
    fetch = read_row(windows, 20, 12)
    assert len(fetch) == 1 and fetch[0][1] - fetch[0][0] < 2 * TILE


def test_a_readers_first_row_fetches_its_next_tile_whole_and_its_second_row_is_fetched_as_wide():
    """The kernel asks for a row's next tile in 128 KiB parts, one after the other: with no row seen
    yet each part was a round trip of its own, and the second row was fetched a tile wide too (behind
    20 ms, a file's first window took 275 ms where /vsicurl/ took 50). In the reader's first row a
    read following on into the next tile fetches that tile whole; its second row is fetched as many
    tiles wide as the first was read; later rows' next tiles come with their jump."""
    windows = TileWindows()
    start = (3 * COLUMNS + 4) * TILE
    assert windows.jumped(start, LAYOUT) == [(start, start + TILE)]
    assert windows.continued(start + REQUEST, LAYOUT) == 0  # still the jumped-to tile
    assert windows.continued(start + TILE + REQUEST, LAYOUT) == start + 2 * TILE
    for offset in range(start, start + 2 * TILE + REQUEST, REQUEST):
        windows.read(offset, offset + REQUEST)
    below = start + STRIDE
    fetch = windows.jumped(below, LAYOUT)
    assert fetch[0][0] == below and fetch[0][1] >= below + 2 * TILE
    assert windows.continued(below + TILE + REQUEST, LAYOUT) == 0
