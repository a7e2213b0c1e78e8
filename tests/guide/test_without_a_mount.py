"""The guide's recipes without a mount (`eotdl://` and `eotdlfs.connect`), run as written against a
real server, each with a cache folder of its own (the user cache dir, moved by XDG_CACHE_HOME)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pystac
import pytest

import eotdlfs
from tests.fs.datasets import ingest, tree_digest, write_metadata
from tests.guide.recipes import NAME, recipe, run_python
from tests.guide.test_recipes import _labels, _sha1


def _no_mount(places, tmp_path: Path) -> dict[str, str]:
    return places(tmp_path / "no-mount", tmp_path / "no-cache")


def _user_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"XDG_CACHE_HOME": str(tmp_path / "user-cache"), **extra}


def test_rasterio_window_of_a_cog_through_eotdl(guide_server, s2_tiles, places, tmp_path: Path) -> None:
    before = guide_server.stats()["bytes_sent"]
    got = run_python(recipe("eotdl-rasterio", _no_mount(places, tmp_path)),
                     "import hashlib; print(hashlib.sha1(window.tobytes()).hexdigest())", tmp_path, _user_env(tmp_path))
    fetched = guide_server.stats()["bytes_sent"] - before
    assert got == _sha1(s2_tiles.scene[256:512, 512:768].tobytes())
    size = (s2_tiles.v1 / "scene.tif").stat().st_size
    assert fetched < size / 2, (fetched, size)  # the window's tiles, not the file


def test_pandas_read_csv_through_eotdl(guide_server, s2_tiles, places, tmp_path: Path) -> None:
    got = run_python(recipe("eotdl-pandas", _no_mount(places, tmp_path)),
                     "print(labels.to_json(orient='records'))", tmp_path, _user_env(tmp_path))
    assert json.loads(got) == _labels(s2_tiles.v1)


def test_map_style_dataset_over_eotdl_read_by_four_workers(guide_server, s2_tiles, places, tmp_path: Path) -> None:
    got = run_python(recipe("eotdl-dataset", _no_mount(places, tmp_path)),
                     "import hashlib, json; print(json.dumps([[hashlib.sha1(b).hexdigest(), label] "
                     "for b, label in samples]))", tmp_path, _user_env(tmp_path))
    expected = [[_sha1((s2_tiles.v1 / row["path"]).read_bytes()), row["label"]] for row in _labels(s2_tiles.v1)]
    assert json.loads(got) == expected


def test_python_api(guide_server, s2_tiles, places, tmp_path: Path) -> None:
    new_chip = tmp_path / "data" / "new-chips" / "201.bin"
    new_chip.parent.mkdir()
    new_chip.write_bytes(b"api-chip" * 9_000)  # not the bytes the staging recipe's test adds: a version of its own
    out = run_python(recipe("python-api", _no_mount(places, tmp_path)), "pass", tmp_path,
                     _user_env(tmp_path, EOTDL_TOKEN=guide_server.token("alice")))
    published = int(out.removeprefix("published version "))
    with eotdlfs.connect(api_url=guide_server.url, cache_dir=tmp_path / "check-cache") as repo:
        assert repo.versions(NAME)[-1].number == published
        before = repo.get(NAME, published - 1, tmp_path / "check").folder
        after = repo.get(NAME, published, tmp_path / "check").folder
    assert tree_digest(after) == tree_digest(before) | {"chips/201.bin": _sha1(new_chip.read_bytes())}


STAC_NAME = "s2-stac"  # the pystac recipe's dataset


@pytest.fixture(scope="module")
def s2_stac(guide_server, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset holding a self-contained STAC catalog (two items, each with an `image` asset)
    beside its metadata.yml, ingested as a plain dataset."""
    folder = tmp_path_factory.mktemp("s2-stac")
    write_metadata(folder, STAC_NAME)
    catalog = pystac.Catalog(STAC_NAME, "chips as STAC items")
    for n in (1, 2):
        item = pystac.Item(f"chip-{n}", None, None, datetime(2024, 1, n, tzinfo=timezone.utc), {})
        (folder / item.id).mkdir()  # where normalize_hrefs puts the item's own document
        (folder / item.id / "image.bin").write_bytes(bytes([n]) * 1000)
        item.add_asset("image", pystac.Asset(str(folder / item.id / "image.bin")))
        catalog.add_item(item)
    catalog.normalize_hrefs(str(folder))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    ingest(guide_server, folder)
    return folder


def test_pystac_reads_a_catalog_through_eotdl(guide_server, s2_stac, places, tmp_path: Path) -> None:
    got = run_python(recipe("eotdl-pystac", _no_mount(places, tmp_path)),
                     "import json; print(json.dumps([[item.id, item.assets['image'].get_absolute_href()] "
                     "for item in items]))", tmp_path, _user_env(tmp_path))
    version = f"eotdl://datasets/{STAC_NAME}/latest"
    assert json.loads(got) == [[f"chip-{n}", f"{version}/chip-{n}/image.bin"] for n in (1, 2)], got


CUBE_NAME = "s2-cube"  # the xarray recipe's dataset


@pytest.fixture(scope="module")
def s2_cube(guide_server, tmp_path_factory: pytest.TempPathFactory):
    """A dataset holding a Zarr cube (NDVI, 3 times of 64x64, chunked by time); the cube."""
    xr = pytest.importorskip("xarray")
    pytest.importorskip("zarr")
    folder = tmp_path_factory.mktemp("s2-cube")
    write_metadata(folder, CUBE_NAME)
    ndvi = np.random.default_rng(3).uniform(-1, 1, size=(3, 64, 64)).astype("float32")
    cube = xr.Dataset({"ndvi": (("time", "y", "x"), ndvi)}, coords={"time": [1, 2, 3]})
    cube.to_zarr(folder / "cube.zarr", zarr_format=2, consolidated=True, encoding={"ndvi": {"chunks": (1, 64, 64)}})
    ingest(guide_server, folder)
    return cube


def test_xarray_reads_a_zarr_cube_through_eotdl(guide_server, s2_cube, places, tmp_path: Path) -> None:
    got = run_python(recipe("eotdl-zarr", _no_mount(places, tmp_path)),
                     "print(repr(float(cube['ndvi'].isel(time=0).mean())))", tmp_path, _user_env(tmp_path))
    assert float(got) == float(s2_cube["ndvi"].isel(time=0).mean())
