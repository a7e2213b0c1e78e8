"""Bad input is refused with a clear 4xx and nothing is stored: zips, paths, checksums, sizes."""

from __future__ import annotations

import io
import json
import stat
import struct
import zipfile

import pytest
from serverapi import Api, one_answer, sha1


@pytest.fixture
def target(api, unique_name):
    """A record with version 1 holding one file, and a function checking nothing else got in."""
    rid = api.create(unique_name("bad"))
    api.new_version(rid)
    assert api.batch(rid, 1, {"keep": b"keep"}).status_code == 200

    def unchanged():
        assert [f["filename"] for f in api.files(rid)] == ["keep"]
    return rid, unchanged


def _post_zip(api, rid, raw: bytes, checksums: list[str]):
    return api.post(f"{api.kind}/{rid}/batch?version=1", files={"batch": ("b.zip", raw)},
                    data={"checksums": checksums})


def _zip_with(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return buf.getvalue()


@pytest.mark.parametrize("name", ["/abs/x", "../x", "a/../../x", "a/../b", "./a", "a//b", "a\\b",
                                  "..\\..\\x", "a/./b", "d/", "..", ""])
def test_zip_entry_names_refused(api, target, name):
    rid, unchanged = target
    raw = _zip_with([(zipfile.ZipInfo(name), b"evil"), ("ok", b"ok")])
    r = _post_zip(api, rid, raw, [sha1(b"evil"), sha1(b"ok")])
    assert r.status_code == 400, (name, r.text)
    assert "zip entry" in r.json()["detail"]
    unchanged()


def test_zip_entry_with_nul_refused(api, target):
    rid, unchanged = target
    raw = _zip_with([("aXb", b"evil")]).replace(b"aXb", b"a\x00b")
    r = _post_zip(api, rid, raw, [sha1(b"evil")])
    assert r.status_code == 400 and "control character" in r.json()["detail"]
    unchanged()


def test_zip_symlink_refused(api, target):
    rid, unchanged = target
    link = zipfile.ZipInfo("link")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    r = _post_zip(api, rid, _zip_with([("ok", b"ok"), (link, b"/etc/passwd")]), [sha1(b"ok"), sha1(b"/etc/passwd")])
    assert r.status_code == 400 and "symbolic link" in r.json()["detail"]
    unchanged()


def test_zip_duplicates_refused(api, target):
    rid, unchanged = target
    with pytest.warns(UserWarning):
        raw = _zip_with([("dup", b"1"), ("dup", b"2")])
    r = _post_zip(api, rid, raw, [sha1(b"1"), sha1(b"2")])
    assert r.status_code == 400 and "twice" in r.json()["detail"]
    unchanged()


def test_not_a_zip_and_empty_zip(api, target):
    rid, unchanged = target
    assert _post_zip(api, rid, b"PK\x03\x04 this is not a zip", [sha1(b"x")]).status_code == 400
    assert _post_zip(api, rid, _zip_with([]), [sha1(b"x")]).status_code == 400
    unchanged()


@pytest.mark.parametrize("count", [0, 1, 3])
def test_checksum_count_must_match_entries(api, target, count):
    rid, unchanged = target
    files = {"a": b"a", "b": b"b"}
    sums = [sha1(b"a"), sha1(b"b"), sha1(b"c")][:count]
    r = api.batch(rid, 1, files, checksums=sums)
    assert r.status_code in (400, 422), r.text
    if count:
        assert r.json()["detail"] == f"The batch has 2 files but {count} checksums"
    unchanged()


def test_batch_checksum_mismatch_stores_nothing(api, target, repo_server):
    rid, unchanged = target
    blobs_before = sorted(repo_server.blob_store().stored())
    r = api.batch(rid, 1, {"good": b"good-unique-bytes", "bad": b"bad"}, checksums=[sha1(b"good-unique-bytes"),
                                                                                    sha1(b"other")])
    assert (r.status_code, r.json()) == (400, {"detail": "Checksum mismatch."})
    unchanged()
    blobs_after = sorted(repo_server.blob_store().stored())
    assert blobs_after == blobs_before


@pytest.mark.parametrize("checksum", ["", "abc", "g" * 40, sha1(b"x") + "0"])
def test_malformed_checksums(api, target, checksum):
    rid, unchanged = target
    r = api.batch(rid, 1, {"a": b"a"}, checksums=[checksum])
    assert r.status_code in (400, 422)
    unchanged()


def test_zip_bomb_ratio(api, target):
    rid, unchanged = target
    bomb = b"\0" * (20 * 1024 * 1024)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros", bomb)
    assert len(buf.getvalue()) < 100_000
    r = _post_zip(api, rid, buf.getvalue(), [sha1(bomb)])
    assert r.status_code == 413 and "expands more than" in r.json()["detail"]
    unchanged()


def test_declared_sizes_are_not_trusted(api, target):
    rid, unchanged = target
    data = b"0123456789" * 1000
    raw = bytearray(_zip_with([("lie", data)]))
    cd = raw.rfind(b"PK\x01\x02")  # central directory entry: uncompressed size at offset 24
    raw[cd + 24:cd + 28] = (1).to_bytes(4, "little")
    r = _post_zip(api, rid, bytes(raw), [sha1(data)])
    assert r.status_code == 400
    unchanged()


@pytest.mark.parametrize("path", ["../x", "/abs", "a\\b", "a/./b", "a//b", "x/", "a\x01b"])
def test_single_file_path_tricks(api, target, path):
    rid, unchanged = target
    r = api.post(f"{api.kind}/{rid}?version=1", files={"file": (path, b"x")}, data={"checksum": sha1(b"x")})
    assert r.status_code == 400, (path, r.text)
    unchanged()


@pytest.mark.parametrize("path", ["../x", "/abs", "a\\b", "", "a\x00b", "a/../b"])
def test_upload_id_path_tricks(api, target, path):
    rid, _ = target
    r = api.post(f"{api.kind}/{rid}/uploadId", json={"filname": path, "checksum": sha1(b"x")})
    assert r.status_code == 400, (path, r.text)


@pytest.mark.parametrize("path", ["../keep", "/keep", "./keep"])
def test_carry_path_tricks(api, target, path):
    rid, unchanged = target
    api.new_version(rid)
    r = api.carry(rid, 2, {path: sha1(b"keep")})
    assert r.status_code == 400
    assert api.files(rid, 2) == []


def test_caps_from_environment(server_factory, unique_name):
    server = server_factory({"EOTDLFS_MAX_BODY_BYTES": "200000", "EOTDLFS_ZIP_MAX_TOTAL_BYTES": "1000",
                             "EOTDLFS_ZIP_MAX_ENTRIES": "3"})
    api = Api(server, "datasets", server.token("alice"))
    rid = api.create(unique_name("caps"))
    api.new_version(rid)
    # total uncompressed bytes over the cap
    r = api.batch(rid, 1, {"a": b"a" * 600, "b": b"b" * 600})
    assert r.status_code == 413 and "unpacks to more than 1000 bytes" in r.json()["detail"]
    # too many entries
    r = api.batch(rid, 1, {str(i): b"x" for i in range(4)})
    assert r.status_code == 413 and "more than 3 entries" in r.json()["detail"]
    # a body over the cap, announced by Content-Length
    r = api.post(f"datasets/{rid}?version=1", files={"file": ("big", b"z" * 300_000)},
                 data={"checksum": sha1(b"z" * 300_000)})
    assert r.status_code == 413 and "larger than 200000 bytes" in r.json()["detail"]
    # ... and streamed without a Content-Length (chunked)
    r = api.post(f"datasets/{rid}/uploadId", json={"filname": "c", "checksum": sha1(b"c")})
    upload_id = r.json()["upload_id"]
    head = b'--zzz\r\nContent-Disposition: form-data; name="file"; filename="b"\r\n\r\n'
    body = iter([head] + [b"x" * 10_000] * 50)
    r = api.post(f"datasets/chunk/{upload_id}", data=body,
                 headers={"Content-Type": "multipart/form-data; boundary=zzz"})
    assert r.status_code == 413
    assert api.files(rid) == []
    # JSON and url-encoded bodies are parsed in memory: they get a smaller cap
    r = api.post("datasets", json={"name": "x" * 5_000_000, "authors": ["a"], "source": "http://x", "license": "M"})
    assert r.status_code == 413 and f"larger than {4 * 1024 * 1024} bytes" in r.json()["detail"]
    r = api.post(f"datasets/{rid}/files?version=1", data={"filenames": ["a" * 1000] * 900,
                                                          "checksums": [sha1(b"a")] * 900} | {"pad": "p" * 4_200_000})
    assert r.status_code == 413
    # within the caps all is well
    assert api.batch(rid, 1, {"a": b"a" * 400, "b": b"b" * 400}).status_code == 200


def _peak_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_only_stored_and_deflated_entries_are_taken(api, target, method):
    """Python's bzip2 and LZMA readers inflate all the compressed bytes of a read at once, before the
    ratio cap can look: refused by method, whatever the entry holds."""
    rid, unchanged = target
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        zf.writestr("small", b"hello")
    r = _post_zip(api, rid, buf.getvalue(), [sha1(b"hello")])
    assert r.status_code == 400 and "compression method" in r.json()["detail"], r.text
    unchanged()


def test_a_bzip2_bomb_never_reaches_the_servers_memory(server_factory, unique_name):
    """128 MiB of zeros in a ~100-byte bzip2 entry: refused before a byte is inflated (it used to
    be inflated whole in one call, then refused as 413 by the ratio cap)."""
    server = server_factory({"EOTDLFS_ZIP_RATIO_FLOOR_BYTES": str(64 * 1024), "EOTDLFS_ZIP_MAX_RATIO": "50"})
    api = Api(server, "datasets", server.token("alice"))
    rid = api.create(unique_name("bz2bomb"))
    api.new_version(rid)
    bomb = b"\0" * (128 << 20)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_BZIP2) as zf:
        zf.writestr("zeros", bomb)
    assert len(buf.getvalue()) < 1000
    pid = server._proc.pid
    before = _peak_rss_bytes(pid)
    r = _post_zip(api, rid, buf.getvalue(), [sha1(bomb)])
    assert _peak_rss_bytes(pid) - before < 32 << 20
    assert r.status_code == 400 and "compression method" in r.json()["detail"], r.text
    assert api.files(rid) == []


def _central_directory_only(entries: int) -> bytes:
    """A zip of ENTRIES central directory headers (each of a 1-byte name and no data) whose end record
    claims one entry: what a directory walk costs, with no local entries at all."""
    header = struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0) + b"a"
    directory = header * entries
    return directory + struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 1, 1, len(directory), 0, 0)


def test_a_zip_of_countless_entries_is_refused_before_its_directory_is_parsed(server_factory, unique_name):
    """500,000 entries in 23 MB (a 1 GiB body holds 20 million): refused by counting the directory's
    headers, not after zipfile made an object of each (~450 bytes and 10 us of CPU an entry, so a
    1 GiB batch took minutes and GBs before its 413). The end record's count is not trusted."""
    server = server_factory()
    api = Api(server, "datasets", server.token("alice"))
    rid = api.create(unique_name("entries"))
    api.new_version(rid)
    pid = server._proc.pid
    before = _peak_rss_bytes(pid)
    r = _post_zip(api, rid, _central_directory_only(500_000), [sha1(b"")])
    assert _peak_rss_bytes(pid) - before < 64 << 20
    assert r.status_code == 413 and "more than 10000 entries" in r.json()["detail"], r.text
    assert api.files(rid) == []


def test_stac_body_over_its_limit_is_413_naming_it_before_it_is_read(repo_server):
    """S4's JSON is parsed whole (~12 bytes of memory a byte): a body over MAX_STAC_BODY_BYTES
    (128 MiB; it was 512 MiB, several GB of server memory) is refused from its Content-Length."""
    import socket

    length = 128 * 1024 * 1024 + 1
    with socket.create_connection(("127.0.0.1", repo_server.port), timeout=15) as conn:
        conn.sendall(f"PUT /datasets/stac/anything HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"Authorization: Bearer {repo_server.token('alice')}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {length}\r\n\r\n".encode())
        conn.sendall(b'{"stac": ')  # and no more: the answer must not wait for the rest
        answer = one_answer(conn)
    assert answer.startswith(b"HTTP/1.1 413"), answer
    detail = json.loads(answer.split(b"\r\n\r\n", 1)[1])["detail"]
    assert f"larger than {length - 1} bytes (128 MiB, EOTDLFS_MAX_STAC_BODY_BYTES)" in detail, detail
