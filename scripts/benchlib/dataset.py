"""The benchmark's dataset on disk: one big file, many small files and a Cloud-Optimized GeoTIFF."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

from eotdlfs.metadata import METADATA_FILE

BIG_FILE = "big.bin"
SMALL_DIR = "small"
GEOTIFF_FILE = "scene.tif"
SMALL_PER_FOLDER = 100
_CHUNK = 16 << 20
COG_TILE = 512


@dataclass(frozen=True)
class DatasetSpec:
    """How big each part of the generated dataset is."""

    big_bytes: int
    small_count: int
    small_bytes: int
    geotiff_bytes: int


@dataclass(frozen=True)
class Dataset:
    """A generated dataset folder, ready to ingest or serve."""

    root: Path
    name: str
    big_bytes: int
    small_count: int
    geotiff_bytes: int | None  # None: none asked for, or rasterio/numpy missing (see note)
    note: str

    @property
    def big(self) -> Path:
        return self.root / BIG_FILE

    @property
    def small(self) -> Path:
        return self.root / SMALL_DIR

    @property
    def geotiff(self) -> Path | None:
        return self.root / GEOTIFF_FILE if self.geotiff_bytes else None


def generate(root: Path, name: str, spec: DatasetSpec, seed: int = 7) -> Dataset:
    """Write the dataset under ROOT (metadata.yml included) and describe it."""
    root.mkdir(parents=True, exist_ok=True)
    write_metadata(root, name)
    rng = random.Random(seed)
    _write_big(root / BIG_FILE, spec.big_bytes, rng)
    _write_small(root / SMALL_DIR, spec.small_count, spec.small_bytes, rng)
    geotiff_bytes, note = _write_geotiff(root / GEOTIFF_FILE, spec.geotiff_bytes, seed)
    return Dataset(root, name, spec.big_bytes, spec.small_count, geotiff_bytes, note)


def write_metadata(folder: Path, name: str) -> None:
    """The metadata.yml that makes FOLDER a dataset called NAME."""
    (folder / METADATA_FILE).write_text(
        f"name: {name}\nauthors:\n  - eotdlfs bench\nlicense: MIT\nsource: https://example.org/{name}\n"
    )


def _write_big(path: Path, size: int, rng: random.Random) -> None:
    # Rotations of one random chunk: incompressible, and as fast to write as memcpy.
    base = rng.randbytes(_CHUNK)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            k = rng.randrange(_CHUNK)
            chunk = base[k:] + base[:k]
            f.write(chunk[: min(left, _CHUNK)])
            left -= _CHUNK


def small_file(i: int) -> str:
    """The path of the I-th small file, relative to the small files' folder."""
    return f"d{i // SMALL_PER_FOLDER:03d}/f{i:05d}.bin"


def _write_small(folder: Path, count: int, size: int, rng: random.Random) -> None:
    for i in range(count):
        path = folder / small_file(i)
        if i % SMALL_PER_FOLDER == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))


def _write_geotiff(path: Path, size: int, seed: int) -> tuple[int | None, str]:
    """A Cloud-Optimized GeoTIFF, single-band uint16 in 512x512 tiles with overviews,
    uncompressed, its full-resolution band about SIZE bytes (none for 0)."""
    if size <= 0:
        return None, "no GeoTIFF asked for"
    try:
        import numpy as np
        import rasterio
        from rasterio.shutil import copy as raster_copy
        from rasterio.transform import from_origin
    except ImportError as exc:
        return None, f"no GeoTIFF: {exc.name} is not installed (pip install -e '.[test]')"
    side = max(COG_TILE, round(math.sqrt(size / 2) / COG_TILE) * COG_TILE)
    profile = {
        "driver": "GTiff", "width": side, "height": side, "count": 1, "dtype": "uint16",
        "tiled": True, "blockxsize": COG_TILE, "blockysize": COG_TILE, "compress": None,
        "crs": "EPSG:32630", "transform": from_origin(400000, 4500000, 10, 10),
    }
    rng = np.random.default_rng(seed)
    plain = path.with_suffix(".plain.tif")
    try:
        with rasterio.open(plain, "w", **profile) as dst:
            for row in range(0, side, 1024):  # strips of 1024 rows keep memory bounded
                rows = min(1024, side - row)
                data = rng.integers(0, 10000, size=(rows, side), dtype=np.uint16)
                dst.write(data, 1, window=((row, row + rows), (0, side)))
        # The COG driver lays it out as GDAL expects to read it remotely: IFDs first, overviews
        # before the full-resolution tiles.
        raster_copy(plain, path, driver="COG", BLOCKSIZE=COG_TILE, COMPRESS="NONE", RESAMPLING="NEAREST",
                    BIGTIFF="IF_SAFER")
    finally:
        plain.unlink(missing_ok=True)
    return path.stat().st_size, f"COG {side}x{side} uint16, {COG_TILE}x{COG_TILE} tiles, overviews, uncompressed"
