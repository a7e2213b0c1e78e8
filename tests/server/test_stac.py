"""STAC datasets on the server: S1 (create), S4 (PUT the catalog), S5 (GET it back), and `quality`.

The PUT bodies are tests/stac/official_put_payload.json, what the official 2023 client really
sends (absolute local `self` hrefs, asset hrefs as download URLs of its uploads).
"""

from __future__ import annotations

import errno
import io
import json
from pathlib import Path

import pystac
import pytest
from serverapi import Api, sha1

from eotdlfs.server.store import Store
from eotdlfs.stac import MAX_DOCUMENT_BYTES

PAYLOAD = Path(__file__).resolve().parent.parent / "stac" / "official_put_payload.json"
ASSET = b"II*\x00 pretend geotiff"
META = {"authors": ["Ada"], "source": "http://example.com", "license": "MIT"}


@pytest.fixture
def ds(repo_server) -> Api:
    return Api(repo_server, "datasets", repo_server.token("alice"))


def official_payload(api: Api, rid: str) -> dict:
    """The official client's PUT body for dataset RID of this server."""
    text = PAYLOAD.read_text().replace("http://127.0.0.1:9/datasets/ID123/", f"{api.url}datasets/{rid}/")
    return json.loads(text)


def create_stac(api: Api, name: str) -> str:
    r = api.post("datasets/stac", json={"name": name})
    assert r.status_code == 200, r.text
    return r.json()["dataset_id"]


def upload(api: Api, rid: str, version: int, path: str, data: bytes) -> None:
    r = api.post(f"datasets/{rid}?version={version}", files={"file": (path, data)}, data={"checksum": sha1(data)})
    assert r.status_code == 200, r.text


def put_stac(api: Api, rid: str, fc: dict, **kw):
    return api.req("PUT", f"datasets/stac/{rid}", json={"stac": fc}, **kw)


def official_ingest(api: Api, name: str) -> tuple[str, int]:
    """What the official `ingest_stac` does: S1, a version, the asset, S4."""
    rid = create_stac(api, name)
    version = api.new_version(rid)
    upload(api, rid, version, "B01.tif", ASSET)
    r = put_stac(api, rid, official_payload(api, rid))
    assert r.status_code == 200, r.text
    return rid, version


# -- S1 and quality (the contract with the client side) ------------------------------


def test_a_stac_record_has_quality_1_and_the_rules_of_any_record(ds, unique_name):
    name = unique_name("stac")
    rid = create_stac(ds, name)
    record = ds.record(name)
    assert record["id"] == rid and record["uid"] == "alice" and record["quality"] == 1
    assert [x["quality"] for x in ds.get(f"datasets?match={name}").json()] == [1]
    r = ds.post("datasets/stac", json={"name": name})
    assert r.status_code == 409 and r.json() == {"detail": "Dataset already exists"}
    assert ds.post("datasets", json={"name": name, **META}).status_code == 409  # one namespace with route 3
    for bad in ("ab", "1abc", "a/b", "", None, "x" * 46):
        r = ds.post("datasets/stac", json={"name": bad})
        assert r.status_code == 400 and r.json()["detail"].startswith("name:"), r.text
    assert ds.post("datasets/stac", json=["x"]).status_code == 400
    assert ds.as_user(None).post("datasets/stac", json={"name": unique_name("stac")}).status_code == 401


def test_quality_follows_the_latest_published_version(ds, unique_name):
    """1 when the latest published version holds a root catalog.json; drafts change nothing."""
    name = unique_name("q")
    rid = ds.create(name)
    assert ds.record(name)["quality"] == 0
    v1 = ds.new_version(rid)
    assert ds.batch(rid, v1, {"catalog.json": b"{}", "a.tif": b"a"}).status_code == 200
    assert ds.record(name)["quality"] == 1
    v2 = ds.new_version(rid, draft=True)
    assert ds.batch(rid, v2, {"sub/catalog.json": b"{}"}).status_code == 200
    assert ds.record(name)["quality"] == 1  # a draft without catalog.json: still 1
    assert ds.post(f"datasets/{rid}/publish?version={v2}").status_code == 200
    assert ds.record(name)["quality"] == 0  # published: its root has no catalog.json


# -- S4 and S5 -----------------------------------------------------------------------


def files_of(api: Api, rid: str, version: int) -> dict[str, str]:
    return {f["filename"]: f["checksum"] for f in api.files(rid, version)}


def test_the_official_put_becomes_checksummed_files_of_the_version(ds, unique_name, tmp_path):
    rid, version = official_ingest(ds, unique_name("put"))
    files = files_of(ds, rid, version)
    assert sorted(files) == ["B01.tif", "catalog.json", "sentinel/collection.json",
                             "sentinel/scene-0/scene-0.json", "sentinel/scene-1/scene-1.json"]
    for path, checksum in files.items():  # every document is a stored file like any other
        data = ds.download(rid, path).content
        assert sha1(data) == checksum
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(data)
    catalog = pystac.Catalog.from_file(str(tmp_path / "catalog.json"))
    items = sorted(catalog.get_items(recursive=True), key=lambda i: i.id)
    assert [i.id for i in items] == ["scene-0", "scene-1"]
    for item in items:  # self-contained: relative hrefs resolving to the uploaded asset
        assert item.assets["B01"].to_dict()["href"] == "../../B01.tif"
        assert Path(item.assets["B01"].get_absolute_href()).read_bytes() == ASSET
    for path in files:
        if path.endswith(".json"):
            links = json.loads((tmp_path / path).read_text())["links"]
            assert links and all(link["href"].startswith(("./", "../")) for link in links), path


def test_get_download_answers_the_feature_collection_the_official_get_reads(ds, unique_name):
    rid, version = official_ingest(ds, unique_name("get"))
    r = ds.as_user(None).get(f"datasets/{rid}/download")
    assert r.status_code == 200, r.text
    rows = {f["properties"]["id"]: f for f in r.json()["features"]}
    assert list(rows) == ["my-stac-ds", "sentinel", "scene-0", "scene-1"]
    sent = {f["properties"]["id"]: f for f in official_payload(ds, rid)["features"]}
    for stac_id in ("scene-0", "scene-1"):
        got, was = rows[stac_id], sent[stac_id]
        assert got["geometry"] == was["geometry"] and got["properties"]["collection"] == "sentinel"
        assert got["properties"]["properties"] == was["properties"]["properties"]
        href = got["properties"]["assets"]["B01"]["href"]
        assert href == f"{ds.url}datasets/{rid}/download/B01.tif"
        assert ds.get(href[len(ds.url):]).content == ASSET
    assert ds.get(f"datasets/{rid}/download?version={version + 1}").status_code == 404


def test_a_q0_dataset_has_no_stac_to_download(ds, unique_name):
    rid = ds.create(unique_name("q0"))
    v = ds.new_version(rid)
    assert ds.batch(rid, v, {"a.txt": b"a"}).status_code == 200
    r = ds.get(f"datasets/{rid}/download")
    assert r.status_code == 404 and "no STAC catalog" in r.json()["detail"]


def test_a_published_catalog_never_changes_and_a_retry_is_harmless(ds, unique_name):
    rid, version = official_ingest(ds, unique_name("once"))
    before = files_of(ds, rid, version)
    fc = official_payload(ds, rid)
    assert put_stac(ds, rid, fc).status_code == 200  # the same PUT again (its answer was lost)
    fc["features"][0]["properties"]["description"] = "changed"
    r = put_stac(ds, rid, fc)
    assert r.status_code == 409 and "new version" in r.json()["detail"]
    assert files_of(ds, rid, version) == before


def test_only_the_owner_puts_a_catalog(ds, unique_name):
    rid = create_stac(ds, unique_name("own"))
    version = ds.new_version(rid)
    upload(ds, rid, version, "B01.tif", ASSET)
    assert put_stac(ds.as_user("mallory"), rid, official_payload(ds, rid)).status_code == 403
    assert put_stac(ds.as_user(None), rid, official_payload(ds, rid)).status_code == 401
    assert put_stac(ds, "nope", official_payload(ds, rid)).status_code == 404
    assert list(files_of(ds, rid, version)) == ["B01.tif"]


# -- hostile PUTs: a clear 4xx, and the version is as before -------------------------


def _asset_href(href: str):
    return lambda fc: fc["features"][2]["properties"]["assets"]["B01"].update(href=href)


def _feature_prop(index: int, **values):
    return lambda fc: fc["features"][index]["properties"].update(values)


def _blob(fc):
    fc["features"][2]["properties"]["properties"]["blob"] = "x" * MAX_DOCUMENT_BYTES


@pytest.mark.parametrize("change, status, detail", [
    (_asset_href("../../etc/passwd"), 422, "asset 'B01': href '../../etc/passwd' is not a file uploaded"),
    (_asset_href("/etc/passwd"), 422, "href '/etc/passwd' is not a file uploaded"),
    (_asset_href("file:///etc/passwd"), 422, "href 'file:///etc/passwd' is not a file uploaded"),
    (_asset_href("{api}datasets/{rid}/download/../../etc/passwd"), 422, "'../../etc/passwd' is not a file of this"),
    (_asset_href("https://example.com/B01.tif"), 422, "not a file uploaded to this dataset"),
    (_feature_prop(2, id="../../evil"), 422, "id '../../evil' must be a non-empty name"),
    (_feature_prop(0, type="Collection"), 422, "exactly one Catalog"),
    (_feature_prop(2, properties=None), 422, "not a valid STAC Feature"),
    (_blob, 422, "more than the 1048576 a STAC document may have"),
])
def test_a_hostile_catalog_is_refused_whole(ds, unique_name, change, status, detail):
    rid = create_stac(ds, unique_name("bad"))
    version = ds.new_version(rid)
    upload(ds, rid, version, "B01.tif", ASSET)
    fc = official_payload(ds, rid)
    change(fc)
    fc = json.loads(json.dumps(fc).replace("{api}", ds.url).replace("{rid}", rid))
    r = put_stac(ds, rid, fc)
    assert r.status_code == status and detail in r.json()["detail"], r.text
    assert r.json()["detail"].startswith("Invalid STAC catalog: ")
    assert list(files_of(ds, rid, version)) == ["B01.tif"]
    assert ds.get(f"datasets/{rid}/download").status_code == 404


@pytest.mark.parametrize("body, status, detail", [
    (b'{"stac": {"type": "FeatureCollection", "features": [', 422, "JSON decode error"),
    (b'{"stac": ["not", "a", "collection"]}', 422, "'stac' must be a GeoJSON FeatureCollection"),
    (b'{"catalog": {}}', 400, '{"stac": <GeoJSON FeatureCollection>}'),
    (b'[1, 2]', 400, '{"stac": <GeoJSON FeatureCollection>}'),
])
def test_a_body_that_is_no_catalog_is_refused(ds, unique_name, body, status, detail):
    rid = create_stac(ds, unique_name("body"))
    version = ds.new_version(rid)
    r = ds.req("PUT", f"datasets/stac/{rid}", data=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status and detail in r.json()["detail"], r.text
    assert files_of(ds, rid, version) == {}


def test_link_cycles_in_a_put_are_not_stored(ds, unique_name, tmp_path):
    """Links are the uploader's and are rewritten: a cycle among them cannot reach the stored tree."""
    rid = create_stac(ds, unique_name("cycle"))
    version = ds.new_version(rid)
    upload(ds, rid, version, "B01.tif", ASSET)
    fc = official_payload(ds, rid)
    collection, item = fc["features"][1]["properties"], fc["features"][2]["properties"]
    collection["links"].append({"rel": "child", "href": "../catalog.json"})
    item["links"].append({"rel": "child", "href": "./scene-0.json"})
    assert put_stac(ds, rid, fc).status_code == 200
    stored = {path: json.loads(ds.download(rid, path).content) for path in files_of(ds, rid, version)
              if path.endswith(".json")}
    assert [link["href"] for link in stored["sentinel/collection.json"]["links"] if link["rel"] == "child"] == []
    assert [link for link in stored["sentinel/scene-0/scene-0.json"]["links"] if link["rel"] == "child"] == []


def test_a_stored_link_cycle_is_a_clear_error_on_download(ds, unique_name):
    """Documents uploaded as plain files (not through S4) are walked within bounds."""
    rid = ds.create(unique_name("loop"))
    version = ds.new_version(rid)
    catalog = {"type": "Catalog", "id": "loop", "stac_version": "1.0.0", "description": "d",
               "links": [{"rel": "child", "href": "./sub/catalog.json"}]}
    sub = dict(catalog, id="sub", links=[{"rel": "child", "href": "../catalog.json"}])
    files = {"catalog.json": json.dumps(catalog).encode(), "sub/catalog.json": json.dumps(sub).encode()}
    assert ds.batch(rid, version, files).status_code == 200
    r = ds.get(f"datasets/{rid}/download")
    assert r.status_code == 409 and "link cycle" in r.json()["detail"], r.text


def test_more_items_than_the_limit_are_refused(ds, unique_name):
    """100,001 items: the body passes the 4 MiB cap of other JSON bodies, the item limit refuses it."""
    rid = create_stac(ds, unique_name("many"))
    version = ds.new_version(rid)
    fc = official_payload(ds, rid)
    fc["features"] = fc["features"][:2] + [
        {"type": "Feature", "properties": {"type": "Feature", "id": f"i{i}"}, "geometry": None}
        for i in range(100_001)]
    r = put_stac(ds, rid, fc)
    assert r.status_code == 422 and "more than 100000 items" in r.json()["detail"], r.text
    assert files_of(ds, rid, version) == {}


def test_a_put_over_the_body_cap_is_413(new_server, tmp_path):
    server = new_server(tmp_path / "root", {"EOTDLFS_MAX_STAC_BODY_BYTES": "2000"})
    server.start()
    try:
        api = Api(server, "datasets", server.token("alice"))
        rid = create_stac(api, "capped")
        api.new_version(rid)
        r = put_stac(api, rid, official_payload(api, rid))
        assert r.status_code == 413 and "larger than 2000 bytes" in r.json()["detail"]
    finally:
        server.stop()


def test_a_catalog_put_into_a_draft_appears_when_it_is_published(ds, unique_name):
    """Drafts as for Q0: the documents are files of the draft, seen by S5 and `quality` once published."""
    name = unique_name("draft")
    rid = ds.create(name)
    version = ds.new_version(rid, draft=True)
    upload(ds, rid, version, "B01.tif", ASSET)
    r = put_stac(ds, rid, official_payload(ds, rid), params={"version": version})
    assert r.status_code == 200 and r.json() == {"dataset_id": rid, "version": version}, r.text
    assert "catalog.json" in files_of(ds, rid, version)
    assert ds.record(name)["quality"] == 0
    assert ds.get(f"datasets/{rid}/download").status_code == 404  # no published version yet
    # asked by number, the draft's catalog is its owner's alone (it used to be anyone's)
    assert ds.get(f"datasets/{rid}/download?version={version}").status_code == 200
    for other in (ds.as_user(None), ds.as_user("bob")):
        r = other.get(f"datasets/{rid}/download?version={version}")
        assert (r.status_code, r.json()) == (404, {"detail": "Dataset version doesn't exist"})
    assert ds.post(f"datasets/{rid}/publish?version={version}").status_code == 200
    assert ds.as_user(None).get(f"datasets/{rid}/download?version={version}").status_code == 200
    assert ds.record(name)["quality"] == 1
    assert [f["properties"]["id"] for f in ds.get(f"datasets/{rid}/download").json()["features"]] == [
        "my-stac-ds", "sentinel", "scene-0", "scene-1"]


def test_a_collection_of_many_items_is_not_a_property_blob(ds, unique_name):
    """A collection's item links grow with its items (100,000 are ~10 MB): only its own fields
    get the 1 MiB cap. 2,000 items with 240-character ids make its links pass 1 MiB."""
    rid = create_stac(ds, unique_name("wide"))
    version = ds.new_version(rid)
    upload(ds, rid, version, "B01.tif", ASSET)
    fc = official_payload(ds, rid)
    item = fc["features"][2]
    fc["features"] = fc["features"][:2]
    for i in range(2000):
        feature = json.loads(json.dumps(item))
        feature["properties"].update(id=f"{i:05d}".ljust(240, "x"), links=[])
        fc["features"].append(feature)
    r = put_stac(ds, rid, fc)
    assert r.status_code == 200, r.text
    assert int(ds.download(rid, "sentinel/collection.json").headers["Content-Length"]) > MAX_DOCUMENT_BYTES
    assert len(ds.get(f"datasets/{rid}/download").json()["features"]) == 2002


def test_a_put_failing_midway_stores_nothing_and_leaves_no_staged_blob(tmp_path, monkeypatch):
    """The disk fills while the documents are staged (injected at the third): the version is as
    before and no temp file of the ones staged before is left."""
    store = Store(tmp_path / "root")
    rid = store.create_stac_record("datasets", "alice", {"name": "half-put"})
    version = store.create_version("datasets", rid, "alice")
    store.ingest_file("datasets", rid, "alice", version, "B01.tif", io.BytesIO(ASSET), sha1(ASSET))
    fc = json.loads(PAYLOAD.read_text().replace("/datasets/ID123/", f"/datasets/{rid}/"))["features"]
    stage, calls = store.blobs.stage, []

    def stage_until_the_disk_is_full(source, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return stage(source, *args, **kwargs)

    monkeypatch.setattr(store.blobs, "stage", stage_until_the_disk_is_full)
    with pytest.raises(OSError):
        store.put_stac("datasets", rid, "alice", {"stac": {"type": "FeatureCollection", "features": fc}})
    assert list(store.blobs.tmp.iterdir()) == []
    assert [f["filename"] for f in store.list_files("datasets", rid, version)] == ["B01.tif"]
