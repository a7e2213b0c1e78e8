"""The official 2023 client's STAC wire format: what it PUTs becomes our documents, ours become what its `get` reads.

official_put_payload.json is what `eotdl` 2023.11.3.post4 PUT to `datasets/stac/ID` for a
catalog -> collection "sentinel" -> items scene-0, scene-1 (one asset B01.tif each): made by
its own STACDataFrame.from_stac_file + the href rewrite of its ingest_stac + df.to_json().
When the official client's venv exists, the tests below also make that payload and run
its `to_stac` live.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path

import pystac
import pytest

from eotdlfs.stac import (MAX_DOCUMENT_BYTES, StacError, StoredSource, documents_to_feature_collection,
                          feature_collection_to_documents, read_local_catalog)
from tests.stac.catalogs import catalog_doc, collection_doc, item_doc, write_catalog, write_json
from tests.stac.test_local_catalog import assert_walks_inside

PAYLOAD = Path(__file__).with_name("official_put_payload.json")
DATASET_ID = "ID123"
API = "http://127.0.0.1:9/"
OFFICIAL_VENV = Path(os.environ.get("EOTDLFS_OFFICIAL_VENV",
                                    Path.home() / ".cache" / "eotdlfs-test" / "eotdl-official-venv"))


def payload() -> dict:
    return json.loads(PAYLOAD.read_text())


def download_url(path: str) -> str:
    return f"{API}datasets/{DATASET_ID}/download/{path}"


def test_the_official_payload_becomes_a_self_contained_catalog(tmp_path):
    files = feature_collection_to_documents(payload(), DATASET_ID, {"B01.tif"})
    assert files.name == "my-stac-ds"
    assert [path for path, _ in files.documents] == [
        "catalog.json", "sentinel/collection.json", "sentinel/scene-0/scene-0.json", "sentinel/scene-1/scene-1.json"]
    assert files.assets == ["B01.tif"]
    for path, data in files.documents:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(data)
    (tmp_path / "B01.tif").write_bytes(b"x")
    items = assert_walks_inside(tmp_path)
    sent = {f["properties"]["id"]: f for f in payload()["features"] if f["properties"]["type"] == "Feature"}
    for item in items:  # equal to what was sent apart from hrefs
        assert item.properties == sent[item.id]["properties"]["properties"]
        assert item.geometry == sent[item.id]["geometry"]
        assert item.bbox == sent[item.id]["properties"]["bbox"]
        assert item.stac_extensions == sent[item.id]["properties"]["stac_extensions"]
        assert item.assets["B01"].media_type == "image/tiff; application=geotiff"


def test_an_asset_left_at_the_uploaders_path_is_refused():
    """The official ingest logs an upload error, stops uploading and still PUTs the catalog."""
    fc = payload()
    fc["features"][3]["properties"]["assets"]["B01"]["href"] = "/home/olga/data/sentinel/scene-1/B01.tif"
    with pytest.raises(StacError, match="Feature 'scene-1': asset 'B01'.*upload interrupted"):
        feature_collection_to_documents(fc, DATASET_ID, {"B01.tif"})


@pytest.mark.parametrize("href, match", [
    (f"{API}datasets/ID123/download/other.tif", "not a file of this version"),
    (f"{API}datasets/OTHER/download/B01.tif", "not a file uploaded to this dataset"),
    ("https://example.com/B01.tif", "not a file uploaded to this dataset"),
])
def test_asset_hrefs_must_name_files_of_the_version(href, match):
    fc = payload()
    fc["features"][2]["properties"]["assets"]["B01"]["href"] = href
    with pytest.raises(StacError, match=match):
        feature_collection_to_documents(fc, DATASET_ID, {"B01.tif"})


def _edit(change) -> dict:
    fc = payload()
    change(fc["features"])
    return fc


@pytest.mark.parametrize("fc, match", [
    ([], "FeatureCollection"),
    ({"type": "FeatureCollection", "features": "x"}, "FeatureCollection"),
    (_edit(lambda f: f[2]["properties"].update(id="../../evil")), "id '../../evil'"),
    (_edit(lambda f: f[1]["properties"].update(id="..")), "id '..'"),
    (_edit(lambda f: f.append(copy.deepcopy(f[0]))), "exactly one Catalog"),
    (_edit(lambda f: f[0]["properties"].update(type="Collection")), "exactly one Catalog"),
    (_edit(lambda f: f[3]["properties"].update(id="scene-0")), "two items with id 'scene-0'"),
    (_edit(lambda f: (f[1]["properties"].update(links=[]), f[3]["properties"].update(collection="nope"))),
     "collection 'nope' is not in the catalog"),
    (_edit(lambda f: f[2]["properties"].update(properties=None)), "not a valid STAC Feature"),
    (_edit(lambda f: f[2].update(properties="x")), "Feature with properties"),
    (_edit(lambda f: f[2]["properties"].update(type="Thing")), "'type' must be one of"),
])
def test_payloads_that_break_the_rules_are_refused(fc, match):
    with pytest.raises(StacError, match=match):
        feature_collection_to_documents(fc, DATASET_ID, {"B01.tif"})


def test_items_are_placed_by_the_collections_item_links():
    """pystac leaves `collection` out of items saved without one; the collection's links still say."""
    fc = payload()
    for feature in fc["features"][2:]:
        del feature["properties"]["collection"]
        feature["properties"]["links"] = [link for link in feature["properties"]["links"] if link["rel"] == "self"]
    files = feature_collection_to_documents(fc, DATASET_ID, {"B01.tif"})
    assert [path for path, _ in files.documents][2:] == ["sentinel/scene-0/scene-0.json", "sentinel/scene-1/scene-1.json"]
    assert json.loads(files.documents[2][1])["collection"] == "sentinel"


def test_a_huge_property_blob_is_refused():
    fc = payload()
    fc["features"][2]["properties"]["properties"]["blob"] = "x" * MAX_DOCUMENT_BYTES
    with pytest.raises(StacError, match="sentinel/scene-0/scene-0.json: .* more than"):
        feature_collection_to_documents(fc, DATASET_ID, {"B01.tif"})


def test_more_items_than_the_limit_are_refused(monkeypatch):
    monkeypatch.setattr("eotdlfs.stac.official.MAX_ITEMS", 1)
    with pytest.raises(StacError, match="more than 1 items"):
        feature_collection_to_documents(payload(), DATASET_ID, {"B01.tif"})


def test_published_documents_go_back_as_the_feature_collection_they_came_from():
    """Documents -> GET download FC -> documents is a fixed point: nothing is lost on the way."""
    files = feature_collection_to_documents(payload(), DATASET_ID, {"B01.tif"})
    stored = dict(files.documents)
    fc = documents_to_feature_collection(StoredSource(stored.__getitem__), download_url)
    assert [(f["properties"]["type"], f["properties"]["id"]) for f in fc["features"]] == [
        ("Catalog", "my-stac-ds"), ("Collection", "sentinel"), ("Feature", "scene-0"), ("Feature", "scene-1")]
    assert fc["features"][2]["properties"]["assets"]["B01"]["href"] == download_url("B01.tif")
    assert fc["features"][2]["geometry"]["type"] == "Polygon" and fc["features"][0]["geometry"] is None
    again = feature_collection_to_documents(json.loads(json.dumps(fc)), DATASET_ID, {"B01.tif"})
    assert again == files


def test_a_folder_ingested_by_eotdlfs_goes_out_in_the_official_shape(tmp_path):
    """Asset paths keep their folders in the download URL; the official `get -a` makes them under assets/."""
    files = read_local_catalog(write_catalog(tmp_path / "src", items=3))
    stored = dict(files.documents)
    fc = documents_to_feature_collection(StoredSource(stored.__getitem__), download_url)
    hrefs = sorted(f["properties"]["assets"]["data"]["href"] for f in fc["features"] if f["properties"]["type"] == "Feature")
    assert hrefs == [download_url(path) for path in files.assets]
    back = feature_collection_to_documents(fc, DATASET_ID, set(files.assets))
    assert back.assets == files.assets and back.name == files.name


def test_sub_catalogs_and_items_of_the_root_survive_the_official_shape(tmp_path):
    """to_stac knows one catalog level: collections below a sub-catalog go to the root, items keep theirs."""
    source = tmp_path / "src"
    write_json(source / "catalog.json", catalog_doc("nested-cat", [
        {"rel": "child", "href": "./region/catalog.json"}, {"rel": "item", "href": "./loose/loose.json"}]))
    write_json(source / "region" / "catalog.json", catalog_doc("region", [{"rel": "child", "href": "./c/collection.json"}]))
    write_json(source / "region" / "c" / "collection.json", collection_doc("c", [{"rel": "item", "href": "./i/i.json"}]))
    for path, stac_id in [("region/c/i", "i"), ("loose", "loose")]:
        write_json(source / path / f"{stac_id}.json", item_doc(stac_id, [0, 0, 1, 1], "2020-01-01T00:00:00Z", {"a": "./a.tif"}))
        (source / path / "a.tif").write_bytes(stac_id.encode())
    files = read_local_catalog(source)
    stored = dict(files.documents)
    fc = documents_to_feature_collection(StoredSource(stored.__getitem__), download_url)
    rows = {f["properties"]["id"]: f["properties"] for f in fc["features"]}
    assert list(rows) == ["nested-cat", "c", "loose", "i"]  # catalog, collections, items; each in walk order
    assert rows["i"]["collection"] == "c" and "collection" not in rows["loose"]
    assert [link["href"] for link in rows["nested-cat"]["links"] if link["rel"] in ("child", "item")] == [
        "./c/collection.json", "./loose/loose.json"]
    back = feature_collection_to_documents(fc, DATASET_ID, set(files.assets))
    assert [path for path, _ in back.documents] == ["catalog.json", "c/collection.json", "loose/loose.json", "c/i/i.json"]


@pytest.mark.parametrize("href", ["../../etc/passwd", "/etc/passwd", "file:///etc/passwd", "https://e.com/x.json"])
def test_stored_documents_cannot_point_out_of_the_version(href):
    stored = {"catalog.json": json.dumps({"type": "Catalog", "id": "abc", "stac_version": "1.0.0",
                                          "description": "d", "links": [{"rel": "child", "href": href}]}).encode()}
    with pytest.raises(StacError, match="does not name a file of the version"):
        documents_to_feature_collection(StoredSource(stored.__getitem__), download_url)


def _official_python() -> Path:
    python = OFFICIAL_VENV / "bin" / "python"
    if not python.exists():
        pytest.skip(f"the official client's venv ({OFFICIAL_VENV}) is not installed")
    return python


# geopandas 0.13 with numpy 2 (a venv made before test_official_client pinned numpy<2):
# np.array(copy=False) raises inside GeoDataFrame.to_json(), before any PUT. This turns
# copy=False back into numpy 1's meaning ("copy if needed") for this run.
NUMPY1_COPY = """
import numpy as np
if int(np.__version__.split(".")[0]) >= 2:
    _array = np.array
    np.array = lambda *a, copy=True, **k: _array(*a, copy=None if copy is False else copy, **k)
"""

OFFICIAL_PUT = NUMPY1_COPY + """
import json, sys
from eotdl.curation.stac import STACDataFrame
df = STACDataFrame.from_stac_file(sys.argv[1])
for index, row in df.dropna(subset=["assets"]).iterrows():  # what ingest_stac does per uploaded asset
    for key, asset in row["assets"].items():
        df.loc[index, "assets"][key]["href"] = sys.argv[2] + asset["href"].split("/")[-1]
print(df.to_json())
"""

OFFICIAL_GET = """
import json, sys
import geopandas as gpd
from eotdl.curation.stac import STACDataFrame
STACDataFrame(gpd.GeoDataFrame.from_features(json.load(sys.stdin)["features"])).to_stac(sys.argv[1])
"""


def _run_official(python: Path, code: str, *args: str, stdin: str | None = None) -> str:
    run = subprocess.run([str(python), "-c", code, *args], input=stdin, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


def test_live_official_put_and_get(tmp_path):
    python = _official_python()
    # distinct base names: the official upload keeps only the base name
    source = write_catalog(tmp_path / "src", items=4, asset="{id}.tif")
    put = _run_official(python, OFFICIAL_PUT, str(source / "catalog.json"), download_url(""))
    files = feature_collection_to_documents(json.loads(put), DATASET_ID, {f"item-{i:05d}.tif" for i in range(4)})
    stored = dict(files.documents)
    fc = documents_to_feature_collection(StoredSource(stored.__getitem__), download_url)
    _run_official(python, OFFICIAL_GET, str(tmp_path / "got"), stdin=json.dumps(fc))
    catalog = pystac.Catalog.from_file(str(tmp_path / "got" / "stac-test" / "catalog.json"))
    items = sorted(catalog.get_items(recursive=True), key=lambda item: item.id)
    originals = sorted(pystac.Catalog.from_file(str(source / "catalog.json")).get_items(recursive=True),
                       key=lambda item: item.id)
    assert [i.id for i in items] == [i.id for i in originals]
    for got, original in zip(items, originals):
        assert got.properties == original.properties and got.bbox == original.bbox
        assert got.assets["data"].href == download_url(f"{original.id}.tif")
