"""A STAC folder copied into a real mount's staging tree and flushed becomes a STAC dataset, one asset at a time."""

from __future__ import annotations

import json
import shutil
import time

import pystac
import pytest

from client.helpers import assert_one_line_error, write_metadata
from tests.stac.catalogs import write_catalog, write_json
from tests.staging.test_mount_staging import flush_cli, staged, uploads, version_files


@pytest.fixture(autouse=True)
def _own_hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EOTDLFS_CACHE_DIR", str(tmp_path / "hash-cache"))


def test_a_staged_stac_folder_flushes_as_a_stac_dataset_and_one_changed_asset_uploads_one(
        tmp_path, repo_server, mount_factory, unique_name):
    name = unique_name("stac-stg")
    source = write_catalog(tmp_path / "src", items=6, name=name)
    collection = json.loads((source / "scenes" / "collection.json").read_text())
    collection["providers"] = [{"name": "ESA", "url": "https://esa.int"}]
    write_json(source / "scenes" / "collection.json", collection)
    mount = mount_factory(repo_server, ttl=1)
    shutil.copytree(source, staged(mount, name))
    result = flush_cli(tmp_path, repo_server, staged(mount, name))
    assert result.returncode == 0, result.stderr
    v1 = version_files(repo_server, name, 1)
    assert ".stac-index.json" in v1 and "metadata.yml" not in v1  # metadata from the catalog's license, providers
    catalog = pystac.Catalog.from_file(str(mount.path / "datasets" / name / "v1" / "catalog.json"))
    assert catalog.catalog_type == pystac.CatalogType.SELF_CONTAINED
    assert len(list(catalog.get_items(recursive=True))) == 6
    # the staged tree shows the published documents once the kernel's attribute cache (1 s) expires
    published = (mount.path / "datasets" / name / "v1" / "catalog.json").read_bytes()
    deadline = time.monotonic() + 10
    while (staged(mount, name) / "catalog.json").read_bytes() != published and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (staged(mount, name) / "catalog.json").read_bytes() == published

    (staged(mount, name) / "scenes" / "items" / "item-00002" / "data.tif").write_bytes(b"new scene bytes")
    before = uploads(repo_server)
    result = flush_cli(tmp_path, repo_server, staged(mount, name))
    assert result.returncode == 0, result.stderr
    assert uploads(repo_server) - before == 1
    v2 = version_files(repo_server, name, 2)
    assert {p for p in v2 if v2[p] != v1[p]} == {"scenes/items/item-00002/data.tif"}


def test_a_staged_catalog_with_an_escaping_href_is_refused_and_nothing_sent(
        tmp_path, repo_server, mount_factory, unique_name):
    name = unique_name("stac-stg-bad")
    source = write_catalog(tmp_path / "src", items=1, name=name)
    write_metadata(source, name)
    item = source / "scenes" / "items" / "item-00000" / "item-00000.json"
    doc = json.loads(item.read_text())
    doc["assets"]["data"]["href"] = "../../../../../../etc/passwd"
    write_json(item, doc)
    mount = mount_factory(repo_server, ttl=1)
    shutil.copytree(source, staged(mount, name))
    before = uploads(repo_server)
    assert_one_line_error(flush_cli(tmp_path, repo_server, staged(mount, name)), "does not name a file of the version")
    assert uploads(repo_server) == before


def test_a_staged_catalogs_metadata_yml_over_1_mib_is_refused_unread_and_nothing_sent(
        tmp_path, repo_server, mount_factory, unique_name):
    """It was read into the mount's memory and parsed there (PyYAML: ~2 s and ~25 MB per MB)."""
    name = unique_name("stac-stg-big")
    source = write_catalog(tmp_path / "src", items=1, name=name)
    write_metadata(source, name, notes="n" * (1 << 20))
    mount = mount_factory(repo_server, ttl=1)
    shutil.copytree(source, staged(mount, name))
    before = uploads(repo_server)
    assert_one_line_error(flush_cli(tmp_path, repo_server, staged(mount, name)), "metadata.yml: is 1,048,6",
                          "more than the 1,048,576 a metadata.yml may have")
    assert uploads(repo_server) == before


def test_after_a_flush_the_staged_tree_holds_the_item_index_and_nothing_is_pending(
        tmp_path, repo_server, mount_factory, unique_name):
    """The flush makes `.stac-index.json`; once published it is a file of the staged tree as of the
    version (it was missing, counted as a pending delete forever, and kept the record dirty)."""
    name = unique_name("stac-stg-idx")
    source = write_catalog(tmp_path / "src", items=2, name=name)
    write_metadata(source, name)
    mount = mount_factory(repo_server, ttl=1)
    shutil.copytree(source, staged(mount, name))
    result = flush_cli(tmp_path, repo_server, staged(mount, name))
    assert result.returncode == 0, result.stderr
    index = (mount.path / "datasets" / name / "v1" / ".stac-index.json").read_bytes()
    assert (staged(mount, name) / ".stac-index.json").read_bytes() == index
    status = json.loads((mount.path / ".eotdlfs" / "status.json").read_text())
    record = next(r for r in status["staging"]["records"] if r["record"] == f"datasets/{name}")
    assert (record["added"], record["changed"], record["deleted"]) == (0, 0, 0)
    again = flush_cli(tmp_path, repo_server, staged(mount, name))
    assert again.returncode == 0 and "no staged changes since v1" in again.stdout + again.stderr
