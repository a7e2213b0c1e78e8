"""Generate the sample dataset shipped in eotdlfs/server/sample/ (run once; the files are committed).

Version 1: metadata.yml, labels.csv and three small tiled GeoTIFFs; version 2 (an overlay on
version 1): a fourth scene and a corrected labels.csv. Needs numpy and rasterio.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

SAMPLE = Path(__file__).resolve().parent.parent / "eotdlfs" / "server" / "sample"
METADATA = """name: sample-scenes
authors:
  - eotdlfs
license: CC-BY-4.0
source: https://github.com/earthpulse/eotdl
"""


def scene(path: Path, seed: int, side: int = 512) -> None:
    """A 3-band uint8 scene, tiled 256x256, deflate: smooth fields plus a little quantized noise, so it stays small."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side] / side
    bands = [(127 + 100 * np.sin(6.28 * (x * (b + 1) + y * seed)) + rng.normal(0, 1.5, (side, side)))
             .clip(0, 255).astype("uint8") & 0xF8 for b in range(3)]
    with rasterio.open(path, "w", driver="GTiff", width=side, height=side, count=3, dtype="uint8",
                       tiled=True, blockxsize=256, blockysize=256, compress="deflate",
                       crs="EPSG:32630", transform=from_origin(440000 + 5120 * seed, 4470000, 10, 10)) as dst:
        dst.write(np.stack(bands))


def main() -> None:
    v1, v2 = SAMPLE / "v1", SAMPLE / "v2"
    for folder in (v1, v2):
        folder.mkdir(parents=True, exist_ok=True)
    (v1 / "metadata.yml").write_text(METADATA)
    for seed in (1, 2, 3):
        scene(v1 / f"scene_{seed}.tif", seed)
    (v1 / "labels.csv").write_text("scene,label\nscene_1.tif,crops\nscene_2.tif,forest\nscene_3.tif,water\n")
    scene(v2 / "scene_4.tif", 4)
    (v2 / "labels.csv").write_text(
        "scene,label\nscene_1.tif,crops\nscene_2.tif,forest\nscene_3.tif,urban\nscene_4.tif,water\n")
    print(f"wrote {SAMPLE}", file=sys.stderr)


if __name__ == "__main__":
    main()
