"""The draft extension: `?draft=true`, publish, discard; drafts are hidden from `versions`."""

from __future__ import annotations

import pytest
from serverapi import Api, sha1

from eotdlfs.server.db import IN_A_VERSION, PUBLISHED
from eotdlfs.server.stac import STAC_ROOT_ROWS
from eotdlfs.server.store import Store


def test_draft_is_hidden_until_published(api, unique_name):
    name = unique_name("draft")
    rid = api.create(name)
    assert api.new_version(rid) == 1
    api.batch(rid, 1, {"a": b"1"})
    assert api.new_version(rid, draft=True) == 2
    assert api.batch(rid, 2, {"a": b"2", "b": b"b"}).status_code == 200
    record = api.record(name)
    assert [v["version_id"] for v in record["versions"]] == [1]
    assert [(d["version_id"], d["size"]) for d in record["drafts"]] == [(2, 2)]
    assert {f["filename"] for f in api.files(rid, 2)} == {"a", "b"}  # drafts are readable by number
    r = api.post(f"{api.kind}/{rid}/publish?version=2")
    assert (r.status_code, r.json()) == (200, {f"{api.noun}_id": rid, "version": 2})
    record = api.record(name)
    assert [v["version_id"] for v in record["versions"]] == [1, 2] and record["drafts"] == []
    # publishing again is fine (idempotent), and so is publishing a version never drafted
    assert api.post(f"{api.kind}/{rid}/publish?version=2").status_code == 200
    assert api.post(f"{api.kind}/{rid}/publish?version=1").status_code == 200


def test_version_numbers_count_drafts(api, unique_name):
    rid = api.create(unique_name("cnt"))
    assert api.new_version(rid, draft=True) == 1
    assert api.new_version(rid) == 2
    assert api.new_version(rid, draft=True) == 3


def test_discard_draft_removes_its_files(api, unique_name):
    name = unique_name("disc")
    rid = api.create(name)
    api.new_version(rid)
    api.batch(rid, 1, {"a": b"1"})
    api.new_version(rid, draft=True)
    api.batch(rid, 2, {"a": b"2", "only-draft": b"x"})
    r = api.req("DELETE", f"{api.kind}/{rid}/version/2")
    assert (r.status_code, r.json()) == (200, {f"{api.noun}_id": rid, "version": 2})
    record = api.record(name)
    assert record["drafts"] == [] and [v["version_id"] for v in record["versions"]] == [1]
    assert api.files(rid) == [{"filename": "a", "version": 1, "checksum": sha1(b"1"), "size": 1}]
    assert api.download(rid, "a").content == b"1"
    assert api.download(rid, "only-draft").status_code == 404
    r = api.get(f"{api.kind}/{rid}/files?version=2")
    assert r.status_code == 404
    assert api.new_version(rid) == 2  # the number is free again


def test_discard_errors(api, unique_name):
    rid = api.create(unique_name("discerr"))
    api.new_version(rid)
    r = api.req("DELETE", f"{api.kind}/{rid}/version/1")
    assert r.status_code == 404 and "not a draft" in r.json()["detail"]
    r = api.req("DELETE", f"{api.kind}/{rid}/version/9")
    assert (r.status_code, r.json()) == (404, {"detail": f"{api.noun.capitalize()} version doesn't exist"})
    r = api.post(f"{api.kind}/{rid}/publish?version=9")
    assert (r.status_code, r.json()) == (404, {"detail": f"{api.noun.capitalize()} version doesn't exist"})
    r = api.post(f"{api.kind}/{rid}/publish")
    assert r.status_code == 422


def test_multipart_into_draft(api, unique_name):
    import hashlib

    rid = api.create(unique_name("dmp"))
    api.new_version(rid, draft=True)
    data = b"m" * 1000
    up = api.post(f"{api.kind}/{rid}/uploadId", json={"filname": "m", "checksum": sha1(data)}).json()
    api.post(f"{api.kind}/chunk/{up['upload_id']}", files={"file": ("b", data)},
             data={"part_number": 1, "checksum": hashlib.md5(data).hexdigest()})
    assert api.post(f"{api.kind}/complete/{up['upload_id']}?version=1").status_code == 200
    api.new_version(rid, draft=True)
    assert api.carry(rid, 2, {"m": sha1(data)}).status_code == 200
    assert [f["filename"] for f in api.files(rid, 2)] == ["m"]


def test_publish_with_base_is_a_compare_and_swap(api, unique_name):
    """`base=M`: publish only if M is still the latest published version (0: none); else 409, nothing published."""
    name = unique_name("cas")
    rid = api.create(name)
    assert api.new_version(rid, draft=True) == 1
    assert api.new_version(rid, draft=True) == 2  # two writers' drafts, both based on no version
    api.batch(rid, 1, {"a": b"first"})
    api.batch(rid, 2, {"a": b"second"})
    assert api.post(f"{api.kind}/{rid}/publish?version=2&base=0").status_code == 200
    r = api.post(f"{api.kind}/{rid}/publish?version=1&base=0")
    assert (r.status_code, r.json()) == (409, {"detail": f"{api.noun.capitalize()} version 2 was published"
                                                         " meanwhile (this draft was based on version 0)"})
    record = api.record(name)
    assert [v["version_id"] for v in record["versions"]] == [2] and [d["version_id"] for d in record["drafts"]] == [1]
    # a retried publish whose answer was lost is still fine; so is a base that is the latest
    assert api.post(f"{api.kind}/{rid}/publish?version=2&base=0").status_code == 200
    assert api.new_version(rid, draft=True) == 3
    assert api.post(f"{api.kind}/{rid}/publish?version=3&base=2").status_code == 200
    assert [v["version_id"] for v in api.record(name)["versions"]] == [2, 3]


def test_a_draft_is_seen_by_its_owner_alone(api, unique_name):
    """Until published, a draft's files are its owner's: to anyone else (no credentials, bad ones, another
    user) the draft and the file versions only it holds do not exist, on every read route, and the latest
    file version of a path is the latest published one. They used to be served to anyone."""
    rid = api.create(unique_name("priv"))
    api.new_version(rid)
    api.batch(rid, 1, {"pub": b"published"})
    api.new_version(rid, draft=True)
    api.batch(rid, 2, {"pub": b"secret draft", "only-draft": b"secret"})
    k = api.kind
    published = [{"filename": "pub", "version": 1, "checksum": sha1(b"published"), "size": 9}]
    for other in (api.as_user(None), api.as_user("bob"), Api(api.server, k, "junk")):
        assert other.get(f"{k}/{rid}/files?version=2").status_code == 404
        assert other.files(rid) == published
        assert other.files(rid, 1) == published
        assert other.get(f"{k}/{rid}/files?path=only-draft").json() == []  # a mount's lookup
        assert other.download(rid, "pub").content == b"published"
        small_range = {"Range": "bytes=0-3"}  # answered below ASGI by the range protocol
        assert other.download(rid, "pub", headers=small_range).content == b"publ"
        assert other.download(rid, "only-draft", 1, headers=small_range).status_code == 404
        assert other.download(rid, "pub", 2, headers=small_range).status_code == 404
        assert other.req("HEAD", f"{k}/{rid}/download/pub").headers["content-length"] == "9"
        for path, file_version in (("pub", 2), ("only-draft", 1), ("only-draft", None)):
            assert other.download(rid, path, file_version).status_code == 404
            assert other.req("HEAD", f"{k}/{rid}/download/{path}").status_code == (200 if path == "pub" else 404)
        r = other.post(f"{k}/{rid}/contents", json={"files": [["pub", 1], ["only-draft", 1]]})
        assert (r.status_code, r.json()) == (404, {"detail": "File doesn't exist"})
    # the owner sees it all
    assert {f["filename"] for f in api.files(rid, 2)} == {"pub", "only-draft"}
    assert api.download(rid, "pub").content == b"secret draft"
    assert api.download(rid, "only-draft", 1).content == b"secret"
    assert api.download(rid, "only-draft", 1, headers={"Range": "bytes=0-3"}).content == b"secr"
    assert api.download(rid, "pub", headers={"Range": "bytes=0-3"}).content == b"secr"
    assert api.post(f"{k}/{rid}/contents", json={"files": [["only-draft", 1]]}).content == b"secret"
    # published, it is everyone's
    assert api.post(f"{k}/{rid}/publish?version=2").status_code == 200
    anonymous = api.as_user(None)
    assert {f["filename"] for f in anonymous.files(rid, 2)} == {"pub", "only-draft"}
    assert anonymous.download(rid, "pub").content == b"secret draft"
    assert anonymous.download(rid, "only-draft", 1).content == b"secret"


@pytest.mark.parametrize("sql, params", [
    (f"SELECT fv.path FROM file_versions fv WHERE fv.record_id = ? AND {PUBLISHED}", ("r",)),
    (f"DELETE FROM file_versions AS fv WHERE fv.record_id = ? AND NOT {IN_A_VERSION}", ("r",)),
    (STAC_ROOT_ROWS.format(records="?,?", versions="?,?"), ("r", "s", 1, 2, "catalog.json")),
], ids=["published-check", "discard-sweep", "stac-records-of-a-listing"])
def test_version_files_is_looked_up_by_its_whole_key(tmp_path, sql, params):
    """Whether a file version is published (every download, every listing without a version), the
    sweep of a discarded draft's file versions, and which records of a listing are STAC, look up
    (record, version, path) in version_files: searched by the record alone, they read all of a
    record's rows per file: 0.5 ms per download, 6 s to list a record of 10,000 files, 4.3 s under
    the write lock to discard a draft of one with 6 versions, and every file row of every record
    listed on each `GET datasets`."""
    store = Store(tmp_path / "root")
    with store.db.read() as conn:
        plan = [row["detail"] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
    searches = [step for step in plan if " vf " in f" {step} " or "version_files" in step]
    assert searches and all("version=? AND path=?" in step for step in searches), plan
