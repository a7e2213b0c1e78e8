"""The fault proxy itself, against a trivial local HTTP server: each mode does what it says."""

from __future__ import annotations

import hashlib
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Iterator

import pytest
import requests

from reliability.faultproxy import FaultProxy, QuietHTTPServer

BODY = bytes(range(256)) * 4096  # 1 MiB, every byte position distinguishable


class _Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hits: list[str] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(BODY)

    do_HEAD = do_GET

    def do_POST(self) -> None:
        self.hits.append(self.path)
        data = self.rfile.read(int(self.headers["Content-Length"]))
        answer = hashlib.sha1(data).hexdigest().encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


@pytest.fixture()
def upstream() -> Iterator[str]:
    server = QuietHTTPServer(("127.0.0.1", 0), _Upstream)
    _Upstream.hits = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def proxy(upstream: str) -> Iterator[FaultProxy]:
    with FaultProxy(upstream) as p:
        yield p


def test_pass_through_keeps_bytes_and_connection(proxy: FaultProxy) -> None:
    with requests.Session() as s:
        for _ in range(3):
            assert s.get(proxy.url + "data", timeout=10).content == BODY
        assert s.head(proxy.url + "data", timeout=10).headers["Content-Length"] == str(len(BODY))
        assert s.post(proxy.url + "up", data=b"x" * 5000, timeout=10).text == hashlib.sha1(b"x" * 5000).hexdigest()
        chunked = s.post(proxy.url + "up", data=iter([b"ab", b"cd"]), timeout=10)
        assert chunked.text == hashlib.sha1(b"abcd").hexdigest()
    assert proxy.total_injected() == 0


def test_reset_mid_body(proxy: FaultProxy) -> None:
    fault = proxy.inject("reset", r"^/data", at=100_000)
    with pytest.raises(requests.exceptions.RequestException):
        requests.get(proxy.url + "data", timeout=10).content
    assert fault.hits == 1


def test_truncate_keeps_length_cuts_body(proxy: FaultProxy) -> None:
    proxy.inject("truncate", "data", at=1000)
    with requests.get(proxy.url + "data", timeout=10, stream=True) as r:
        assert r.headers["Content-Length"] == str(len(BODY))
        with pytest.raises(requests.exceptions.RequestException):
            r.content


def test_corrupt_flips_exactly_one_byte(proxy: FaultProxy) -> None:
    proxy.inject("corrupt", "data", at=777)
    got = requests.get(proxy.url + "data", timeout=10).content
    assert len(got) == len(BODY)
    assert [i for i in range(len(BODY)) if got[i] != BODY[i]] == [777]


def test_slow_goes_past_client_timeout(proxy: FaultProxy) -> None:
    proxy.inject("slow", "data", delay=2.0, count=1)
    start = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(proxy.url + "data", timeout=0.3)
    assert time.monotonic() - start < 1.5
    assert requests.get(proxy.url + "data", timeout=10).content == BODY


def test_error500_and_drop_do_not_reach_upstream(proxy: FaultProxy) -> None:
    proxy.inject("error500", "boom", count=1)
    proxy.inject("drop", "gone", method="POST", count=1)
    assert requests.get(proxy.url + "boom", timeout=10).status_code == 500
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(proxy.url + "gone", data=b"payload", timeout=10)
    assert _Upstream.hits == []
    assert proxy.injected == {"error500": 1, "drop": 1}


def test_count_and_path_bound_the_fault(proxy: FaultProxy) -> None:
    proxy.inject("error500", r"/a$", count=2)
    codes = [requests.get(proxy.url + p, timeout=10).status_code for p in ("a", "b", "a", "a")]
    assert codes == [500, 200, 500, 200]
    proxy.inject("error500", "")
    assert requests.get(proxy.url + "b", timeout=10).status_code == 500
    proxy.clear()
    assert requests.get(proxy.url + "b", timeout=10).status_code == 200


def test_upstream_down_looks_like_a_dead_server(upstream: str) -> None:
    with FaultProxy("http://127.0.0.1:9/") as p:  # discard port: nothing listens
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(p.url + "data", timeout=10)


def test_stall_sends_part_of_the_request_then_resets(proxy: FaultProxy) -> None:
    fault = proxy.inject("stall", "up", at=10, delay=0.5)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(proxy.url + "up", data=b"y" * 1000, timeout=10)
    assert fault.struck.is_set() and _Upstream.hits == ["/up"]  # it began, and never got its body


def test_pause_stops_reading_the_request_body_then_serves_it_whole(proxy: FaultProxy) -> None:
    fault = proxy.inject("pause", "up", at=1000, delay=1.0)
    body = BODY * 8  # 8 MiB: more than the socket buffers hold, so the sender waits
    start = time.monotonic()
    answer = requests.post(proxy.url + "up", data=body, timeout=10)
    assert answer.text == hashlib.sha1(body).hexdigest() and fault.struck.is_set()
    assert time.monotonic() - start >= 1.0 and _Upstream.hits == ["/up"]


def test_after_lets_the_first_matches_through(proxy: FaultProxy) -> None:
    fault = proxy.inject("error500", "a", after=2, count=1)
    codes = [requests.get(proxy.url + "a", timeout=10).status_code for _ in range(4)]
    assert codes == [200, 200, 500, 200] and fault.struck.is_set()


def test_silent_holds_the_request_unanswered_until_cleared(proxy: FaultProxy) -> None:
    fault = proxy.inject("silent", "data")
    start = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(proxy.url + "data", timeout=(5, 0.5))
    assert fault.struck.is_set() and _Upstream.hits == [] and time.monotonic() - start < 3
    waiting = threading.Thread(target=lambda: pytest.raises(requests.exceptions.ConnectionError, requests.get,
                                                            proxy.url + "data", timeout=30))
    waiting.start()
    time.sleep(0.3)
    proxy.clear()  # the held connection is reset at once, and the next request goes through
    waiting.join(10)
    assert not waiting.is_alive() and time.monotonic() - start < 10
    assert requests.get(proxy.url + "data", timeout=10).content == BODY


def test_rewrite_replaces_the_body_and_its_length(proxy: FaultProxy) -> None:
    proxy.inject("rewrite", "data", count=1, edit=lambda body: body[:3] + b"!")
    got = requests.get(proxy.url + "data", timeout=10)
    assert got.content == BODY[:3] + b"!" and got.headers["Content-Length"] == "4"
    assert requests.get(proxy.url + "data", timeout=10).content == BODY
