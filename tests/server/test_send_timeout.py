"""A client that stops reading a download is cut after EOTDLFS_SEND_TIMEOUT_S; a slow reader never is.

Before, such a client kept its connection, the blob's open file and a chunk in memory for good.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time

import pytest
from serverapi import Api

SEND_TIMEOUT_S = 2
SIZE = 32 * 1024 * 1024  # well past what loopback's socket buffers of both ends hold
DATA = os.urandom(SIZE)


@pytest.fixture
def server(server_factory, local_only):
    return server_factory(env={"EOTDLFS_SEND_TIMEOUT_S": str(SEND_TIMEOUT_S)})


@pytest.fixture
def path(server) -> str:
    return Api(server, "datasets", server.token("alice")).published_file("sendtimeout", DATA)


def _get(server, path: str, requests: int = 1) -> socket.socket:
    """A connection having sent REQUESTS GETs of PATH: the whole file, or pieces of 256 KiB less one byte."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    ranged = f"Range: bytes=0-{256 * 1024 - 2}\r\n" if requests > 1 else ""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{ranged}\r\n".encode() * requests)
    return sock


def _open_files(pid: int) -> int:
    """The server's open sockets and opens of the blob (not SQLite's files, which its pool may add)."""
    blob = hashlib.sha1(DATA).hexdigest()
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue  # closed meanwhile
        count += target.startswith("socket:") or target.endswith(f"/{blob[:2]}/{blob[2:]}")
    return count


def _settled_open_files(pid: int) -> int:
    """`_open_files` once unchanged for a second: the sockets of the fixture's requests close meanwhile."""
    count, since = _open_files(pid), time.monotonic()
    deadline = since + 15
    while time.monotonic() - since < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
        if (now := _open_files(pid)) != count:
            count, since = now, time.monotonic()
    return count


# A download whole (streamed by the application), or small ranges asked without reading the answers
# (those the protocol answers itself, below ASGI, until writing pauses; then the application's).
REQUESTS = {"whole": 1, "small-ranges": 200}


@pytest.mark.parametrize("asked", REQUESTS)
def test_a_client_that_stops_reading_is_cut_and_its_blob_released(server, path, asked: str) -> None:
    pid = server._proc.pid
    before = _settled_open_files(pid)
    sock = _get(server, path, REQUESTS[asked])
    try:
        deadline = time.monotonic() + 10
        while _open_files(pid) < before + 1 + (asked == "whole") and time.monotonic() < deadline:  # socket, blob
            time.sleep(0.05)
        assert _open_files(pid) > before
        time.sleep(0.5)  # the answers are written as far as the client's buffers take them
        started = time.monotonic()
        while _open_files(pid) > before and time.monotonic() - started < SEND_TIMEOUT_S * 3 + 5:
            time.sleep(0.1)
        assert _open_files(pid) <= before, "the connection and the blob are still open"
        received = 0
        sock.settimeout(10)
        try:
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
        except ConnectionResetError:
            pass
        assert received < SIZE  # cut, not sent whole (the ranges: 50 MiB)
    finally:
        sock.close()


def test_a_slow_but_steady_reader_gets_the_whole_file(server, path) -> None:
    sock = _get(server, path)
    try:
        received = bytearray()
        slow_until = time.monotonic() + SEND_TIMEOUT_S * 3
        while time.monotonic() < slow_until:  # 64 KiB every 0.5 s, for three timeouts
            received += sock.recv(64 * 1024)
            time.sleep(0.5)
        deadline = time.monotonic() + 60
        head, _, rest = bytes(received).partition(b"\r\n\r\n")
        body = bytearray(rest)
        assert head.startswith(b"HTTP/1.1 200")
        while len(body) < SIZE and time.monotonic() < deadline:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            body += chunk
        assert hashlib.sha1(body).hexdigest() == hashlib.sha1(DATA).hexdigest()
    finally:
        sock.close()
