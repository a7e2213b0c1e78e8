"""The guide's example repository: a server of its own holding `s2-tiles` v1 and v2.

- `guide_server` (package scope): `eotdlfs serve` on 127.0.0.1 (tests/conftest.py's), so the
  guide's fixed dataset name is free.
- `s2_tiles` (package scope): the source folders of v1 and v2, both ingested.
- `places(mountpoint, cache_dir)`: the guide's example paths and URL -> this test's.
"""

from __future__ import annotations

import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import _serve
from tests.fs.datasets import ingest, write_metadata
from tests.guide.recipes import NAME

rasterio = pytest.importorskip("rasterio")

SIDE = 2048


@dataclass
class Versions:
    v1: Path
    v2: Path
    scene: np.ndarray  # scene.tif's band 1, the same in both versions


def _write_cog(path: Path) -> np.ndarray:
    data = np.random.default_rng(7).integers(0, 10_000, size=(SIDE, SIDE), dtype=np.uint16)
    with rasterio.open(path, "w", driver="COG", width=SIDE, height=SIDE, count=1, dtype="uint16",
                       blocksize=256, crs="EPSG:4326",
                       transform=rasterio.transform.from_origin(0, 0, 0.001, 0.001)) as dst:
        dst.write(data, 1)
    return data


def _write_chips(folder: Path, numbers: range, seed: int) -> None:
    rng = random.Random(seed)
    (folder / "chips").mkdir(parents=True, exist_ok=True)
    for n in numbers:
        (folder / "chips" / f"{n:03d}.bin").write_bytes(rng.randbytes(rng.randrange(1, 300_000)))


def _write_labels(folder: Path) -> None:
    chips = sorted(p.name for p in (folder / "chips").iterdir())
    (folder / "labels.csv").write_text(
        "path,label\n" + "".join(f"chips/{chip},{'water' if i % 3 else 'forest'}\n" for i, chip in enumerate(chips)))


@pytest.fixture(scope="package")
def guide_server(new_server, tmp_path_factory: pytest.TempPathFactory):
    yield from _serve(new_server(tmp_path_factory.mktemp("guide-server") / "root"))


@pytest.fixture(scope="package")
def s2_tiles(guide_server, tmp_path_factory: pytest.TempPathFactory) -> Versions:
    """v1: scene.tif, chips 000-023, labels.csv; v2: chip 003 changed, 005 removed, 024 added."""
    base = tmp_path_factory.mktemp("s2-tiles")
    v1, v2 = base / "v1", base / "v2"
    write_metadata(v1, NAME)
    scene = _write_cog(v1 / "scene.tif")
    _write_chips(v1, range(24), seed=1)
    _write_labels(v1)
    ingest(guide_server, v1)
    # v2 published in a later second than v1, as versions usually are: rsync compares whole-second
    # mtimes, and labels.csv changes without changing size (docs/guide.md warns about the same second).
    time.sleep(1.0)
    shutil.copytree(v1, v2)
    _write_chips(v2, range(3, 4), seed=2)
    (v2 / "chips" / "005.bin").unlink()
    _write_chips(v2, range(24, 25), seed=3)
    _write_labels(v2)
    ingest(guide_server, v2)
    return Versions(v1, v2, scene)


@pytest.fixture
def places(tmp_path: Path, guide_server):
    """places(mountpoint, cache_dir) -> {guide's example text: this test's}, for `recipes.recipe`;
    the guide's /srv/data is tmp_path/data."""
    (tmp_path / "data").mkdir()

    def make(mountpoint: Path, cache_dir: Path) -> dict[str, str]:
        return {"http://127.0.0.1:8000/": guide_server.url, "/mnt/eotdl": str(mountpoint),
                "/srv/data": str(tmp_path / "data"), "/var/cache/eotdlfs": str(cache_dir)}

    return make
