"""Hostile input to the server: zip-slip, zip bombs, huge headers, odd Ranges, path traversal, bad names.

Every request here must be refused with a 4xx (or, for a Range the RFC says to ignore,
answered correctly), never a 5xx, and leave the repository exactly as it was (same rows,
same stored files) and passing fsck. The server runs with small caps so bombs are cheap.
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
import struct
import tempfile
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from reliability import rawhttp
from reliability.conftest import assert_fsck_ok, repository_state

MiB = 1024 * 1024
TIGHT_LIMITS = {
    "EOTDLFS_MAX_BODY_BYTES": str(8 * MiB),
    "EOTDLFS_ZIP_MAX_TOTAL_BYTES": str(4 * MiB),
    "EOTDLFS_ZIP_MAX_ENTRIES": "100",
    "EOTDLFS_ZIP_MAX_RATIO": "50",
    "EOTDLFS_ZIP_RATIO_FLOOR_BYTES": str(64 * 1024),
    "EOTDLFS_HEAD_TIMEOUT_S": "3",
}
HEAD_TIMEOUT_S = 3
CONTENT = bytes(range(256)) * 40  # 10 KiB, the one file of the seeded dataset


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def zip_bytes(entries: list[tuple[str | zipfile.ZipInfo, bytes]], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are the point of one case
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()


def lie_about_size(data: bytes, declared: int) -> bytes:
    """DATA (a one-entry zip) with the uncompressed size in both headers replaced by DECLARED."""
    out = bytearray(data)
    local, central = out.find(b"PK\x03\x04"), out.find(b"PK\x01\x02")
    struct.pack_into("<I", out, local + 22, declared)
    struct.pack_into("<I", out, central + 24, declared)
    return bytes(out)


def symlink_entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (0o120777 << 16)
    return info


@pytest.fixture(scope="module")
def tight(server_class: type) -> Iterator["Target"]:
    with tempfile.TemporaryDirectory(prefix="eotdlfs-hostile-") as tmp:
        server = server_class(Path(tmp) / "root", env=TIGHT_LIMITS)
        try:
            server.start()
            yield Target(server)
        finally:
            server.stop()


class Target:
    """The tight server with one dataset (v1 = 'data/file.bin'), an open draft v2, and alice's token."""

    def __init__(self, server: Any):
        self.server, self.url = server, server.url
        self.auth = {"Authorization": f"Bearer {server.token('alice')}"}
        body = {"name": "hostile-set", "authors": ["a"], "license": "MIT", "source": "http://example.com"}
        self.rid = self.post("datasets", json=body).json()["dataset_id"]
        self.post(f"datasets/version/{self.rid}")
        r = self.post(f"datasets/{self.rid}?version=1", files={"file": ("data/file.bin", CONTENT)},
                      data={"checksum": sha1(CONTENT)})
        assert r.status_code == 200, r.text
        self.post(f"datasets/version/{self.rid}?draft=true")
        self.upload_id = self.post(f"datasets/{self.rid}/uploadId",
                                   json={"filname": "big.bin", "checksum": sha1(b"big")}).json()["upload_id"]

    def post(self, path: str, **kw) -> requests.Response:
        return requests.post(self.url + path, headers={**self.auth, **kw.pop("headers", {})}, timeout=60, **kw)

    def batch(self, data: bytes, checksums: list[str]) -> requests.Response:
        return self.post(f"datasets/{self.rid}/batch?version=2", files={"batch": ("b.zip", data)},
                         data={"checksums": checksums})


@pytest.fixture()
def unchanged(tight: Target, tally) -> Iterator[Target]:
    """TIGHT, checked after the test: same rows and files as before, fsck clean."""
    before = repository_state(tight.server.root)
    yield tight
    assert repository_state(tight.server.root) == before
    assert_fsck_ok(tight.server.root)


def refused(response: requests.Response | tuple[int, bytes], tally, statuses: tuple[int, ...] = ()) -> int:
    """Count the bad input; assert a 4xx (one of STATUSES when given)."""
    status = response[0] if isinstance(response, tuple) else response.status_code
    tally.bad_inputs_tried += 1
    if status >= 500:
        tally.server_errors_seen += 1
    assert 400 <= status < 500 and (not statuses or status in statuses), (status, getattr(response, "text", response))
    return status


BOMB = b"\0" * (6 * MiB)

ZIPS = {
    "dotdot": zip_bytes([("../evil.txt", b"x")]),
    "dotdot-inner": zip_bytes([("a/../../evil.txt", b"x")]),
    "absolute": zip_bytes([("/etc/evil.txt", b"x")]),
    "backslash": zip_bytes([("..\\..\\evil.txt", b"x")]),
    "long": zip_bytes([("a" * 300 + ".txt", b"x")]),
    "symlink": zip_bytes([(symlink_entry("link"), b"/etc/passwd")]),
    "directory": zip_bytes([("dir/", b"")]),
    "duplicate": zip_bytes([("same.txt", b"1"), ("same.txt", b"2")]),
    "empty": zip_bytes([]),
    "not-a-zip": b"PK\x03\x04 this is not a zip at all",
    "ratio-bomb": zip_bytes([("zeros.bin", BOMB)]),
    "total-bomb": zip_bytes([(f"z{i}.bin", b"\0" * MiB) for i in range(5)], zipfile.ZIP_STORED),
    "many-entries": zip_bytes([(f"f{i}.txt", b"x") for i in range(101)]),
    "declared-small": lie_about_size(zip_bytes([("zeros.bin", b"\0" * (2 * MiB))]), 10),
    "declared-huge": lie_about_size(zip_bytes([("small.bin", b"abc")]), 0xFFFFFFF0),
}


@pytest.mark.parametrize("case", sorted(ZIPS))
def test_hostile_zip_is_refused_and_stores_nothing(unchanged: Target, tally, case: str) -> None:
    data = ZIPS[case]
    with zipfile.ZipFile(io.BytesIO(data)) if case != "not-a-zip" else io.BytesIO() as zf:
        count = len(zf.infolist()) if case != "not-a-zip" else 1
    refused(unchanged.batch(data, [sha1(b"x")] * max(count, 1)), tally)


def test_nested_zip_is_stored_not_expanded(tight: Target, tally) -> None:
    """A zip inside the batch is just a file: the server never unpacks it, so its bomb never goes off."""
    inner = zip_bytes([("zeros.bin", BOMB)])
    before = sum(p.stat().st_size for p in (tight.server.root / "blobs").rglob("*") if p.is_file())
    r = tight.batch(zip_bytes([("nested.zip", inner)]), [sha1(inner)])
    tally.bad_inputs_tried += 1
    assert r.status_code == 200, r.text
    after = sum(p.stat().st_size for p in (tight.server.root / "blobs").rglob("*") if p.is_file())
    assert after - before == len(inner) < MiB
    assert_fsck_ok(tight.server.root)


def test_batch_with_wrong_checksum_stores_nothing(unchanged: Target, tally) -> None:
    refused(unchanged.batch(zip_bytes([("ok.txt", b"ok"), ("bad.txt", b"bad")]), [sha1(b"ok"), sha1(b"good")]), tally)


def test_oversized_body_is_refused(unchanged: Target, tally) -> None:
    big = b"\1" * (9 * MiB)
    refused(unchanged.post(f"datasets/{unchanged.rid}?version=2", files={"file": ("big.bin", big)},
                           data={"checksum": sha1(big)}), tally, (413,))


BAD_PATHS = ["../evil.txt", "a/../../evil.txt", "/abs.txt", "a//b.txt", "./a.txt", "a\0b.txt", "a\\..\\b.txt",
             "x" * 2000, "a/" + "y" * 300, "tab\there.txt", ""]


@pytest.mark.parametrize("path", BAD_PATHS, ids=range(len(BAD_PATHS)))
def test_bad_file_path_is_refused_on_every_write_route(unchanged: Target, tally, path: str) -> None:
    t = unchanged
    refused(t.post(f"datasets/{t.rid}?version=2", files={"file": (path, b"x")}, data={"checksum": sha1(b"x")}), tally)
    refused(t.post(f"datasets/{t.rid}/files?version=2", data={"filenames": [path], "checksums": [sha1(CONTENT)]}),
            tally)
    refused(t.post(f"datasets/{t.rid}/uploadId", json={"filname": path, "checksum": sha1(b"y")}), tally)


def test_non_utf8_filename_in_multipart_cannot_traverse(unchanged: Target, tally) -> None:
    """Undecodable bytes in a multipart filename are read as Latin-1; a '..' after them is still refused."""
    t = unchanged
    boundary = b"b0undary"
    body = (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="\xff\xfe/../x"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\nx\r\n--" + boundary +
            b'\r\nContent-Disposition: form-data; name="checksum"\r\n\r\n' + sha1(b"x").encode() +
            b"\r\n--" + boundary + b"--\r\n")
    r = t.post(f"datasets/{t.rid}?version=2", data=body,
               headers={"Content-Type": "multipart/form-data; boundary=" + boundary.decode()})
    refused(r, tally)


NAMES = ["..", "../../etc", "a\0bcd", "x" * 46, "x" * 10_000, "1abc", "ab", "a b c", "ünïcode", "a/b/c", "-abc"]


@pytest.mark.parametrize("name", NAMES, ids=range(len(NAMES)))
def test_bad_record_name_is_refused(unchanged: Target, tally, name: str) -> None:
    body = {"name": name, "authors": ["a"], "license": "MIT", "source": "http://example.com"}
    refused(unchanged.post("datasets", json=body), tally)
    r = requests.get(unchanged.url + "datasets", params={"name": name}, timeout=30)
    refused(r, tally, (404,))


def test_non_utf8_and_malformed_json_bodies_are_refused(unchanged: Target, tally) -> None:
    t = unchanged
    for raw in (b'{"name": "ab\xff\xfecd", "authors": ["a"], "license": "MIT", "source": "http://x"}',
                b'{"name": ', b"[1, 2, 3]", b'"just a string"', b"null",
                json.dumps({"name": "okname", "authors": [None], "license": 5, "source": "ftp://x"}).encode()):
        refused(t.post("datasets", data=raw, headers={"Content-Type": "application/json"}), tally)
    refused(t.post(f"datasets/{t.rid}/uploadId", data=b"\xff\xfe", headers={"Content-Type": "application/json"}),
            tally)


TRAVERSALS = [b"../../repository.db", b"%2e%2e/%2e%2e/repository.db", b"..%2f..%2fsecret", b"%2e%2e%2fsecret",
              b"data/../data/file.bin", b"data%2ffile.bin%00", b"data/file.bin%00.txt", b"%00", b"%ff%fe%fd",
              b"data/file.bin/..", b"/etc/passwd", b"..%5c..%5csecret", b"x" * 8000, b"%ed%a0%80",
              b"blobs/" + b"0" * 40]


@pytest.mark.parametrize("path", TRAVERSALS, ids=range(len(TRAVERSALS)))
def test_download_path_traversal_never_leaves_the_record(unchanged: Target, tally, path: bytes) -> None:
    secret = (unchanged.server.root / "secret").read_bytes()
    for method in (b"GET", b"HEAD"):
        status, body = rawhttp.get(unchanged.url, f"/datasets/{unchanged.rid}/download/".encode() + path,
                                   method=method)
        refused((status, body), tally)
        assert secret not in body and b"SQLite format" not in body


def test_download_of_encoded_path_finds_the_file(tight: Target) -> None:
    """The normal way in still works: 'data%2Ffile.bin' is the path 'data/file.bin'."""
    status, body = rawhttp.get(tight.url, f"/datasets/{tight.rid}/download/data%2Ffile.bin".encode())
    assert (status, body) == (200, CONTENT)


RANGES = {  # Range header -> (status, expected body slice or None for the whole file)
    "bytes=-5-2": (200, None),              # malformed: ignored
    "bytes=\u00b2-3": (200, None),          # a non-ASCII digit: malformed, ignored
    "bytes=abc-def": (200, None),
    "bytes=0-0,5-6": (200, None),           # several ranges: whole file
    "items=0-5": (200, None),               # unknown unit
    "bytes=-0": (416, None),
    "bytes=5-2": (416, None),
    "bytes=10240-": (416, None),            # starts at the end
    "bytes=99999999999999999999999999-": (416, None),
    "bytes=" + "9" * 5000 + "-": (416, None),  # past int()'s 4,300-digit limit
    "bytes=0-99999999999999999999999999": (206, slice(0, None)),
    "bytes=-99999999999999999999999": (206, slice(0, None)),
    "bytes=10239-10239": (206, slice(10239, 10240)),
    "bytes=-1": (206, slice(10239, 10240)),
    "bytes= 100 - 199 ": (206, slice(100, 200)),
}


@pytest.mark.parametrize("header", sorted(RANGES), ids=range(len(RANGES)))
def test_odd_range_headers(tight: Target, tally, header: str) -> None:
    status, want = RANGES[header]
    got_status, body = rawhttp.get(tight.url, f"/datasets/{tight.rid}/download/data/file.bin".encode(),
                                   {b"Range": header.encode("latin-1")})
    tally.bad_inputs_tried += 1
    if got_status >= 500:
        tally.server_errors_seen += 1
    assert got_status == status
    if status == 200:
        assert body == CONTENT
    elif status == 206:
        assert body == CONTENT[want]


@pytest.mark.parametrize("size", [70_000, 1_000_000])
def test_huge_headers_never_5xx_and_the_server_lives(tight: Target, tally, size: int) -> None:
    path = f"/datasets/{tight.rid}/download/data/file.bin".encode()
    for headers in ({b"X-Big": b"a" * size}, {f"X-H{i}".encode(): b"v" * 100 for i in range(size // 100)}):
        status, _ = rawhttp.get(tight.url, path, headers)
        tally.bad_inputs_tried += 1
        if status >= 500:
            tally.server_errors_seen += 1
        assert status in (0, 200) or 400 <= status < 500  # served, refused, or the connection closed
    assert rawhttp.get(tight.url, path) == (200, CONTENT)


def _connect(url: str) -> socket.socket:
    host, port = url.split("//")[1].rstrip("/").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _closed_by_server(sock: socket.socket) -> bytes | None:
    """What the server sent before it closed SOCK (None: it closed it with a reset, its answer
    dropped with what it left unread); raises socket.timeout when it keeps it open."""
    chunks = []
    try:
        while data := sock.recv(65536):
            chunks.append(data)
    except ConnectionResetError:
        return None
    return b"".join(chunks)


def test_a_request_head_that_never_ends_is_cut_off_in_time(tight: Target, tally) -> None:
    """Slowloris: connections that send nothing, or a header byte now and then (which restarted
    uvicorn's keep-alive timer), were kept for good, a file descriptor each, until the server
    could accept no one. Each is now answered 408 and closed within EOTDLFS_HEAD_TIMEOUT_S."""
    silent, dribbling = _connect(tight.url), _connect(tight.url)
    try:
        dribbling.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        started, closed = time.monotonic(), False
        for _ in range(int(HEAD_TIMEOUT_S * 5 / 0.25)):  # a header byte every 0.25 s, for up to 5 timeouts
            try:
                dribbling.sendall(b"X")
            except OSError:
                closed = True
                break
            dribbling.settimeout(0.25)
            try:
                if dribbling.recv(65536).startswith(b"HTTP/1.1 408"):
                    closed = True
                    break
            except socket.timeout:
                pass
        tally.bad_inputs_tried += 2
        assert closed and time.monotonic() - started < HEAD_TIMEOUT_S * 3
        silent.settimeout(HEAD_TIMEOUT_S * 3)
        assert _closed_by_server(silent).startswith(b"HTTP/1.1 408")
    finally:
        silent.close()
        dribbling.close()
    assert requests.get(tight.url, timeout=10).status_code == 200


def test_a_slow_body_is_not_cut_off_by_the_head_timeout(tight: Target) -> None:
    """Only the head has a deadline: a body arriving after it is read and answered (a record name
    too short: 400, nothing stored)."""
    body = b'{"name": "x", "authors": ["a"], "license": "MIT", "source": "http://example.com"}'
    sock = _connect(tight.url)
    try:
        auth = tight.auth["Authorization"].encode()
        sock.sendall(b"POST /datasets HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
                     b"Authorization: %s\r\nContent-Length: %d\r\n\r\n" % (auth, len(body)) + body[:10])
        time.sleep(HEAD_TIMEOUT_S + 1)
        sock.sendall(body[10:])
        assert _closed_by_server(sock).startswith(b"HTTP/1.1 400")
    finally:
        sock.close()


@pytest.mark.parametrize("where", ["url", "header"])
def test_a_request_head_of_endless_bytes_is_refused_early(tight: Target, tally, where: str) -> None:
    """A head of 4 MiB is refused (431) and its connection closed once 64 KiB (and the read
    under way) came: uvicorn buffered a head whole, re-copying it as it grew (200 MB took 46 s of
    the event loop's CPU, no other request answered meanwhile)."""
    start = b"GET /" if where == "url" else b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: "
    sock = _connect(tight.url)
    try:
        try:
            sock.sendall(start + b"a" * (4 * MiB))
        except OSError:
            pass  # closed by the server before it took it all
        sock.settimeout(10)  # before: kept open, waiting for the rest of the head
        answer = _closed_by_server(sock)
        assert answer is None or answer.startswith(b"HTTP/1.1 431")
        tally.bad_inputs_tried += 1
    finally:
        sock.close()
    assert requests.get(tight.url, timeout=10).status_code == 200


HUGE = "9" * 30  # beyond SQLite's 64-bit integers


def test_huge_integers_are_refused(unchanged: Target, tally) -> None:
    t, u = unchanged, unchanged.url
    for method, path in (("GET", f"datasets/{t.rid}/files?version={HUGE}"),
                         ("GET", f"datasets/{t.rid}/download/data/file.bin?version={HUGE}"),
                         ("HEAD", f"datasets/{t.rid}/download/data/file.bin?version=-{HUGE}"),
                         ("POST", f"datasets/{t.rid}/publish?version={HUGE}"),
                         ("DELETE", f"datasets/{t.rid}/version/{HUGE}"),
                         ("POST", f"datasets/{t.rid}/files?version={HUGE}"),
                         ("POST", f"datasets/complete/{'0' * 32}?version={HUGE}")):
        refused(requests.request(method, u + path, headers=t.auth, timeout=30), tally)
    refused(requests.get(u + f"datasets?limit={HUGE}", timeout=30), tally)
    refused(t.post(f"datasets/chunk/{'0' * 32}", files={"file": ("c", b"x")},
                   data={"part_number": HUGE, "checksum": "0" * 32}), tally)


def _credentials(root: Path) -> dict[str, dict[str, str]]:
    """Every way of not being alice: nothing, expired, another secret, alg none, HS512, and a valid mallory."""
    import base64

    import jwt

    from eotdlfs.server.auth import load_secret

    def b64(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    now, secret = int(time.time()), load_secret(root)
    claims = {"sub": "alice", "iat": now, "exp": now + 3600}
    bearer = lambda token: {"Authorization": f"Bearer {token}"}  # noqa: E731
    return {"none": {}, "expired": bearer(jwt.encode({**claims, "exp": now - 60}, secret, algorithm="HS256")),
            "other-secret": bearer(jwt.encode(claims, "not the server's secret at all, 32+ bytes", algorithm="HS256")),
            "alg-none": bearer(f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."),
            "hs512": bearer(jwt.encode(claims, secret, algorithm="HS512")),
            "mallory": bearer(jwt.encode({**claims, "sub": "mallory"}, secret, algorithm="HS256"))}


def test_no_write_route_accepts_anyone_but_the_owner(unchanged: Target, tally) -> None:
    """Each write route x each wrong credential: 401/403, and (checked by `unchanged`) no row or file changed."""
    t, k = unchanged, "datasets"
    routes = [("POST", f"{k}/version/{t.rid}", {}),
              ("POST", f"{k}/{t.rid}/batch?version=2", {"files": {"batch": ("b.zip", zip_bytes([("z", b"z")]))},
                                                       "data": {"checksums": [sha1(b"z")]}}),
              ("POST", f"{k}/{t.rid}/files?version=2", {"data": {"filenames": ["data/file.bin"],
                                                                  "checksums": [sha1(CONTENT)]}}),
              ("POST", f"{k}/{t.rid}?version=2", {"files": {"file": ("f", b"f")}, "data": {"checksum": sha1(b"f")}}),
              ("POST", f"{k}/{t.rid}/uploadId", {"json": {"filname": "u", "checksum": sha1(b"u")}}),
              ("POST", f"{k}/chunk/{t.upload_id}", {"files": {"file": ("c", b"big")},
                                                    "data": {"part_number": "1", "checksum": hashlib.md5(b"big").hexdigest()}}),
              ("POST", f"{k}/complete/{t.upload_id}?version=2", {}),
              ("POST", f"{k}/{t.rid}/publish?version=2", {}),
              ("DELETE", f"{k}/{t.rid}/version/2", {})]
    for label, headers in _credentials(t.server.root).items():
        body = {"name": "stolen-" + label, "authors": ["m"], "license": "MIT", "source": "http://example.com"}
        if label != "mallory":  # anyone may create a record; without valid credentials nobody may
            refused(requests.post(t.url + k, json=body, headers=headers, timeout=30), tally, (401,))
        for method, path, kw in routes:
            r = requests.request(method, t.url + path, headers=headers, timeout=30, **kw)
            refused(r, tally, (403,) if label == "mallory" else (401,))
