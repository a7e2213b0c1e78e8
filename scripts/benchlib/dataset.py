"""The benchmark's dataset on disk: one big file, many small files and a tiled GeoTIFF."""

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


def _write_small(folder: Path, count: int, size: int, rng: random.Random) -> None:
    for i in range(count):
        sub = folder / f"d{i // SMALL_PER_FOLDER:03d}"
        if i % SMALL_PER_FOLDER == 0:
            sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:05d}.bin").write_bytes(rng.randbytes(size))


def _write_geotiff(path: Path, size: int, seed: int) -> tuple[int | None, str]:
    """A single-band uint16 GeoTIFF in 256x256 tiles, uncompressed, about SIZE bytes (none for 0)."""
    if size <= 0:
        return None, "no GeoTIFF asked for"
    try:
        import numpy as np
        import rasterio
        from rasterio.transform import from_origin
    except ImportError as exc:
        return None, f"no GeoTIFF: {exc.name} is not installed (pip install -e '.[test]')"
    side = max(256, round(math.sqrt(size / 2) / 256) * 256)
    profile = {
        "driver": "GTiff", "width": side, "height": side, "count": 1, "dtype": "uint16",
        "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": None,
        "crs": "EPSG:32630", "transform": from_origin(400000, 4500000, 10, 10),
    }
    rng = np.random.default_rng(seed)
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, side, 1024):  # strips of 1024 rows keep memory bounded
            rows = min(1024, side - row)
            data = rng.integers(0, 10000, size=(rows, side), dtype=np.uint16)
            dst.write(data, 1, window=((row, row + rows), (0, side)))
    return path.stat().st_size, f"GeoTIFF {side}x{side} uint16, 256x256 tiles, uncompressed"
