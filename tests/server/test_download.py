"""Route 9: whole files, HEAD, Range (206/416), strong ETag, and the download counters."""

from __future__ import annotations

import pytest
from serverapi import Api, sha1

DATA = bytes(range(256)) * 40  # 10240 bytes
SIZE = len(DATA)


@pytest.fixture
def blob(api, unique_name):
    rid = api.create(unique_name("dl"))
    api.new_version(rid)
    assert api.batch(rid, 1, {"d/data.bin": DATA, "empty": b""}).status_code == 200
    return rid


def test_whole_file_headers(api, blob):
    r = api.download(blob, "d/data.bin")
    assert r.status_code == 200 and r.content == DATA
    assert r.headers["content-length"] == str(SIZE)
    assert r.headers["etag"] == f'"{sha1(DATA)}"'
    assert r.headers["accept-ranges"] == "bytes"
    assert "content-range" not in r.headers


def test_head(api, blob):
    r = api.req("HEAD", f"{api.kind}/{blob}/download/d/data.bin")
    assert r.status_code == 200 and r.content == b""
    assert r.headers["content-length"] == str(SIZE) and r.headers["etag"] == f'"{sha1(DATA)}"'
    r = api.req("HEAD", f"{api.kind}/{blob}/download/d/data.bin", headers={"Range": "bytes=0-9"})
    assert r.status_code == 206 and r.headers["content-range"] == f"bytes 0-9/{SIZE}"
    assert api.req("HEAD", f"{api.kind}/{blob}/download/nope").status_code == 404


@pytest.mark.parametrize("spec, first, last", [
    ("0-0", 0, 0),                      # first byte
    (f"{SIZE - 1}-{SIZE - 1}", SIZE - 1, SIZE - 1),  # last byte
    ("100-199", 100, 199),
    ("100-", 100, SIZE - 1),            # open-ended
    ("-10", SIZE - 10, SIZE - 1),       # suffix
    (f"-{SIZE + 50}", 0, SIZE - 1),     # suffix longer than the file
    (f"5000-{SIZE + 1000}", 5000, SIZE - 1),  # last beyond EOF is clamped
])
def test_satisfiable_ranges(api, blob, spec, first, last):
    r = api.download(blob, "d/data.bin", headers={"Range": f"bytes={spec}"})
    assert r.status_code == 206
    assert r.content == DATA[first:last + 1]
    assert r.headers["content-range"] == f"bytes {first}-{last}/{SIZE}"
    assert r.headers["content-length"] == str(last - first + 1)
    assert r.headers["etag"] == f'"{sha1(DATA)}"'


@pytest.mark.parametrize("spec", [f"{SIZE}-", f"{SIZE + 10}-{SIZE + 20}", "-0", "20-10"])
def test_unsatisfiable_ranges(api, blob, spec):
    r = api.download(blob, "d/data.bin", headers={"Range": f"bytes={spec}"})
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{SIZE}"
    assert r.json() == {"detail": "Requested range not satisfiable"}


def test_any_range_of_empty_file_is_416(api, blob):
    assert api.download(blob, "empty").content == b""
    for spec in ("0-", "-1", "0-0"):
        r = api.download(blob, "empty", headers={"Range": f"bytes={spec}"})
        assert r.status_code == 416 and r.headers["content-range"] == "bytes */0"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-5", "bytes=abc", "bytes=-", "bytes=1-2-3"])
def test_multiple_or_malformed_ranges_get_whole_file(api, blob, header):
    r = api.download(blob, "d/data.bin", headers={"Range": header})
    assert r.status_code == 200 and r.content == DATA


def test_if_range(api, blob):
    etag = f'"{sha1(DATA)}"'
    r = api.download(blob, "d/data.bin", headers={"Range": "bytes=0-3", "If-Range": etag})
    assert r.status_code == 206 and r.content == DATA[:4]
    r = api.download(blob, "d/data.bin", headers={"Range": "bytes=0-3", "If-Range": '"0000"'})
    assert r.status_code == 200 and r.content == DATA


def test_missing_things_are_404(api, blob):
    for path, version in (("nope", None), ("d/data.bin", 2), ("d", None), ("d/", None)):
        r = api.download(blob, path, version)
        assert (r.status_code, r.json()) == (404, {"detail": "File doesn't exist"}), path
    r = api.download("0123456789abcdef01234567", "d/data.bin")
    assert (r.status_code, r.json()) == (404, {"detail": f"{api.noun.capitalize()} doesn't exist"})


def test_path_tricks_never_reach_the_disk(api, blob, repo_server):
    for path in ("..%2F..%2Fsecret", "%2Fetc%2Fpasswd", "d%2F..%2F..%2Frepository.db", "d/data.bin%00"):
        r = api.get(f"{api.kind}/{blob}/download/{path}")
        assert r.status_code == 404, path
        assert r.json() == {"detail": "File doesn't exist"}


def test_stats_count_bytes_sent_and_downloads(api, blob, repo_server):
    before = repo_server.stats()
    api.download(blob, "d/data.bin", headers={"Range": "bytes=0-99"})
    api.download(blob, "d/data.bin")
    api.req("HEAD", f"{api.kind}/{blob}/download/d/data.bin")
    after = repo_server.stats()
    assert after["bytes_sent"] - before["bytes_sent"] == 100 + SIZE
    assert after["downloads"] - before["downloads"] == 2


def test_large_file_streams_in_ranges(api, unique_name):
    data = bytes(range(251)) * 20000  # ~5 MB, several 1 MiB chunks
    rid = api.create(unique_name("large"))
    api.new_version(rid)
    api.batch(rid, 1, {"l.bin": data})
    assert api.download(rid, "l.bin").content == data
    r = api.download(rid, "l.bin", headers={"Range": "bytes=1048570-3145740"})
    assert r.status_code == 206 and r.content == data[1048570:3145741]


@pytest.mark.parametrize("query, status", [("version=abc", 422), ("version=", 422), ("version=1.5", 422),
                                           ("version=99999999999999999999", 400), ("version=-1", 404),
                                           ("version=0", 404)])
def test_bad_file_version_query(api, blob, query, status):
    r = api.get(f"{api.kind}/{blob}/download/d/data.bin?{query}")
    assert r.status_code == status
    assert isinstance(r.json()["detail"], str)


def test_explicit_file_version_and_other_params(api, blob):
    r = api.get(f"{api.kind}/{blob}/download/d/data.bin?foo=bar&version=1")
    assert r.status_code == 200 and r.content == DATA


def test_path_with_spaces_and_unicode(api, unique_name):
    rid = api.create(unique_name("uni"))
    api.new_version(rid)
    files = {"a b/ç ü.txt": b"unicode", "x%20y": b"percent", "q?.txt": b"question"}
    assert api.batch(rid, 1, files).status_code == 200
    from urllib.parse import quote

    for path, data in files.items():
        r = api.get(f"{api.kind}/{rid}/download/{quote(path)}")
        assert r.status_code == 200 and r.content == data, path


def test_content_disposition_is_a_safe_header(api, unique_name):
    from urllib.parse import quote

    rid = api.create(unique_name("cd"))
    api.new_version(rid)
    path = 'we"ird né.txt'
    assert api.batch(rid, 1, {path: b"x"}).status_code == 200
    r = api.get(f"{api.kind}/{rid}/download/{quote(path)}")
    assert r.status_code == 200 and r.content == b"x"
    assert r.headers["content-disposition"] == 'attachment; filename="we_ird n_.txt"'


def test_head_errors_have_no_body(api, blob):
    r = api.req("HEAD", f"{api.kind}/{blob}/download/d/data.bin", headers={"Range": f"bytes={SIZE}-"})
    assert r.status_code == 416 and r.content == b"" and r.headers["content-range"] == f"bytes */{SIZE}"
    r = api.req("HEAD", f"{api.kind}/{blob}/download/missing")
    assert r.status_code == 404 and r.content == b""


class _ThreadServer:
    """What `Api` needs of a server started by `start_in_thread`: its URL and tokens."""

    def __init__(self, running, root):
        self.url, self.root = running.url, root

    def token(self, user: str) -> str:
        from eotdlfs.server.auth import issue_token

        return issue_token(self.root, user)


def test_a_published_file_version_is_looked_up_once_a_drafts_every_time(tmp_path):
    # What a mount hammers: ranges of published file versions, which never change (a published
    # version is never discarded). A draft's file version can be discarded, so it is asked every
    # time and a discarded one is 404 at once. The spy only counts the server's database queries.
    from eotdlfs.server.run import start_in_thread

    running = start_in_thread(tmp_path / "root")
    try:
        db = running.server.config.app.state.store.db
        real_query, asked = db.query, []
        db.query = lambda: (asked.append(1), real_query())[1]
        server = _ThreadServer(running, tmp_path / "root")
        api = Api(server, "datasets", server.token("alice"))
        rid = api.create("once")
        api.new_version(rid)
        api.batch(rid, 1, {"a": DATA})
        api.new_version(rid, draft=True)
        api.batch(rid, 2, {"a": b"draft bytes"})

        def reads(file_version: int | None, count: int = 3) -> list[tuple[int, bytes]]:
            asked.clear()
            return [(r.status_code, r.content) for r in (
                api.download(rid, "a", file_version, headers={"Range": f"bytes={i}-{i + 9}"}) for i in range(count))]

        assert reads(1) == [(206, DATA[i:i + 10]) for i in range(3)] and len(asked) == 1
        assert reads(1) == [(206, DATA[i:i + 10]) for i in range(3)] and asked == []
        assert reads(2) == [(206, b"draft bytes"[i:i + 10]) for i in range(3)] and len(asked) == 3
        assert reads(None) == [(206, b"draft bytes"[i:i + 10]) for i in range(3)] and len(asked) == 3
        assert api.req("DELETE", f"datasets/{rid}/version/2").status_code == 200
        assert reads(2, 1) == [(404, b'{"detail":"File doesn\'t exist"}')]
        assert reads(None, 1) == [(206, DATA[:10])]
    finally:
        running.stop()


def test_a_failing_download_is_answered_like_any_route(tmp_path):
    # Route 9 is answered in front of FastAPI's error handlers; an unexpected error (here a blob
    # gone from the disk) must still be the JSON 500 every other route gives, not a bare text one.
    from eotdlfs.server.run import start_in_thread

    running = start_in_thread(tmp_path / "root")
    try:
        server = _ThreadServer(running, tmp_path / "root")
        api = Api(server, "datasets", server.token("alice"))
        rid = api.create("gone")
        api.new_version(rid)
        api.batch(rid, 1, {"a": DATA})
        (tmp_path / "root" / "blobs" / sha1(DATA)[:2] / sha1(DATA)[2:]).unlink()
        for file_version in (1, None):
            r = api.download(rid, "a", file_version, headers={"Range": "bytes=0-9"})
            assert (r.status_code, r.json()) == (500, {"detail": "Internal server error (FileNotFoundError)"})
    finally:
        running.stop()
