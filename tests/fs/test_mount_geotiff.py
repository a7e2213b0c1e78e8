"""A window read of a tiled GeoTIFF in the mount fetches a small part of the file."""

from __future__ import annotations

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import from_origin  # noqa: E402
from rasterio.windows import Window  # noqa: E402

from tests.fs.datasets import ingest, write_metadata  # noqa: E402

SIDE, TILE = 4096, 256


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
