"""A published STAC version is a self-contained catalog on a real mount and in an `eotdlfs get` folder."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pystac
import pytest

from eotdlfs.client.ingest import ingest_folder
from client.helpers import cli_env, client, run_cli, write_metadata
from tests.stac.catalogs import add_cog_asset, write_catalog

rasterio = pytest.importorskip("rasterio")


@pytest.fixture(autouse=True)
def _own_hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EOTDLFS_CACHE_DIR", str(tmp_path / "hash-cache"))


def published_stac(server, folder: Path, name: str) -> Path:
    """write_catalog's catalog (5 items, one with a COG under an absolute href), with metadata.yml, as NAME v1."""
    write_catalog(folder, items=5, name=name)
    write_metadata(folder, name)
    add_cog_asset(folder, href="{folder}/scene.tif")
    ingest_folder(client(server), "datasets", folder)
    return folder


def assert_self_contained(root: Path, source: Path) -> None:
    """pystac walks ROOT/catalog.json; every asset href resolves to a file under ROOT equal to SOURCE's."""
    catalog = pystac.Catalog.from_file(str(root / "catalog.json"))
    items = list(catalog.get_items(recursive=True))
    assert sorted(item.id for item in items) == [f"item-{i:05d}" for i in range(5)]
    assert {item.collection_id for item in items} == {"scenes"}
    for item in items:
        for asset in item.assets.values():
            href = Path(asset.get_absolute_href())
            assert href.resolve().is_relative_to(root.resolve()), href
            assert href.read_bytes() == (source / href.relative_to(root)).read_bytes()


def test_pystac_walks_the_mount_and_rasterio_opens_an_asset_through_it(repo_server, unique_name, tmp_path,
                                                                        mount_factory):
    name = unique_name("stac-mnt")
    source = published_stac(repo_server, tmp_path / "src", name)
    mnt = mount_factory(repo_server)
    assert_self_contained(mnt.path / "datasets" / name / "latest", source)
    item = pystac.Item.from_file(str(mnt.path / "datasets" / name / "v1" / "scenes" / "items" / "item-00000"
                                     / "item-00000.json"))
    with rasterio.open(item.assets["cog"].get_absolute_href()) as mounted, \
            rasterio.open(source / "scenes" / "items" / "item-00000" / "scene.tif") as local:
        assert mounted.profile == local.profile
        window = rasterio.windows.Window(256, 256, 128, 128)
        assert (mounted.read(1, window=window) == local.read(1, window=window)).all()


def test_get_writes_a_self_contained_catalog(repo_server, unique_name, tmp_path):
    name = unique_name("stac-get")
    source = published_stac(repo_server, tmp_path / "src", name)
    result = run_cli(cli_env(tmp_path, repo_server.url, repo_server.token("alice")), "get", name,
                     "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    got = tmp_path / "out" / name / "v1"
    assert_self_contained(got, source)
    assert sorted(os.listdir(got)) == [".stac-index.json", "catalog.json", "metadata.yml", "scenes"]


def test_opening_a_catalog_fetches_its_documents_ahead_so_a_walk_needs_no_server(fresh_server, unique_name, tmp_path,
                                                                              mount_factory):
    """Opening a version's catalog.json fetches its collection and item documents, many per request
    and each checked: pystac then walks the whole catalog with the server stopped."""
    name = unique_name("stac-ahead")
    source = write_catalog(tmp_path / "src", items=40, name=name)
    write_metadata(source, name)
    ingest_folder(client(fresh_server), "datasets", source)
    mnt = mount_factory(fresh_server)
    root = mnt.path / "datasets" / name / "v1"
    (root / "catalog.json").read_bytes()
    deadline = time.monotonic() + 30
    while json.loads((mnt.path / ".eotdlfs" / "status.json").read_text()).get("prefetched_files", 0) < 41:
        assert time.monotonic() < deadline, "the documents were not fetched ahead within 30 s"
        time.sleep(0.05)
    assert fresh_server.stats()["contents"]["requests"] <= 2
    fresh_server.stop()
    items = list(pystac.Catalog.from_file(str(root / "catalog.json")).get_items(recursive=True))
    assert sorted(item.id for item in items) == [f"item-{i:05d}" for i in range(40)]
    assert all(Path(item.assets["data"].get_absolute_href()).is_file() for item in items)
