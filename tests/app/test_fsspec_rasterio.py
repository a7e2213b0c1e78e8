"""rasterio through `eotdl://` (`rasterio.open(fsspec.open(url))`, as docs/guide.md does it) against a real server."""

from __future__ import annotations

import contextvars
import sqlite3
import threading
import time

import fsspec
import pytest

rasterio = pytest.importorskip("rasterio")
from rasterio.windows import Window  # noqa: E402

from eotdlfs.app.fsspec_eotdl import EotdlFileSystem  # noqa: E402
from tests.fs.datasets import ingest, ingest_one_file, write_metadata  # noqa: E402
from tests.fs.test_mount_geotiff import TILE, write_tiled_geotiff  # noqa: E402
from tests.reliability.faultproxy import FaultProxy  # noqa: E402


def test_a_windows_tile_rows_are_fetched_side_by_side(repo_server, unique_name, tmp_path):
    """GDAL asks for a window's tile rows at once (a multi-range read), as /vsicurl/ fetches them;
    read one after the other, each cold row cost a round trip of its own. Seen at the server:
    with every download answer held back, both rows are asked for, each as about its range."""
    name = unique_name("cog")
    folder = tmp_path / "src"
    write_metadata(folder, name)
    data = write_tiled_geotiff(folder / "scene.tif")
    ingest(repo_server, folder)
    got: list = []
    first_col, first_row = (1024 + TILE // 2) // TILE, (2048 + TILE // 2) // TILE
    with FaultProxy(repo_server.url) as proxy:
        url = f"eotdl://datasets/{name}/v1/scene.tif"
        opened = fsspec.open(url, api_url=proxy.url, token=repo_server.token("alice"), cache_dir=str(tmp_path / "cache"),
                             skip_instance_cache=True)
        with rasterio.open(opened) as src:  # the header is read before answers are held back
            rows = [_tile_span(src, first_col, row, 2) for row in (first_row, first_row + 1)]
            proxy.inject("slow", r"/download/", delay=30)
            before = len(proxy.headers_seen)
            window = Window(1024 + TILE // 2, 2048 + TILE // 2, TILE, TILE)  # 2 x 2 tiles
            context = contextvars.copy_context()  # rasterio finds its opener in a context variable
            reader = threading.Thread(target=context.run, args=(lambda: got.append(src.read(1, window=window)),))
            reader.start()
            deadline = time.monotonic() + 10
            while len(_ranges(proxy, before)) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            held = _ranges(proxy, before)
            proxy.clear()
            reader.join(30)
    # Both rows asked for while no answer came, each as one range of about its bytes (64 KiB pieces).
    assert len(held) == 2 and all(lo <= start and end <= hi + (64 << 10)
                                  for (start, end), (lo, hi) in zip(sorted(rows), sorted(held))), (rows, held)
    rows_px, cols_px = slice(2048 + TILE // 2, 2048 + 3 * TILE // 2), slice(1024 + TILE // 2, 1024 + 3 * TILE // 2)
    assert (got[0] == data[rows_px, cols_px]).all()


def test_a_warm_windows_pieces_are_looked_up_together_not_one_by_one(repo_server, unique_name, tmp_path,
                                                                     monkeypatch):
    """A window read again from the block cache (a second process on the same cache dir) asks
    its index once per tile row, not once per 64 KiB piece: a lookup and an access-time update per
    piece were most of a warm window's time. Counted as the SQL statements run on the index."""
    name = unique_name("cogwarm")
    folder = tmp_path / "src"
    write_metadata(folder, name)
    data = write_tiled_geotiff(folder / "scene.tif", tile=512)  # tiles of 512 KiB: 8 pieces each
    ingest(repo_server, folder)
    url = f"eotdl://datasets/{name}/v1/scene.tif"
    options = {"api_url": repo_server.url, "token": repo_server.token("alice"), "cache_dir": str(tmp_path / "cache"),
               "skip_instance_cache": True}
    window, pixels = Window(1024 + 256, 2048 + 256, 512, 512), data[2048 + 256:2048 + 768, 1024 + 256:1024 + 768]
    cold = fsspec.open(url, **options)
    with rasterio.open(cold) as src:  # 2 x 2 tiles: 32 pieces
        assert (src.read(1, window=window) == pixels).all()
    cold.fs.connection.close()  # its pieces stored, as at a process's end
    statements: list[str] = []
    real_connect = sqlite3.connect

    def connect(*args, **kwargs):  # every connection to the index, with its statements seen
        connection = real_connect(*args, **kwargs)
        connection.set_trace_callback(statements.append)
        return connection

    monkeypatch.setattr(sqlite3, "connect", connect)
    warm = fsspec.open(url, **options)
    with rasterio.open(warm) as src:
        before, seen = repo_server.stats()["bytes_sent"], len(statements)
        assert (src.read(1, window=window) == pixels).all()
        looked = [s for s in statements[seen:] if "Cache" in s]
        assert repo_server.stats()["bytes_sent"] == before
    warm.fs.connection.close()
    # A lookup of pieces per tile row, and a dozen reads asking whether the 1 MiB blocks around
    # are cached whole; it was 5 statements per piece (187 in all: lookup, BEGIN, read, update, COMMIT).
    assert len(looked) <= 20, "\n".join(looked)


def test_a_tiles_pieces_are_stored_as_one_file_not_through_the_index(repo_server, unique_name, tmp_path):
    """The pieces of a tile fetch are stored in one file (one write) rather than in the block
    cache's index, where every page is written twice (WAL, checkpoint): that write was most of a
    cold window reader's exit. Seen on disk: a file per tile row, an index far smaller than the
    bytes, and the window read again from them without a fetch."""
    name = unique_name("cogstore")
    folder = tmp_path / "src"
    write_metadata(folder, name)
    data = write_tiled_geotiff(folder / "scene.tif", tile=512)  # tiles of 512 KiB
    ingest(repo_server, folder)
    url, cache = f"eotdl://datasets/{name}/v1/scene.tif", tmp_path / "cache"
    options = {"api_url": repo_server.url, "token": repo_server.token("alice"), "cache_dir": str(cache),
               "skip_instance_cache": True}
    window, pixels = Window(1024 + 256, 2048 + 256, 512, 512), data[2048 + 256:2048 + 768, 1024 + 256:1024 + 768]
    cold = fsspec.open(url, **options)
    with rasterio.open(cold) as src:  # 2 rows of 2 tiles: 2 MiB of pieces
        assert (src.read(1, window=window) == pixels).all()
    cold.fs.connection.close()
    files = [p for p in (cache / "blocks").rglob("*.val")]
    index = sum(p.stat().st_size for p in (cache / "blocks").glob("cache.db*"))
    assert 2 <= len(files) <= 8 and sum(p.stat().st_size for p in files) >= 2 << 20, files
    assert index < 1 << 20, index  # it held the 2 MiB of pieces
    warm = fsspec.open(url, **options)
    with rasterio.open(warm) as src:
        before = repo_server.stats()["bytes_sent"]
        assert (src.read(1, window=window) == pixels).all()
        assert repo_server.stats()["bytes_sent"] == before
    warm.fs.connection.close()


def test_fs_open_is_still_fsspecs_open_once_rasterio_is_imported(repo_server, unique_name, tmp_path):
    """With rasterio imported `fs.open` is rasterio's multi-range opener too, and still takes
    whatever fsspec's `open` takes (text mode, a positional block size)."""
    name = unique_name("opener")
    data = ingest_one_file(repo_server, tmp_path / "src", name, "a.bin", 5000)
    fs = EotdlFileSystem(api_url=repo_server.url, token=repo_server.token("alice"), cache_dir=str(tmp_path / "cache"),
                         skip_instance_cache=True)
    path = f"datasets/{name}/v1/a.bin"
    with fs.open(path, "rb", 4096) as f:
        assert f.read() == data
    with fs.open(path, mode="rt", encoding="latin-1", newline="") as f:
        assert f.read() == data.decode("latin-1")
    assert fs.cat_file(path, start=10, end=20) == data[10:20]


def _tile_span(src, col: int, row: int, count: int) -> tuple[int, int]:
    """The bytes [start, end) of COUNT tiles from (COL, ROW) of band 1, one after the other in the file."""
    offsets = [int(src.get_tag_item(f"BLOCK_OFFSET_{col + i}_{row}", "TIFF", bidx=1)) for i in range(count)]
    last = int(src.get_tag_item(f"BLOCK_SIZE_{col + count - 1}_{row}", "TIFF", bidx=1))
    return offsets[0], offsets[-1] + last


def _ranges(proxy: FaultProxy, since: int) -> list[tuple[int, int]]:
    """The [start, end) byte ranges of the download requests the proxy has seen after the SINCE-th request."""
    ranges = []
    for _, path, headers in proxy.headers_seen[since:]:
        if "/download/" in path and headers.get("Range", "").startswith("bytes="):
            start, end = headers["Range"][6:].split("-")
            ranges.append((int(start), int(end) + 1))
    return ranges
