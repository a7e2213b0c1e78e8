"""ApiClient and ApiRepository against a real server: typed errors from real answers, ranges, retries."""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import pytest
import trustme

from client.helpers import client, make_folder
from eotdlfs.client.api import ApiClient
from eotdlfs.client.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized, Unreachable
from eotdlfs.client.ingest import ingest_folder
from eotdlfs.client.repository import ApiRepository
from eotdlfs.client.settings import Settings
from eotdlfs.metadata import Metadata


@pytest.fixture
def dataset(repo_server, unique_name, tmp_path, monkeypatch):
    """A published dataset with a file 'part0/file0000.txt' and a 1 MiB 'blob.bin'; (name, blob bytes)."""
    monkeypatch.setenv("EOTDLFS_CACHE_DIR", str(tmp_path / "hash-cache"))
    name = unique_name("api")
    folder = make_folder(tmp_path / "src", name, 3)
    blob = bytes(range(256)) * 4096
    (folder / "odd name #1.bin").write_bytes(blob)
    ingest_folder(client(repo_server), "datasets", folder)
    return name, blob


def test_real_error_answers_become_typed_errors(repo_server, dataset):
    name, _ = dataset
    alice, anonymous, bob = client(repo_server), client(repo_server, None), client(repo_server, "bob")
    record_id = alice.record_by_name("datasets", name)["id"]
    with pytest.raises(NotFound, match=f"Dataset '{name}-missing' doesn't exist"):
        alice.record_by_name("datasets", name + "-missing")
    with pytest.raises(NotFound, match=f"Model '{name}' doesn't exist"):
        alice.record_by_name("models", name)
    with pytest.raises(Conflict, match="Dataset already exists"):
        alice.create_record("datasets", Metadata(name, ["a"], "MIT", "http://x"))
    with pytest.raises(Unauthorized):
        anonymous.create_version("datasets", record_id)
    with pytest.raises(Forbidden, match="not the owner"):
        bob.create_version("datasets", record_id)
    with pytest.raises(NotFound, match="version doesn't exist"):
        alice.files("datasets", record_id, 99)
    with pytest.raises(NotFound, match="Upload Id not found."):
        alice.upload_chunk("datasets", "0" * 32, 1, b"x", hashlib.md5(b"x").hexdigest())
    upload_id, parts = alice.start_multipart("datasets", record_id, "new.bin", "1" * 40)
    assert parts == []
    with pytest.raises(BadRequest, match="Checksum mismatch."):
        alice.upload_chunk("datasets", upload_id, 1, b"x", "0" * 32)


def test_repository_reads_sizes_and_ranges(repo_server, dataset):
    name, blob = dataset
    api = client(repo_server, None)
    repo = ApiRepository(api)
    record = repo.record("datasets", name)
    assert [v.number for v in record.published] == [1] and record.owner == "alice"
    assert name in [r.name for r in repo.records("datasets")]
    entries = {e.path: e for e in repo.files(record, 1)}
    entry = entries["odd name #1.bin"]
    assert entry.size == len(blob) and entry.checksum == hashlib.sha1(blob).hexdigest()
    assert repo.read_range(record, entry, 1000, 5000) == blob[1000:6000]
    assert repo.read_range(record, entry, len(blob) - 10, 100) == blob[-10:]
    assert repo.read_range(record, entry, len(blob) + 5, 100) == b""
    assert api.ranges_supported is True
    assert api.head_file("datasets", record.id, "odd name #1.bin", 1) == len(blob)
    with api.download("datasets", record.id, "odd name #1.bin", 1) as blocks:
        assert b"".join(blocks) == blob


def test_idempotent_calls_are_retried_and_others_are_not(repo_server, dataset):
    from reliability.faultproxy import FaultProxy

    name, _ = dataset
    with FaultProxy(repo_server.url) as proxy:
        api = ApiClient(Settings(proxy.url, repo_server.token("alice"), None, 30), backoff=0.01)
        proxy.inject("drop", r"^/datasets\?name=", method="GET", count=2)
        assert api.record_by_name("datasets", name)["name"] == name  # two drops, then through
        proxy.inject("drop", r"^/datasets$", method="POST", count=1)
        with pytest.raises(Unreachable, match="cannot reach the repository"):
            api.create_record("datasets", Metadata(name + "-x", ["a"], "MIT", "http://x"))
        assert proxy.injected["drop"] == 3
        with pytest.raises(NotFound):
            client(repo_server).record_by_name("datasets", name + "-x")  # the refused create never ran


@pytest.mark.parametrize("mode", ["truncate", "reset"])
def test_a_range_read_broken_mid_body_is_retried_never_short(repo_server, dataset, mode):
    """The body of a range read stops after 1000 bytes (Content-Length announced whole, or a reset): the read is
    sent again and returns the right bytes; broken on every try, it fails (EIO-like), never short bytes."""
    from reliability.faultproxy import FaultProxy

    name, blob = dataset
    with FaultProxy(repo_server.url) as proxy:
        api = ApiClient(Settings(proxy.url, repo_server.token("alice"), None, 30), retries=2, backoff=0.01)
        record_id = api.record_by_name("datasets", name)["id"]
        fault = proxy.inject(mode, r"/download/", method="GET", at=1000, count=1)
        assert api.read_range("datasets", record_id, "odd name #1.bin", 1, 100, 300_000) == blob[100:300_100]
        assert fault.hits == 1
        fault = proxy.inject(mode, r"/download/", method="GET", at=1000, count=3)  # more than 2 retries
        with pytest.raises(Unreachable, match="cannot reach the repository"):
            api.read_range("datasets", record_id, "odd name #1.bin", 1, 0, 300_000)
        assert fault.hits == 3
        assert api.read_range("datasets", record_id, "odd name #1.bin", 1, 0, 10) == blob[:10]


def test_a_dead_server_is_unreachable_after_bounded_retries(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        api = ApiClient(Settings(f"http://127.0.0.1:{s.getsockname()[1]}/", None, None, 5), backoff=0.01)
        start = time.monotonic()
        with pytest.raises(Unreachable, match="Connection refused"):
            api.records("datasets")
    assert time.monotonic() - start < 5


def test_range_reads_keep_one_connection(repo_server, dataset):
    """Range bodies are read from the socket into our own memory; the thread's connection must
    still be kept alive when the body is complete, not be closed and opened again per read."""
    name, blob = dataset
    api = ApiClient(Settings(repo_server.url, repo_server.token("alice"), None, 30))
    record_id = api.record_by_name("datasets", name)["id"]
    sockets = set()  # the local address of this thread's connection after each read
    for start in range(0, 50_000, 10_000):
        assert api.read_range("datasets", record_id, "odd name #1.bin", 1, start, 10_000) == blob[start:start + 10_000]
        sockets.add(api._quick_gets._local.conn.sock.getsockname())
    assert len(sockets) == 1


def test_connections_made_ahead_serve_first_reads_and_one_closed_meanwhile_is_replaced(repo_server, dataset):
    """A fresh mount's first lookups and fetches each come on a thread of its own: connections made
    as it starts serve them. One the server closed meanwhile (idle too long) is replaced at once,
    with no retry spent (none allowed here)."""
    name, blob = dataset
    api = ApiClient(Settings(repo_server.url, repo_server.token("alice"), None, 30), retries=0)
    record_id = api.record_by_name("datasets", name)["id"]
    used = []

    def read_in_a_new_thread() -> None:
        def read() -> None:
            assert api.read_range("datasets", record_id, "odd name #1.bin", 1, 100, 1000) == blob[100:1100]
            used.append(api._quick_gets._local.conn.sock.getsockname())
        thread = threading.Thread(target=read)
        thread.start()
        thread.join(30)

    api._quick_gets.connect_ahead(2)  # what api.connect_ahead runs in the background
    spares = {conn.sock.getsockname() for conn in api._quick_gets._spares}
    for _ in range(2):
        read_in_a_new_thread()
    assert len(spares) == 2 and set(used) == spares
    api._quick_gets.connect_ahead(1)
    api._quick_gets._spares[0].sock.shutdown(socket.SHUT_RDWR)  # as the server's end of an idle connection
    read_in_a_new_thread()
    assert len(used) == 3 and used[2] not in spares
    api.close()


def test_the_ranges_of_one_read_are_in_flight_at_once_from_the_callers_thread(repo_server, dataset):
    """A seeking reader's tile rows: all requests sent, each on a connection of its own, before any answer
    is read (one after the other they cost a round trip each; on fetch threads, hops and the GIL), the
    connections kept for the next read; one the server closed meanwhile is replaced, no retry spent."""
    from reliability.faultproxy import FaultProxy

    name, blob = dataset
    spans = [(0, 1000), (20_000, 5000), (40_000, 3000)]
    with FaultProxy(repo_server.url) as proxy:
        api = ApiClient(Settings(proxy.url, repo_server.token("alice"), None, 30), retries=0)
        record_id = api.record_by_name("datasets", name)["id"]
        proxy.inject("slow", "/download/", delay=0.5)  # every answer held half a second
        started = time.monotonic()
        got = api.read_ranges("datasets", record_id, "odd name #1.bin", 1, spans)
        elapsed = time.monotonic() - started
        assert [bytes(g) for g in got] == [blob[s:s + n] for s, n in spans]
        assert elapsed < 1.0, elapsed  # one after the other: 1.5 s
        proxy.clear()
        quick = api._quick_gets
        kept = [quick._local.conn, *quick._local.more]
        assert len({id(conn) for conn in kept}) == 3
        kept[1].sock.shutdown(socket.SHUT_RDWR)  # as the server's end of an idle connection
        assert [bytes(g) for g in api.read_ranges("datasets", record_id, "odd name #1.bin", 1, spans)] == \
            [blob[s:s + n] for s, n in spans]
    api.close()


def test_ranges_a_server_answers_whole_are_read_one_by_one_and_sliced():
    """A server without ranges (a 200 with the whole file) for a multi-range read: each range is read its full way."""
    body = bytes(range(256)) * 20
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    with _raw_server(answer, hold_open=False) as (port, _):
        api = ApiClient(Settings(f"http://127.0.0.1:{port}/", None, None, 5), retries=0)
        got = api.read_ranges("datasets", "rec", "a.bin", 1, [(0, 10), (1000, 30)])
    assert [bytes(g) for g in got] == [body[:10], body[1000:1030]]
    api.close()


def test_plain_range_reads_skip_requests_per_call_work(repo_server, dataset, monkeypatch):
    """A 206 answer is read straight through a kept-alive connection: requests' own work per call
    (settings merged from the environment, hooks, cookies) cost more than the request itself."""
    name, blob = dataset
    api = ApiClient(Settings(repo_server.url, repo_server.token("alice"), None, 30))
    record_id = api.record_by_name("datasets", name)["id"]
    calls = []
    request = api._session.request
    monkeypatch.setattr(api._session, "request", lambda *a, **kw: calls.append(a) or request(*a, **kw))
    for start in range(0, 50_000, 10_000):
        assert api.read_range("datasets", record_id, "odd name #1.bin", 1, start, 10_000) == blob[start:start + 10_000]
    assert calls == [] and api.ranges_supported


@contextmanager
def _raw_server(answer: bytes, hold_open: bool, tls: ssl.SSLContext | None = None) -> Iterator[tuple[int, list[bytes]]]:
    """A server on 127.0.0.1 answering each connection's first request with ANSWER, then holding
    it open until the test ends (HOLD_OPEN) or closing it; over TLS when given TLS (a server side
    context); yields (port, requests seen)."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []
    done = threading.Event()

    def serve():
        # A short accept timeout: closing the listener does not wake a blocked accept, and each
        # test waited out a 10 s one at its end.
        listener.settimeout(0.05)
        deadline = time.monotonic() + 10
        while not done.is_set() and len(seen) < 5 and time.monotonic() < deadline:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if tls is not None:
                conn = tls.wrap_socket(conn, server_side=True)
            seen.append(conn.recv(65536))
            conn.sendall(answer)
            if hold_open:
                done.wait(10)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], seen
    finally:
        done.set()
        listener.close()
        thread.join(10)


def test_a_range_body_that_stalls_is_unreachable_after_the_read_timeout_not_retried():

    # headers and 10 of 1,000 bytes, then silence until the test ends
    answer = b"HTTP/1.1 206 Partial Content\r\nContent-Length: 1000\r\nContent-Range: bytes 0-999/5000\r\n\r\n" + b"x" * 10
    with _raw_server(answer, hold_open=True) as (port, requests_seen):
        api = ApiClient(Settings(f"http://127.0.0.1:{port}/", None, None, 1), retries=2, backoff=0.01)
        started = time.monotonic()
        with pytest.raises(Unreachable, match="timed out"):
            api.read_range("datasets", "rec", "a.bin", 1, 0, 1000)
        assert time.monotonic() - started < 5 and len(requests_seen) == 1


@pytest.mark.parametrize("start, length", [(1000, 5000), (0, 1 << 20)])
def test_range_bodies_come_in_page_aligned_memory(repo_server, dataset, start, length):
    """The block cache writes fetched ranges with O_DIRECT, which wants page-aligned memory: small
    bodies (the page-aligned part of a heap buffer) and big ones (a mapping of their own) alike."""
    import ctypes
    import mmap

    name, blob = dataset
    api = ApiClient(Settings(repo_server.url, repo_server.token("alice"), None, 30))
    record_id = api.record_by_name("datasets", name)["id"]
    body = api.read_range("datasets", record_id, "odd name #1.bin", 1, start, length)
    assert body == blob[start:start + length]
    assert ctypes.addressof(ctypes.c_char.from_buffer(body)) % mmap.PAGESIZE == 0


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_kept_alive_connection_the_server_closed_is_reopened_without_a_retry(scheme, tmp_path, monkeypatch):
    """Servers close idle kept-alive connections (uvicorn after 30 s): the next range goes on a new
    connection at once, with no retry spent (here none are allowed) and no error."""
    # each connection: one complete 206, then closed as an idle keep-alive would be
    answer = b"HTTP/1.1 206 Partial Content\r\nContent-Length: 10\r\nContent-Range: bytes 0-9/5000\r\n\r\n0123456789"
    tls = None
    if scheme == "https":  # a certificate of a test CA, trusted through the environment
        ca, tls = trustme.CA(), ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(tls)
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "ca.pem"))
    with _raw_server(answer, hold_open=False, tls=tls) as (port, connections):
        api = ApiClient(Settings(f"{scheme}://127.0.0.1:{port}/", None, None, 5), retries=0)
        for _ in range(3):
            assert api.read_range("datasets", "rec", "a.bin", 1, 0, 10) == b"0123456789"
        assert len(connections) == 3 and api.ranges_supported
        assert getattr(api._quick_gets._local, "conn", None) is not None  # each read came the quick way


def test_read_files_asks_contents_within_the_servers_limits(repo_server, dataset):
    name, blob = dataset
    api = client(repo_server, None)
    repo = ApiRepository(api)
    record = repo.record("datasets", name)
    entries = sorted(repo.files(record, 1), key=lambda e: (e.size > 1000, e.path))  # the 1 MiB file last
    expected = [blob if e.path == "odd name #1.bin" else None for e in entries]
    before = repo_server.stats()
    got = [bytes(b) for b in repo.read_files(record, entries)]
    assert all(g == x for g, x in zip(got, expected) if x is not None)
    assert [hashlib.sha1(g).hexdigest() for g in got] == [e.checksum for e in entries]
    assert repo_server.stats()["contents"]["requests"] - before["contents"]["requests"] == 1
    api._capabilities = {"contents": {"max_files": 2, "max_bytes": 1000}}  # a server with smaller limits
    assert [bytes(b) for b in repo.read_files(record, entries)] == got
    small = [e for e in entries if e.size <= 1000]
    assert repo_server.stats()["contents"]["requests"] - before["contents"]["requests"] == 1 + -(-len(small) // 2)


def test_a_lone_path_is_looked_up_at_once_on_the_callers_connection(repo_server, dataset):
    """A fresh mount's lookup of one path goes on the calling thread's kept-alive connection, tried
    once, with the answers of `lookup`: a file's entry, one entry under a folder, nothing."""
    name, _ = dataset
    repo = ApiRepository(client(repo_server, None))
    record = repo.record("datasets", name)
    for path in ("part0/file0000.txt", "part0", "part0/missing", "odd name #1.bin"):
        assert repo.lookup_at_once(record, 1, path) == repo.lookup(record, 1, path)
    assert getattr(repo.api._quick_gets._local, "conn", None) is not None  # it came the quick way


@pytest.mark.parametrize("answer", [b"HTTP/1.1 500 Oops\r\nContent-Length: 2\r\n\r\n{}",
                                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n[oops"])
def test_a_lookup_at_once_leaves_other_answers_to_the_full_way(answer):
    """An error or a body that is not JSON: None, and `lookup` (retries, typed errors) answers."""
    with _raw_server(answer, hold_open=False) as (port, seen):
        api = ApiClient(Settings(f"http://127.0.0.1:{port}/", None, None, 5), retries=0)
        assert api.lookup_at_once("datasets", "rec", 1, "a/b c.tif") is None
    assert seen[0].startswith(b"GET /datasets/rec/files?version=1&path=a%2Fb+c.tif HTTP/1.1\r\n")


def test_a_range_request_nothing_answers_costs_one_read_timeout():
    """A server that takes the connection and never answers (stopped, SIGSTOP): the quick path's
    urllib3 timeout was not taken for one, so the full way waited as long again, and behind the
    default 60 s timeout a mount's read took 120 s, past its 65 s bound."""
    with _raw_server(b"", hold_open=True) as (port, requests_seen):
        api = ApiClient(Settings(f"http://127.0.0.1:{port}/", None, None, 1), retries=2, backoff=0.01)
        started = time.monotonic()
        with pytest.raises(Unreachable, match="timed out"):
            api.read_range("datasets", "rec", "a.bin", 1, 0, 1000)
        assert time.monotonic() - started < 1.8 and len(requests_seen) == 1


def test_a_lookup_at_once_that_stalls_is_unreachable_after_the_read_timeout():
    """A server that takes the request and never answers: Unreachable after the read timeout, not
    None (the full way would wait as long again)."""

    with _raw_server(b"", hold_open=True) as (port, _):
        api = ApiClient(Settings(f"http://127.0.0.1:{port}/", None, None, 1), retries=0)
        start = time.monotonic()
        with pytest.raises(Unreachable, match="timed out"):
            api.lookup_at_once("datasets", "rec", 1, "a.tif")
        assert time.monotonic() - start < 4
