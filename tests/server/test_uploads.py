"""Routes 10-12: multipart uploads, resuming, and their errors."""

from __future__ import annotations

import hashlib
import zlib

import pytest
from serverapi import Api, sha1

PART = 64 * 1024


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _start(api, rid, path, data):
    return api.post(f"{api.kind}/{rid}/uploadId", json={"filname": path, "checksum": sha1(data)})


def _chunk(api, upload_id, part, data, checksum=None):
    return api.post(f"{api.kind}/chunk/{upload_id}", files={"file": ("blob", data)},
                    data={"part_number": part, "checksum": checksum or _md5(data)})


def _upload_all(api, upload_id, data, skip=()):
    for i in range(0, len(data), PART):
        part = i // PART + 1
        if part not in skip:
            r = _chunk(api, upload_id, part, data[i:i + PART])
            assert r.status_code == 200, r.text
            assert r.json() == {"message": "Chunk uploaded"}


@pytest.fixture
def record(api, unique_name):
    name = unique_name("up")
    rid = api.create(name)
    api.new_version(rid)
    return name, rid


def test_upload_complete(api, record, repo_server):
    name, rid = record
    data = bytes(range(256)) * 1000  # 4 parts
    before = repo_server.stats()["uploads"]
    r = _start(api, rid, "big/file.bin", data)
    assert r.status_code == 200, r.text
    upload_id = r.json()["upload_id"]
    assert r.json()["parts"] == []
    _upload_all(api, upload_id, data)
    r = api.post(f"{api.kind}/complete/{upload_id}?version=1")
    assert r.status_code == 200, r.text
    assert r.json()[f"{api.noun}_id"] == rid and r.json()["filename"] == "big/file.bin"
    assert api.files(rid, 1) == [{"filename": "big/file.bin", "version": 1, "checksum": sha1(data),
                                  "size": len(data)}]
    assert api.download(rid, "big/file.bin").content == data
    after = repo_server.stats()["uploads"]
    assert after["chunk"] - before["chunk"] == 4 and after["complete"] - before["complete"] == 1
    # the upload is gone once complete
    assert api.post(f"{api.kind}/complete/{upload_id}?version=1").json() == {"detail": "Upload Id not found."}
    assert repo_server.blob_store().parts(upload_id) == []


def test_upload_resumes_with_received_parts(api, record):
    _, rid = record
    data = b"r" * (3 * PART + 5)
    upload_id = _start(api, rid, "resume.bin", data).json()["upload_id"]
    _upload_all(api, upload_id, data, skip={2, 4})
    again = _start(api, rid, "resume.bin", data).json()
    assert again == {"upload_id": upload_id, "parts": [1, 3]}
    _upload_all(api, upload_id, data, skip={1, 3})
    assert api.post(f"{api.kind}/complete/{upload_id}?version=1").status_code == 200
    assert api.download(rid, "resume.bin").content == data


def test_upload_with_other_checksum_starts_over(api, record):
    _, rid = record
    upload_id = _start(api, rid, "x.bin", b"one").json()["upload_id"]
    assert _chunk(api, upload_id, 1, b"one").status_code == 200
    other = _start(api, rid, "x.bin", b"two").json()
    assert other["upload_id"] != upload_id and other["parts"] == []
    assert _chunk(api, upload_id, 1, b"one").json() == {"detail": "Upload Id not found."}


def test_upload_of_existing_file_is_409(api, record):
    _, rid = record
    api.batch(rid, 1, {"same.bin": b"same"})
    r = _start(api, rid, "same.bin", b"same")
    assert (r.status_code, r.json()) == (409, {"detail": "File already exists"})
    r = _start(api, rid, "same.bin", b"changed")  # a new file version is fine
    assert r.status_code == 200


def test_chunk_md5_mismatch_keeps_nothing(api, record, repo_server):
    _, rid = record
    upload_id = _start(api, rid, "m.bin", b"abc").json()["upload_id"]
    r = _chunk(api, upload_id, 1, b"abc", checksum=_md5(b"abd"))
    assert (r.status_code, r.json()) == (400, {"detail": "Checksum mismatch."})
    assert _start(api, rid, "m.bin", b"abc").json()["parts"] == []
    store = repo_server.blob_store()
    assert store.parts(upload_id) == [] and [x for x in store.leftovers({upload_id}) if upload_id in x] == []


@pytest.mark.parametrize("part", [0, -1, 10001])
def test_bad_part_numbers(api, record, part):
    _, rid = record
    upload_id = _start(api, rid, "p.bin", b"abc").json()["upload_id"]
    r = _chunk(api, upload_id, part, b"abc")
    assert r.status_code == 400
    assert "part_number" in r.json()["detail"]
    assert _start(api, rid, "p.bin", b"abc").json()["parts"] == []


def test_part_number_not_a_number(api, record):
    _, rid = record
    upload_id = _start(api, rid, "p2.bin", b"abc").json()["upload_id"]
    r = _chunk(api, upload_id, "one", b"abc")
    assert r.status_code == 422 and isinstance(r.json()["detail"], str)


@pytest.mark.parametrize("upload_id", ["0" * 32, "nothex", "A" * 32, "a" * 64, "..%2Esecret"])
def test_unknown_upload_ids(api, upload_id):
    r = _chunk(api, upload_id, 1, b"abc")
    assert (r.status_code, r.json()) == (404, {"detail": "Upload Id not found."})
    r = api.post(f"{api.kind}/complete/{upload_id}?version=1")
    assert (r.status_code, r.json()) == (404, {"detail": "Upload Id not found."})


def test_upload_id_of_other_kind_is_unknown(api, record):
    _, rid = record
    upload_id = _start(api, rid, "k.bin", b"abc").json()["upload_id"]
    other = api.of_kind("models" if api.kind == "datasets" else "datasets")
    assert _chunk(other, upload_id, 1, b"abc").json() == {"detail": "Upload Id not found."}


def test_complete_with_wrong_bytes_is_checksum_mismatch(api, record):
    _, rid = record
    upload_id = _start(api, rid, "w.bin", b"expected").json()["upload_id"]
    assert _chunk(api, upload_id, 1, b"something else").status_code == 200
    r = api.post(f"{api.kind}/complete/{upload_id}?version=1")
    assert (r.status_code, r.json()) == (400, {"detail": "Checksum mismatch."})
    assert api.files(rid) == []
    # the bad upload is dropped, so a retry starts clean
    assert _start(api, rid, "w.bin", b"expected").json()["parts"] == []


def test_complete_with_missing_parts(api, record):
    _, rid = record
    data = b"q" * (3 * PART)
    upload_id = _start(api, rid, "gap.bin", data).json()["upload_id"]
    _upload_all(api, upload_id, data, skip={2})
    r = api.post(f"{api.kind}/complete/{upload_id}?version=1")
    assert (r.status_code, r.json()) == (400, {"detail": "Missing parts: 2"})
    empty = _start(api, rid, "none.bin", b"zz").json()["upload_id"]
    assert api.post(f"{api.kind}/complete/{empty}?version=1").status_code == 400
    assert api.files(rid) == []


def test_complete_into_missing_version(api, record):
    _, rid = record
    upload_id = _start(api, rid, "v.bin", b"abc").json()["upload_id"]
    _chunk(api, upload_id, 1, b"abc")
    for query in ("?version=7", ""):
        r = api.post(f"{api.kind}/complete/{upload_id}{query}")
        assert (r.status_code, r.json()) == (404, {"detail": f"{api.noun.capitalize()} version doesn't exist"})
    assert api.post(f"{api.kind}/complete/{upload_id}?version=1").status_code == 200


def test_upload_id_bad_body(api, record):
    _, rid = record
    r = api.post(f"{api.kind}/{rid}/uploadId", json={"filname": "a.bin", "checksum": "nope"})
    assert r.status_code == 400
    r = api.post(f"{api.kind}/{rid}/uploadId", json={"checksum": sha1(b"x")})
    assert r.status_code == 400
    r = api.post(f"{api.kind}/0123456789abcdef01234567/uploadId", json={"filname": "a", "checksum": sha1(b"x")})
    assert (r.status_code, r.json()) == (404, {"detail": f"{api.noun.capitalize()} doesn't exist"})


def test_deflated_and_zero_parts_are_decoded_and_checked(api, record):
    """Our route 11 extension (a sparse file's holes cross the wire as sizes or deflated): the MD5 is of the
    decoded part, the SHA-1 of the whole file is checked as for any upload."""
    name, rid = record
    zeros, tail = bytes(PART), b"tail" * 100
    data = zeros * 3 + tail
    upload_id = _start(api, rid, "sparse.bin", data).json()["upload_id"]
    for part, chunk, encoding in ((1, zeros, "zeros"), (2, zeros, "deflate"), (3, zeros, "zeros"), (4, tail, "deflate")):
        body = b"" if encoding == "zeros" else zlib.compress(chunk)
        r = api.post(f"{api.kind}/chunk/{upload_id}", files={"file": ("blob", body)},
                     data={"part_number": part, "checksum": _md5(chunk), "encoding": encoding, "size": len(chunk)})
        assert r.status_code == 200, r.text
    r = api.post(f"{api.kind}/complete/{upload_id}?version=1")
    assert r.status_code == 200, r.text
    assert api.download(rid, "sparse.bin").content == data


@pytest.mark.parametrize("body, encoding, status, says", [
    (zlib.compress(b"x" * PART), "gzip", 400, "encoding 'gzip' is not one of deflate, zeros"),
    (zlib.compress(bytes(range(256)) * 4)[:-20], "deflate", 400, "ends before its zlib stream does"),
    (b"not a zlib stream", "deflate", 400, "damaged"),
    (zlib.compress(bytes(3000)), "deflate", 413, "inflates to more than 2000 bytes"),
    (b"", "zeros", 400, "Checksum mismatch."),  # the MD5 is of 64 KiB of "x", not of zeros
])
def test_bad_deflated_parts_keep_nothing(server_factory, body, encoding, status, says):
    server = server_factory(env={"EOTDLFS_MAX_BODY_BYTES": "2000"})
    api = Api(server, "datasets", server.token("alice"))
    rid = api.create("deflated")
    api.new_version(rid)
    upload_id = _start(api, rid, "f.bin", b"x" * PART).json()["upload_id"]
    r = api.post(f"{api.kind}/chunk/{upload_id}", files={"file": ("blob", body)},
                 data={"part_number": 1, "checksum": _md5(b"x" * PART), "encoding": encoding, "size": 1000})
    assert r.status_code == status and says in r.json()["detail"], r.text
    assert server.blob_store().parts(upload_id) == []


def test_concurrent_completes_store_once_and_losers_get_404(api, record):
    """The losers of concurrent completes get what a complete after the first gets: 404, never
    'No parts were uploaded' or 'Missing parts' from seeing the winner drop the parts."""
    from concurrent.futures import ThreadPoolExecutor

    _, rid = record
    data = bytes(range(256)) * (32 * 1024)  # 8 MiB: long enough an assembly for completes to overlap
    big_part = 1024 * 1024
    upload_id = _start(api, rid, "race.bin", data).json()["upload_id"]
    for i in range(0, len(data), big_part):
        assert _chunk(api, upload_id, i // big_part + 1, data[i:i + big_part]).status_code == 200
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: api.post(f"{api.kind}/complete/{upload_id}?version=1"), range(8)))
    codes = sorted((r.status_code, r.json().get("detail")) for r in answers)
    assert codes == [(200, None)] + [(404, "Upload Id not found.")] * 7, codes
    assert api.files(rid, 1) == [{"filename": "race.bin", "version": 1, "checksum": sha1(data), "size": len(data)}]


def test_an_upload_left_unfinished_is_dropped_while_the_server_runs(server_factory, unique_name):
    """Its row and parts go once older than EOTDLFS_UPLOAD_TTL_S (a week by default), looked at every
    half of it at most; before, only a restart dropped them, so a server that ran on kept every
    abandoned upload's parts for good."""
    import time

    server = server_factory({"EOTDLFS_UPLOAD_TTL_S": "2"})
    api = Api(server, "datasets", server.token("alice"))
    rid = api.create(unique_name("ttl"))
    upload_id = _start(api, rid, "big.bin", b"x" * PART).json()["upload_id"]
    assert _chunk(api, upload_id, 1, b"x" * PART).status_code == 200
    store = server.blob_store()
    assert store.parts(upload_id) == [1]
    deadline = time.monotonic() + 60
    while store.parts(upload_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert store.parts(upload_id) == []
    assert _chunk(api, upload_id, 2, b"x" * PART).json() == {"detail": "Upload Id not found."}
    report = server.fsck()
    assert report.problems == [] and report.orphans == []


def test_a_user_may_keep_only_so_many_uploads_open(server_factory):
    """Each open upload may keep up to max_parts parts on disk until it expires; with no cap on
    their number one token could fill the disk with parts that are never completed."""
    server = server_factory({"EOTDLFS_MAX_OPEN_UPLOADS": "2"})
    alice, bob = (Api(server, "datasets", server.token(user)) for user in ("alice", "bob"))
    rid = alice.create("capped")
    alice.new_version(rid)
    first, second = (_start(alice, rid, f"f{i}.bin", bytes([i]) * PART).json()["upload_id"] for i in (1, 2))
    refused = _start(alice, rid, "f3.bin", b"3" * PART)
    assert refused.status_code == 429, refused.text
    assert "2 multipart uploads started and not completed" in refused.json()["detail"]
    assert "EOTDLFS_MAX_OPEN_UPLOADS" in refused.json()["detail"]
    again = _start(alice, rid, "f1.bin", b"\x01" * PART)  # resuming one is no new upload
    assert again.status_code == 200 and again.json()["upload_id"] == first
    bob_rid = bob.create("bobs-own")
    bob.new_version(bob_rid)
    assert _start(bob, bob_rid, "f.bin", b"b" * PART).status_code == 200  # the cap is per user
    _upload_all(alice, second, bytes([2]) * PART)
    assert alice.post(f"{alice.kind}/complete/{second}?version=1").status_code == 200
    assert _start(alice, rid, "f3.bin", b"3" * PART).status_code == 200  # a completed one frees its place
