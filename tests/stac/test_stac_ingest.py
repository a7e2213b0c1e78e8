"""`eotdlfs ingest` of a STAC folder against a real `eotdlfs serve`: what becomes the version, re-ingest, refusals."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from eotdlfs.client.errors import NotFound
from eotdlfs.client.ingest import ingest_folder
from eotdlfs.metadata import MetadataError
from eotdlfs.stac import StacError
from client.helpers import assert_one_line_error, cli_env, client, run_cli, write_metadata
from tests.stac.catalogs import add_link, hostile, write_catalog, write_json


@pytest.fixture(autouse=True)
def _own_hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EOTDLFS_CACHE_DIR", str(tmp_path / "hash-cache"))


def stac_folder(folder: Path, name: str, items: int = 4) -> Path:
    """write_catalog's catalog named NAME, with a metadata.yml giving authors, license and source."""
    write_catalog(folder, items=items, name=name)
    write_metadata(folder, name)
    return folder


def version_files(api, name: str, version: int) -> dict[str, str]:
    record_id = api.record_by_name("datasets", name)["id"]
    return {f["filename"]: f["checksum"] for f in api.files("datasets", record_id, version)}


def sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def test_a_stac_folder_becomes_documents_assets_and_metadata(repo_server, unique_name, tmp_path):
    name = unique_name("stac")
    folder = stac_folder(tmp_path / "src", name)
    (folder / "notes.txt").write_text("no document refers to me, yet I am a file of the folder")
    api = client(repo_server)
    result = ingest_folder(api, "datasets", folder)
    files = version_files(api, name, result.version)
    assets = {f"scenes/items/item-{i:05d}/data.tif" for i in range(4)}
    documents = {"catalog.json", "scenes/collection.json"} | {f"scenes/items/item-{i:05d}/item-{i:05d}.json"
                                                             for i in range(4)}
    assert set(files) == assets | documents | {"metadata.yml", ".stac-index.json", "notes.txt"}
    assert all(files[path] == sha1(folder / path) for path in assets | {"metadata.yml"})
    record = api.record_by_name("datasets", name)
    assert (record["authors"], record["license"], record["source"]) == (["tester"], "MIT", "http://example.org")
    assert record["quality"] == 1  # the server's rule: the published version holds catalog.json at its root
    assert json.loads((folder / "catalog.json").read_text())["links"][0] == {"rel": "root", "href": "./catalog.json"}


def test_reingest_with_one_asset_changed_uploads_one_file(repo_server, unique_name, tmp_path):
    name = unique_name("stac-re")
    folder = stac_folder(tmp_path / "src", name, items=30)
    api = client(repo_server)
    first = ingest_folder(api, "datasets", folder)
    assert (first.uploaded, first.carried) == (30 + 32 + 2, 0)  # assets, documents, metadata.yml and the index
    (folder / "scenes" / "items" / "item-00007" / "data.tif").write_bytes(b"changed bytes")
    before = repo_server.stats()["uploads"]
    second = ingest_folder(api, "datasets", folder)
    after = repo_server.stats()["uploads"]
    assert (second.version, second.uploaded, second.carried, second.dropped) == (first.version + 1, 1, 63, 0)
    assert second.bytes_sent == len(b"changed bytes")
    delta = {route: after[route] - before[route] for route in after}
    assert delta["batch"] == 1 and delta["file"] == delta["chunk"] == delta["complete"] == 0
    assert version_files(api, name, 2)["scenes/items/item-00007/data.tif"] == sha1(
        folder / "scenes" / "items" / "item-00007" / "data.tif")


def test_metadata_comes_from_the_catalog_without_metadata_yml(repo_server, unique_name, tmp_path):
    name = unique_name("stac-meta")
    folder = write_catalog(tmp_path / "src", items=1, name=name)
    collection = json.loads((folder / "scenes" / "collection.json").read_text())
    collection["providers"] = [{"name": "ESA", "url": "https://esa.int"}, {"name": "Earthpulse"}]
    write_json(folder / "scenes" / "collection.json", collection)
    api = client(repo_server)
    ingest_folder(api, "datasets", folder)
    record = api.record_by_name("datasets", name)
    assert (record["authors"], record["license"], record["source"]) == (
        ["ESA", "Earthpulse"], "CC-BY-4.0", "https://esa.int")
    assert "metadata.yml" not in version_files(api, name, 1)


def test_missing_metadata_is_named_before_anything_is_sent(repo_server, unique_name, tmp_path):
    name = unique_name("stac-nometa")
    folder = write_catalog(tmp_path / "src", items=1, name=name)
    with pytest.raises(MetadataError, match="authors: not found in the catalog"):
        ingest_folder(client(repo_server), "datasets", folder)
    write_metadata(folder, "other-name")
    with pytest.raises(MetadataError, match="differs from the catalog id"):
        ingest_folder(client(repo_server), "datasets", folder)
    write_metadata(folder, name, notes="n" * (1 << 20))
    with pytest.raises(MetadataError, match="metadata.yml: is 1,048,6.* more than the 1,048,576"):
        ingest_folder(client(repo_server), "datasets", folder)


def _invalid_json(folder: Path) -> None:
    (folder / "scenes" / "collection.json").write_text('{"type": "Collection", ')


def _cycle(folder: Path) -> None:
    add_link(folder / "scenes" / "collection.json", {"rel": "child", "href": "../catalog.json"})


def _huge_blob(folder: Path) -> None:
    item = folder / "scenes" / "items" / "item-00000" / "item-00000.json"
    doc = json.loads(item.read_text())
    doc["properties"]["blob"] = "x" * (2 << 20)
    write_json(item, doc)


HOSTILE = {
    "invalid JSON": (_invalid_json, "not valid JSON"),
    "link cycle": (_cycle, "already in the catalog"),
    "../../etc/passwd": ("../../../../../../etc/passwd", "points outside"),
    "absolute path": ("/etc/passwd", "points outside"),
    "file://": ("file:///etc/passwd", "points outside"),
    "remote asset": ("https://example.org/a.tif", "remote href"),
    "huge property blob": (_huge_blob, "a STAC document may have"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_catalogs_fail_before_anything_is_sent(repo_server, unique_name, tmp_path, case):
    name = unique_name("stac-bad")
    spoil, message = HOSTILE[case]
    folder = hostile(tmp_path / "src", spoil if isinstance(spoil, str) else "./data.tif")
    json_doc = json.loads((folder / "catalog.json").read_text())
    write_json(folder / "catalog.json", dict(json_doc, id=name))
    write_metadata(folder, name)
    if callable(spoil):
        spoil(folder)
    before = repo_server.stats()["uploads"]
    result = run_cli(cli_env(tmp_path, repo_server.url, repo_server.token("alice")), "ingest", str(folder))
    assert_one_line_error(result, message)
    assert repo_server.stats()["uploads"] == before
    with pytest.raises(NotFound):
        client(repo_server).record_by_name("datasets", name)


def test_more_items_than_the_limit_fail_before_anything_is_sent(repo_server, unique_name, tmp_path, monkeypatch):
    monkeypatch.setattr("eotdlfs.stac.walk.MAX_ITEMS", 3)
    name = unique_name("stac-many")
    folder = stac_folder(tmp_path / "src", name, items=4)
    with pytest.raises(StacError, match="more than 3 items"):
        ingest_folder(client(repo_server), "datasets", folder)
    with pytest.raises(NotFound):
        client(repo_server).record_by_name("datasets", name)
