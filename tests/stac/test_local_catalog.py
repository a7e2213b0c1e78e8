"""read_local_catalog: a STAC folder becomes self-contained documents plus asset files, or a clear error."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pystac
import pytest

from eotdlfs.client.ingest.stac import catalog_name
from eotdlfs.metadata import MetadataError
from eotdlfs.stac import MAX_DOCUMENT_BYTES, CatalogFiles, StacError, read_local_catalog
from eotdlfs.stac import rules
from tests.stac.catalogs import add_link, catalog_doc, collection_doc, hostile, item_doc, write_catalog, write_json


def materialise(files: CatalogFiles, source: Path, dest: Path) -> Path:
    """Lay the version out as the mount and `get` will: documents, then asset bytes."""
    for path, data in files.documents:
        (dest / path).parent.mkdir(parents=True, exist_ok=True)
        (dest / path).write_bytes(data)
    for path in files.assets:
        (dest / path).parent.mkdir(parents=True, exist_ok=True)
        (dest / path).write_bytes((source / path).read_bytes())
    return dest


def assert_walks_inside(root: Path) -> list[pystac.Item]:
    """pystac walks the catalog from disk; every structural link and asset href resolves inside ROOT."""
    catalog = pystac.Catalog.from_file(str(root / "catalog.json"))
    assert catalog.catalog_type == pystac.CatalogType.SELF_CONTAINED
    items = list(catalog.get_items(recursive=True))
    for path in root.rglob("*.json"):
        doc = json.loads(path.read_text())
        assert all(link["rel"] != "self" for link in doc["links"])
        structural = [link["href"] for link in doc["links"] if link["rel"] in rules.STRUCTURAL_RELS]
        for href in structural + [a["href"] for a in doc.get("assets", {}).values()]:
            assert not os.path.isabs(href) and "://" not in href, href
            target = (path.parent / href).resolve()
            assert target.is_relative_to(root.resolve()) and target.is_file(), (path, href)
    return items


def test_round_trip_keeps_layout_and_resolves_inside(tmp_path):
    source = write_catalog(tmp_path / "src", items=5)
    files = read_local_catalog(source)
    assert files.name == "stac-test"
    assert files.documents[0][0] == "catalog.json"
    assert {p for p, _ in files.documents} == {p.relative_to(source).as_posix() for p in source.rglob("*.json")}
    assert files.assets == sorted(f"scenes/items/item-{i:05d}/data.tif" for i in range(5))
    items = assert_walks_inside(materialise(files, source, tmp_path / "version"))
    assert sorted(item.id for item in items) == [f"item-{i:05d}" for i in range(5)]
    assert all(item.collection_id == "scenes" for item in items)


def test_links_to_files_inside_the_folder_are_kept_relative(tmp_path):
    """A license file, a README, one item derived from another: links to files of the version stay
    (they were dropped with the links to the uploader's disk); links leading out are still dropped."""
    source = write_catalog(tmp_path / "src", items=2)
    (source / "LICENSE").write_text("CC-BY-4.0\n")
    (tmp_path / "outside.txt").write_text("not part of it")
    add_link(source / "catalog.json", {"rel": "license", "href": "./LICENSE"})
    add_link(source / "catalog.json", {"rel": "describedby", "href": str(tmp_path / "outside.txt")})
    item = source / "scenes" / "items" / "item-00001" / "item-00001.json"
    add_link(item, {"rel": "derived_from", "href": "file://" + str(source / "scenes/items/item-00000/item-00000.json")})
    add_link(item, {"rel": "related", "href": "../../../../outside.txt"})
    version = materialise(read_local_catalog(source), source, tmp_path / "version")
    (version / "LICENSE").write_bytes((source / "LICENSE").read_bytes())  # a file of the version, as any other
    catalog = pystac.Catalog.from_file(str(version / "catalog.json"))
    assert [link.get_absolute_href() for link in catalog.get_links("license")] == [str(version / "LICENSE")]
    assert catalog.get_links("describedby") == []
    derived = pystac.Item.from_file(str(version / "scenes/items/item-00001/item-00001.json"))
    assert [link.href for link in derived.get_links("derived_from")] == ["../item-00000/item-00000.json"]
    assert pystac.Item.from_file(derived.get_links("derived_from")[0].get_absolute_href()).id == "item-00000"
    assert derived.get_links("related") == []


def test_absolute_links_inside_the_folder_are_made_relative(tmp_path):
    """A catalog saved ABSOLUTE_PUBLISHED, plus a file:// asset href, inside the folder."""
    source = tmp_path / "src"
    write_json(source / "catalog.json", catalog_doc("abs-cat", [
        {"rel": "self", "href": str(source / "catalog.json")},
        {"rel": "child", "href": str(source / "c" / "collection.json")},
        {"rel": "license", "href": "https://creativecommons.org/licenses/by/4.0/"},
        {"rel": "describedby", "href": str(source / "README.md")}]))
    write_json(source / "c" / "collection.json", collection_doc("c", [
        {"rel": "item", "href": (source / "c" / "i" / "i.json").as_uri()}]))
    write_json(source / "c" / "i" / "i.json", item_doc("i", [0, 0, 1, 1], "2020-01-01T00:00:00Z",
                                                       {"a": (source / "c" / "i" / "a.tif").as_uri()}))
    (source / "c" / "i" / "a.tif").write_bytes(b"a")
    files = read_local_catalog(source)
    root = json.loads(files.documents[0][1])
    # the remote license link is kept, the link to the uploader's disk is not
    assert [link["rel"] for link in root["links"]] == ["root", "child", "license"]
    assert files.assets == ["c/i/a.tif"]
    assert_walks_inside(materialise(files, source, tmp_path / "version"))


@pytest.mark.parametrize("href", ["../../../../../etc/passwd", "/etc/passwd", "file:///etc/passwd",
                                  "../../../../outside.tif", "../../../../src-prefix/a.tif"])
@pytest.mark.parametrize("where", ["asset", "item link"])
def test_hrefs_escaping_the_folder_are_refused(tmp_path, href, where):
    (tmp_path / "outside.tif").write_bytes(b"secret")
    (tmp_path / "src-prefix").mkdir()  # shares the folder's name as a string prefix
    (tmp_path / "src-prefix" / "a.tif").write_bytes(b"secret")
    folder = hostile(tmp_path / "src", href, where)
    with pytest.raises(StacError, match="points outside"):
        read_local_catalog(folder)


def test_a_symlink_out_of_the_folder_is_refused(tmp_path):
    (tmp_path / "outside.tif").write_bytes(b"secret")
    folder = hostile(tmp_path / "src", "./link.tif")
    (folder / "scenes" / "items" / "item-00000" / "link.tif").symlink_to(tmp_path / "outside.tif")
    with pytest.raises(StacError, match="points outside"):
        read_local_catalog(folder)


@pytest.mark.parametrize("href", ["https://example.com/scene.tif", "http://example.com/a.tif", "s3://bucket/a.tif"])
def test_remote_asset_hrefs_are_refused(tmp_path, href):
    with pytest.raises(StacError, match="remote href"):
        read_local_catalog(hostile(tmp_path / "src", href))


def test_a_missing_asset_file_is_named(tmp_path):
    with pytest.raises(StacError, match="asset 'data'.*not a file"):
        read_local_catalog(hostile(tmp_path / "src", "./missing.tif"))


def test_a_missing_item_document_names_the_document_linking_it(tmp_path):
    """An item folder removed but still linked: the error says which document to edit."""
    folder = write_catalog(tmp_path / "src", items=2)
    shutil.rmtree(folder / "scenes" / "items" / "item-00001")
    with pytest.raises(StacError, match=r"^scenes/collection.json: item link to "
                                        r"scenes/items/item-00001/item-00001.json: not found in "):
        read_local_catalog(folder)


@pytest.mark.parametrize("document, link, match", [
    ("scenes/collection.json", {"rel": "child", "href": "../catalog.json"}, "link cycle"),
    ("catalog.json", {"rel": "child", "href": "./catalog.json"}, "link cycle"),
    ("catalog.json", {"rel": "child", "href": "./scenes/items/item-00000/item-00000.json"}, "second parent"),
    ("catalog.json", {"rel": "child", "href": "./scenes/items/item-00000/data.tif"}, "data.tif: not valid JSON"),
])
def test_links_that_break_the_tree_are_refused(tmp_path, document, link, match):
    folder = write_catalog(tmp_path / "src", items=1)
    add_link(folder / document, link)
    with pytest.raises(StacError, match=match):
        read_local_catalog(folder)


def test_invalid_json_is_named(tmp_path):
    folder = write_catalog(tmp_path / "src", items=2)
    (folder / "scenes" / "items" / "item-00001" / "item-00001.json").write_text('{"type": "Feature", ')
    with pytest.raises(StacError, match="item-00001.json: not valid JSON"):
        read_local_catalog(folder)


def test_a_huge_property_blob_is_refused(tmp_path):
    folder = write_catalog(tmp_path / "src", items=1)
    item = folder / "scenes" / "items" / "item-00000" / "item-00000.json"
    doc = json.loads(item.read_text())
    doc["properties"]["blob"] = "x" * MAX_DOCUMENT_BYTES
    write_json(item, doc)
    with pytest.raises(StacError, match="item-00000.json: [0-9]+ bytes, more than"):
        read_local_catalog(folder)
    collection = folder / "scenes" / "collection.json"
    doc = json.loads(collection.read_text())
    doc["summaries"] = {"blob": ["x" * MAX_DOCUMENT_BYTES]}
    write_json(collection, doc)
    with pytest.raises(StacError, match="collection.json: [0-9]+ bytes, more than"):
        read_local_catalog(folder)


def test_a_collection_over_the_document_cap_by_its_links_alone_is_read(tmp_path):
    """Links grow with the children (100,000 item links are ~10 MB); only a document's own fields get the cap."""
    folder = write_catalog(tmp_path / "src", items=1)
    collection = folder / "scenes" / "collection.json"
    doc = json.loads(collection.read_text())
    doc["links"] += [{"rel": "related", "href": f"https://example.com/{i:05d}/" + "x" * 600} for i in range(2000)]
    write_json(collection, doc)
    assert collection.stat().st_size > MAX_DOCUMENT_BYTES
    files = read_local_catalog(folder)
    assert len(json.loads(dict(files.documents)["scenes/collection.json"])["links"]) == 3 + 2000  # root, parent, item


def test_a_root_catalog_over_the_document_cap_by_its_links_alone_names_its_dataset(tmp_path):
    """The name is read by the same size rule as the whole catalog: a root catalog grown past 1 MiB by
    its links is not cut short (it was read to MAX_DOCUMENT_BYTES, then refused as bad JSON)."""
    folder = write_catalog(tmp_path / "src", items=1)
    root = folder / "catalog.json"
    doc = json.loads(root.read_text())
    doc["links"] += [{"rel": "related", "href": f"https://example.com/{i:05d}/" + "x" * 600} for i in range(2000)]
    write_json(root, doc)
    assert root.stat().st_size > MAX_DOCUMENT_BYTES
    assert catalog_name(folder) == read_local_catalog(folder).name == doc["id"]


def test_more_items_than_the_limit_are_refused(tmp_path, monkeypatch):
    assert rules.MAX_ITEMS >= 100_000
    monkeypatch.setattr("eotdlfs.stac.walk.MAX_ITEMS", 3)
    read_local_catalog(write_catalog(tmp_path / "ok", items=3))
    with pytest.raises(StacError, match="more than 3 items"):
        read_local_catalog(write_catalog(tmp_path / "src", items=4))


@pytest.mark.parametrize("name", ["ab", "has space", "9starts-with-digit", "x" * 46])
def test_the_root_id_obeys_the_dataset_name_rule(tmp_path, name):
    with pytest.raises(MetadataError, match="dataset's name"):
        read_local_catalog(write_catalog(tmp_path / "src", items=1, name=name))


def test_what_pystac_refuses_is_refused(tmp_path):
    folder = write_catalog(tmp_path / "src", items=1)
    item = folder / "scenes" / "items" / "item-00000" / "item-00000.json"
    doc = json.loads(item.read_text())
    del doc["properties"]
    write_json(item, doc)
    with pytest.raises(StacError, match="not a valid STAC Feature"):
        read_local_catalog(folder)


def test_a_root_that_is_not_a_catalog_is_refused(tmp_path):
    write_json(tmp_path / "catalog.json", collection_doc("a-collection", []))
    with pytest.raises(StacError, match="must be a Catalog"):
        read_local_catalog(tmp_path)


def test_an_item_where_a_catalog_belongs_is_refused(tmp_path):
    folder = write_catalog(tmp_path / "src", items=1)
    write_json(folder / "stray.json", item_doc("stray", [0, 0, 1, 1], "2020-01-01T00:00:00Z", {}))
    add_link(folder / "catalog.json", {"rel": "child", "href": "./stray.json"})
    with pytest.raises(StacError, match="stray.json: a child document must be a Catalog or Collection, got Feature"):
        read_local_catalog(folder)


def test_an_asset_that_is_a_document_is_refused(tmp_path):
    with pytest.raises(StacError, match="both an asset and a STAC document"):
        read_local_catalog(hostile(tmp_path / "src", "../../collection.json"))


def test_a_root_catalog_linked_from_outside_is_refused(tmp_path):
    write_catalog(tmp_path / "elsewhere", items=1)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "catalog.json").symlink_to(tmp_path / "elsewhere" / "catalog.json")
    with pytest.raises(StacError, match="catalog.json: a link out of"):
        read_local_catalog(tmp_path / "src")
