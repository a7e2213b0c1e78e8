"""The official client's happy path on both kinds: create, version, batch, carry, list, download."""

from __future__ import annotations

from serverapi import sha1


def test_create_version_batch_download(api, unique_name):
    name = unique_name("smoke")
    rid = api.create(name)
    assert api.new_version(rid) == 1
    r = api.batch(rid, 1, {"a.txt": b"hello", "d/b.bin": b"x" * 1000})
    assert r.status_code == 200, r.text
    assert r.json()[f"{api.noun}_name"] == name
    assert r.json()["filenames"] == ["a.txt", "d/b.bin"]
    assert api.files(rid, 1) == [
        {"filename": "a.txt", "version": 1, "checksum": sha1(b"hello"), "size": 5},
        {"filename": "d/b.bin", "version": 1, "checksum": sha1(b"x" * 1000), "size": 1000},
    ]
    assert api.download(rid, "d/b.bin").content == b"x" * 1000
    assert api.new_version(rid) == 2
    assert api.carry(rid, 2, {"a.txt": sha1(b"hello")}).status_code == 200
    assert [f["filename"] for f in api.files(rid, 2)] == ["a.txt"]
    record = api.record(name)
    assert [(v["version_id"], v["size"]) for v in record["versions"]] == [(1, 1005), (2, 5)]
