"""A window read of a tiled GeoTIFF in the mount fetches a small part of the file."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import from_origin  # noqa: E402
from rasterio.windows import Window  # noqa: E402

from eotdlfs.fs.pieces import PIECE_SIZE  # noqa: E402
from tests.fs.datasets import ingest, write_metadata  # noqa: E402

SIDE, TILE = 4096, 256
BUFFER = 8192  # GDAL's reads of a local file go through a buffer of this size


def write_tiled_geotiff(path, seed=5, tile=TILE):
    data = np.random.default_rng(seed).integers(0, 65535, size=(SIDE, SIDE), dtype=np.uint16)
    with rasterio.open(path, "w", driver="GTiff", width=SIDE, height=SIDE, count=1, dtype="uint16",
                       tiled=True, blockxsize=tile, blockysize=tile, crs="EPSG:4326",
                       transform=from_origin(0, 0, 0.001, 0.001)) as dst:
        dst.write(data, 1)
    return data


def test_window_read_fetches_far_less_than_the_file(repo_server, mount_factory, unique_name, tmp_path):
    name = unique_name("tif")
    folder = tmp_path / "src"
    write_metadata(folder, name)
    data = write_tiled_geotiff(folder / "scene.tif")
    size = (folder / "scene.tif").stat().st_size
    ingest(repo_server, folder)
    mnt = mount_factory(repo_server)
    before = repo_server.stats()["bytes_sent"]
    with rasterio.open(mnt.path / "datasets" / name / "v1" / "scene.tif") as src:
        window = src.read(1, window=Window(1024, 2048, TILE, TILE))
    fetched = repo_server.stats()["bytes_sent"] - before
    assert (window == data[2048:2048 + TILE, 1024:1024 + TILE]).all()
    assert fetched < size / 10, (fetched, size)
    assert mnt.status()["fetch"]["bytes_fetched"] >= fetched


def test_random_windows_fetch_about_the_tiles_they_touch(repo_server, mount_factory, unique_name, tmp_path):
    """As GDAL's /vsicurl/ would: each window's tiles (512 KiB each), not whole 1 MiB blocks
    around them plus read-ahead (which fetched 2.8x GDAL's bytes)."""
    name, tile = unique_name("cog"), 512
    folder = tmp_path / "src"
    write_metadata(folder, name)
    data = write_tiled_geotiff(folder / "scene.tif", tile=tile)
    ingest(repo_server, folder)
    mnt = mount_factory(repo_server)
    path = mnt.path / "datasets" / name / "v1" / "scene.tif"
    rng = np.random.default_rng(3)
    tiles_touched = 0
    before = repo_server.stats()["bytes_sent"]
    with rasterio.open(path) as src:
        for _ in range(6):
            col, row = (int(v) for v in rng.integers(tile, SIDE - 2 * tile, size=2))
            window = src.read(1, window=Window(col, row, tile, tile))
            assert (window == data[row:row + tile, col:col + tile]).all()
            tiles_touched += 4  # an unaligned window of a tile's size covers 2 x 2 tiles
    fetched = repo_server.stats()["bytes_sent"] - before
    tile_bytes = tile * tile * 2
    assert fetched <= 1.3 * tiles_touched * tile_bytes + (1 << 20), (fetched, tiles_touched * tile_bytes)


def _mounted_tiles(repo_server, mount_factory, name: str, tmp_path, tile: int = 512):
    """A tiled GeoTIFF ingested as dataset NAME and mounted: the mount, the file's path in it,
    its bytes, and its tiles' (offset, length) by (column, row)."""
    folder = tmp_path / "src"
    write_metadata(folder, name)
    write_tiled_geotiff(folder / "scene.tif", tile=tile)
    source = folder / "scene.tif"
    with rasterio.open(source) as src:
        spans = {(col, row): (int(src.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=1)),
                              int(src.get_tag_item(f"BLOCK_SIZE_{col}_{row}", "TIFF", bidx=1)))
                 for col in range(SIDE // tile) for row in range(SIDE // tile)}
    ingest(repo_server, folder)
    mnt = mount_factory(repo_server)
    return mnt, mnt.path / "datasets" / name / "v1" / "scene.tif", source.read_bytes(), spans


def test_a_seeking_read_of_a_tile_fetches_that_tile_in_one_request(repo_server, mount_factory, unique_name,
                                                                     tmp_path):
    """The kernel splits GDAL's read of a 512 KiB tile into 128 KiB requests, each a range
    request of its own when fetched piecewise; the mount reads the tile layout from the TIFF's
    header and fetches the tile in one, with no more than its edge pieces."""
    mnt, path, expected, spans = _mounted_tiles(repo_server, mount_factory, unique_name("tile"), tmp_path)
    first, measured = spans[1, 1], spans[3, 5]
    fd = os.open(path, os.O_RDONLY)
    try:
        assert os.pread(fd, 16 << 10, 0) == expected[:16 << 10]  # the header, as GDAL reads it at open
        offset, length = first  # a first seek: the mount reads the layout
        assert os.pread(fd, length, offset) == expected[offset:offset + length]
        before, fetch_before = repo_server.stats()["downloads"], mnt.status()["fetch"]
        offset, length = measured
        assert os.pread(fd, length, offset) == expected[offset:offset + length]
        requests = repo_server.stats()["downloads"] - before
        fetched = mnt.status()["fetch"]["bytes_fetched"] - fetch_before["bytes_fetched"]
    finally:
        os.close(fd)
    # Piecewise, each 128 KiB request of the kernel was one of the server's: 4 for the tile, 7
    # in all. Beyond the tile, the kernel's own read-ahead asks for up to 256 KiB more, piecewise;
    # its requests come on several threads at once, so one of them may go apart (1 run in ~20).
    assert requests <= 4, requests
    assert length <= fetched <= length + 2 * PIECE_SIZE + (256 << 10), (fetched, length)


def _read_row(fd: int, row: list[tuple[int, int]], expected: bytes) -> None:
    """ROW's tiles as GDAL reads them, through its 8 KiB buffer: a tile's first aligned 8 KiB, then the rest."""
    for offset, length in row:
        at = offset - offset % BUFFER
        assert os.pread(fd, BUFFER, at) == expected[at:at + BUFFER]
        assert os.pread(fd, offset + length - at - BUFFER, at + BUFFER) == expected[at + BUFFER:offset + length]


def test_a_files_first_window_costs_a_request_per_tile_of_its_first_row_then_one_per_row(
        repo_server, mount_factory, unique_name, tmp_path):
    """With no row of the reader seen, its first row's second tile came in a request per 128 KiB part
    the kernel asked for, one after the other, and the second row too: behind 20 ms each way a file's
    first window took 275 ms where /vsicurl/ took 50 (a loader reading a window per file paid it on
    every file). The first row's next tile is fetched whole, the second row as wide as the first."""
    mnt, path, expected, spans = _mounted_tiles(repo_server, mount_factory, unique_name("first"), tmp_path)
    window = [[spans[col, row] for col in (2, 3)] for row in (2, 3)]
    fd = os.open(path, os.O_RDONLY)
    try:
        assert os.pread(fd, 16 << 10, 0) == expected[:16 << 10]  # the header, as GDAL reads it at open
        before = repo_server.stats()["downloads"]
        for row in window:
            _read_row(fd, row, expected)
        requests = repo_server.stats()["downloads"] - before
    finally:
        os.close(fd)
    # the first tile, the second, the kernel's read-ahead past the row (a third tile), and the second
    # row in one: 4 (12 before); one more may come of the read-ahead's requests on several threads
    assert requests <= 5, requests


def test_a_windows_tiles_come_in_one_request_per_row_once_its_shape_is_known(repo_server, mount_factory, unique_name,
                                                                            tmp_path):
    """GDAL reads a window row by row, a tile at a time; the kernel asks for a row's second tile
    as read-ahead of its first, in 128 KiB requests, a round trip each. Once the reader's last
    windows showed their shape (tiles per row, rows, the stride between rows), a jump to a
    window's first tile fetches its rows' tiles at once, a request per row, side by side."""
    mnt, path, expected, spans = _mounted_tiles(repo_server, mount_factory, unique_name("win"), tmp_path)
    # 2 x 2 tiles each, apart from each other (and from the header's blocks)
    windows = [[[spans[col + c, row + r] for c in (0, 1)] for r in (0, 1)] for col, row in ((4, 1), (1, 5), (5, 3))]

    def read_row(fd: int, row: list[tuple[int, int]]) -> None:
        _read_row(fd, row, expected)

    fd = os.open(path, os.O_RDONLY)
    try:
        assert os.pread(fd, 16 << 10, 0) == expected[:16 << 10]  # the header, as GDAL reads it at open
        for window in windows[:-1]:
            for row in window:
                read_row(fd, row)
        before, fetch_before = repo_server.stats()["downloads"], mnt.status()["fetch"]["bytes_fetched"]
        read_row(fd, windows[-1][0])
        deadline = time.monotonic() + 10
        while repo_server.stats()["downloads"] - before < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        second_row_asked = repo_server.stats()["downloads"] - before == 2
        read_row(fd, windows[-1][1])
        requests = repo_server.stats()["downloads"] - before
        fetched = mnt.status()["fetch"]["bytes_fetched"] - fetch_before
    finally:
        os.close(fd)
    # Piecewise, each row's second tile came in a request per 128 KiB: 14 in all. The kernel's
    # read-ahead past a row's end now comes in the row's request: the same bytes as before.
    assert second_row_asked  # the second row's request went with the first's, before it was read
    assert requests <= 3, requests
    tiles = sum(length for row in windows[-1] for _, length in row)
    assert tiles <= fetched <= tiles + 2 * (2 * PIECE_SIZE + (256 << 10)), (fetched, tiles)
