"""Small ranges answered by the HTTP protocol itself (`eotdlfs.server.rangeprotocol`): the same
status, headers and bytes as the ASGI application gives, which still answers everything else."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import uvicorn
from serverapi import Api, sha1

from eotdlfs.server.run import RunningServer, start_in_thread
from tests.conftest import RepoServer

DATA = bytes(range(256)) * 40  # 10240 bytes
BIG = bytes(range(251)) * 1200  # 301200 bytes: past the ranges answered below ASGI
ETAG = f'"{sha1(DATA)}"'


class _Servers:
    def __init__(self, fast: RunningServer, asgi: uvicorn.Server, asgi_port: int, root: Path):
        self.fast, self.asgi, self.asgi_port, self.root = fast, asgi, asgi_port, root
        self.url = fast.url  # what Api needs
        self.answered_by_app: list[str] = []

    def token(self, user: str) -> str:
        from eotdlfs.server.auth import issue_token

        return issue_token(self.root, user)


@pytest.fixture
def servers(tmp_path) -> Iterator[_Servers]:
    """The server as `eotdlfs serve` runs it, and beside it the same application (same store)
    behind uvicorn's own httptools protocol: the reference answers."""
    fast = start_in_thread(tmp_path / "root")
    app = fast.server.config.app
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    asgi = uvicorn.Server(uvicorn.Config(app, http="httptools", log_level="warning", access_log=False,
                                         server_header=False))
    thread = threading.Thread(target=asgi.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    s = _Servers(fast, asgi, sock.getsockname()[1], tmp_path / "root")
    real_app = fast.server.config.loaded_app  # what each new connection's protocol hands requests to

    async def spy(scope, receive, send) -> None:  # counts only
        if scope["type"] == "http":
            s.answered_by_app.append(scope["method"])
        await real_app(scope, receive, send)

    fast.server.config.loaded_app = spy
    try:
        deadline = time.monotonic() + 30
        while not asgi.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert asgi.started
        yield s
    finally:
        asgi.should_exit = True
        thread.join(10)
        fast.stop()


@pytest.fixture
def rid(servers) -> str:
    api = Api(servers, "datasets", servers.token("alice"))
    rid = api.create("ranges")
    api.new_version(rid)
    assert api.batch(rid, 1, {"d/data.bin": DATA, "empty": b"", "big.bin": BIG, "sp ace é.bin": DATA}).status_code == 200
    return rid


def _ask(port: int, method: str, target: str, headers: dict[str, str]) -> tuple:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, target, headers=headers)
        r = conn.getresponse()
        return r.status, [h for h in r.getheaders() if h[0] != "date"], r.read()
    finally:
        conn.close()


FILE = "d/data.bin?version=1"
# (target after /datasets/ID/download/, method, headers, answered below ASGI)
CASES = [
    (FILE, "GET", {"Range": "bytes=0-4095"}, True),
    (FILE, "GET", {"Range": "bytes=0-0"}, True),
    (FILE, "GET", {"Range": "bytes=-10"}, True),  # suffix
    (FILE, "GET", {"Range": "bytes=-99999"}, True),  # suffix longer than the file
    (FILE, "GET", {"Range": "bytes=100-"}, True),  # open-ended
    (FILE, "GET", {"Range": "bytes=5000-99999"}, True),  # clamped at the end
    ("d/data.bin", "GET", {"Range": "bytes=1-2"}, True),  # the latest file version
    ("sp%20ace%20%C3%A9.bin?version=1", "GET", {"Range": "bytes=1-2"}, True),
    (FILE, "GET", {"Range": "bytes=1-2", "If-Range": ETAG}, True),
    (FILE, "GET", {"Range": "bytes=1-2", "If-Range": '"other"'}, False),  # whole file, 200
    (FILE, "GET", {"Range": "bytes=10240-"}, False),  # 416
    (FILE, "GET", {"Range": "bytes=-0"}, False),
    (FILE, "GET", {"Range": "bytes=20-10"}, False),
    (FILE, "GET", {"Range": "bytes=abc"}, False),  # malformed: whole file
    (FILE, "GET", {"Range": "bytes=0-1,5-6"}, False),  # several: whole file
    (FILE, "GET", {"Range": "items=0-1"}, False),
    (FILE, "GET", {}, False),
    (FILE, "HEAD", {"Range": "bytes=0-9"}, False),
    ("empty?version=1", "GET", {"Range": "bytes=0-9"}, False),  # 416
    ("big.bin?version=1", "GET", {"Range": "bytes=0-299999"}, True),  # large: sent by the kernel (`filesend`)
    ("big.bin?version=1", "GET", {"Range": "bytes=-262145"}, True),  # the smallest sent so
    ("big.bin?version=1", "GET", {"Range": "bytes=1-262144"}, True),  # the largest written at once
    ("big.bin?version=1", "GET", {}, True),  # the whole file, 200
    ("big.bin?version=1", "GET", {"Range": "bytes=1-2", "If-Range": '"other"'}, True),  # whole file, 200
    ("big.bin?version=1", "HEAD", {}, False),
    ("nope?version=1", "GET", {"Range": "bytes=0-9"}, False),  # 404
    ("d/data.bin?version=9", "GET", {"Range": "bytes=0-9"}, False),  # 404
    ("d/data.bin?version=x", "GET", {"Range": "bytes=0-9"}, False),  # 422
]


@pytest.mark.parametrize("target, method, headers, below_asgi", CASES)
def test_same_answer_as_the_asgi_application(servers, rid, target, method, headers, below_asgi):
    path = f"/datasets/{rid}/download/{target}"
    expected = _ask(servers.asgi_port, method, path, headers)
    servers.answered_by_app.clear()
    assert _ask(servers.fast.port, method, path, headers) == expected
    assert servers.answered_by_app == ([] if below_asgi else [method])
    if below_asgi:
        assert expected[0] in (200, 206)


def _pipelined(port: int, requests: str) -> list[tuple[int, bytes]]:
    """(status, body) of each answer to REQUESTS (GETs), sent in one write on one connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(requests.encode())
        reader, answers = sock.makefile("rb"), []
        for _ in range(requests.count("GET ")):
            lines = iter(reader.readline, b"\r\n")
            status = int(next(lines).split()[1])
            length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length:"))
            list(lines)  # the rest of the head
            answers.append((status, reader.read(length)))
    return answers


def test_pipelined_requests_are_answered_in_order(servers, rid):
    # A small range, one the application answers (the whole file), and a small range again, in one
    # write: the third waits for the second, answered by the application, and comes after it.
    one = f"GET /datasets/{rid}/download/{FILE} HTTP/1.1\r\nHost: x\r\nRange: bytes=%d-%d\r\n\r\n"
    whole = f"GET /datasets/{rid}/download/{FILE} HTTP/1.1\r\nHost: x\r\n\r\n"
    servers.answered_by_app.clear()
    answers = _pipelined(servers.fast.port, one % (0, 9) + whole + one % (100, 104))
    assert answers == [(206, DATA[:10]), (200, DATA), (206, DATA[100:105])]
    assert servers.answered_by_app == ["GET", "GET"]  # the third waited in uvicorn's pipeline


def test_pipelined_requests_wait_for_a_file_sent_below_asgi(servers, rid):
    # A whole large file (sent by the kernel), then a small range and a large range in one write:
    # they wait in uvicorn's pipeline until the file is sent, and come after it.
    big = f"GET /datasets/{rid}/download/big.bin?version=1 HTTP/1.1\r\nHost: x\r\n%s\r\n"
    small = f"GET /datasets/{rid}/download/{FILE} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n\r\n"
    servers.answered_by_app.clear()
    answers = _pipelined(servers.fast.port, big % "" + small + big % "Range: bytes=5-300004\r\n")
    assert answers == [(200, BIG), (206, DATA[:10]), (206, BIG[5:300005])]
    assert servers.answered_by_app == ["GET", "GET"]


def test_stats_count_what_is_answered_below_asgi(servers, rid):
    before = Api(servers, "datasets").get("eotdlfs/stats").json()
    servers.answered_by_app.clear()
    assert _ask(servers.fast.port, "GET", f"/datasets/{rid}/download/{FILE}", {"Range": "bytes=0-99"})[0] == 206
    assert _ask(servers.fast.port, "GET", f"/datasets/{rid}/download/big.bin?version=1", {})[0] == 200
    assert servers.answered_by_app == []
    after = Api(servers, "datasets").get("eotdlfs/stats").json()
    assert (after["downloads"] - before["downloads"], after["bytes_sent"] - before["bytes_sent"]) == \
        (2, 100 + len(BIG))


def test_ranges_of_blobs_in_a_bucket_go_to_the_application(s3, tmp_path):
    # A bucket's blob is no local file: the protocol leaves its ranges to the application.
    server = RepoServer(tmp_path / "root", env=dict(s3.env), blobs=s3.bucket())
    server.start()
    try:
        api = Api(server, "datasets", server.token("alice"))
        rid = api.create("bucket")
        api.new_version(rid)
        assert api.batch(rid, 1, {"a": DATA}).status_code == 200
        r = api.download(rid, "a", 1, headers={"Range": "bytes=10-19"})
        assert (r.status_code, r.content, r.headers["content-range"], r.headers["etag"]) == \
            (206, DATA[10:20], f"bytes 10-19/{len(DATA)}", ETAG)
    finally:
        server.stop()


def test_a_client_that_does_not_read_its_answers_is_not_buffered_without_bound(servers, rid):
    # 400 requests of 256 KiB sent in one go and none of the answers read: answered here each
    # one would wait in the server's memory (100 MB); the server stops once writing is paused.
    request = f"GET /datasets/{rid}/download/big.bin?version=1 HTTP/1.1\r\nHost: x\r\nRange: bytes=0-262143\r\n\r\n"
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        sock.connect(("127.0.0.1", servers.fast.port))
        sock.sendall(request.encode() * 400)
        time.sleep(2)
        buffered = max(c.transport.get_write_buffer_size() for c in servers.fast.server.server_state.connections)
        assert buffered < 8 << 20, buffered
