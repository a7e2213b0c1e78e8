"""A client that hangs up in the middle of a download stops the server reading its blob.

Before, uvicorn's `send` on a lost connection returned as if it had sent: the response read the
rest of the blob (a local file, or an object streamed from the bucket) to the end for nobody,
its file open and a worker thread busy the whole time; many such clients at once held as many.
"""

from __future__ import annotations

import os
import socket
import time

import pytest
import requests
from serverapi import Api

SIZE = 64 * 1024 * 1024  # far past what the socket buffers of both ends hold (a few MiB on loopback)
DATA = os.urandom(SIZE)
CLIENTS = 16


@pytest.fixture
def server(server_factory):
    return server_factory()


@pytest.fixture
def path(server) -> str:
    return Api(server, "datasets", server.token("alice")).published_file("hangup", DATA)


def _settled_bytes_sent(server) -> int:
    """The server's count of download bytes handed to connections, once unchanged for two seconds:
    a response that goes on reading after its client left keeps counting until the blob's end."""
    def sent() -> int:
        return requests.get(server.url + "eotdlfs/stats", timeout=30).json()["bytes_sent"]

    value, since = sent(), time.monotonic()
    deadline = since + 120
    while time.monotonic() - since < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
        if (now := sent()) != value:
            value, since = now, time.monotonic()
    return value


def _open_blob_files(server) -> int:
    """How many files the server has open in its blob folder (local layout; 0 for a bucket)."""
    count = 0
    for fd in os.listdir(f"/proc/{server._proc.pid}/fd"):
        try:
            count += "/blobs/" in os.readlink(f"/proc/{server._proc.pid}/fd/{fd}")
        except FileNotFoundError:
            continue  # closed meanwhile
    return count


def _assert_reading_stopped(server, sent_before: int, clients: int) -> None:
    """Each response read what its client and both socket buffers took, a few MiB, not the rest of the
    blob, and let go of the blob's file."""
    read_for_them = _settled_bytes_sent(server) - sent_before
    assert read_for_them < clients * SIZE / 2, f"{read_for_them / 2**20:.0f} MiB read for {clients} hung-up clients"
    deadline = time.monotonic() + 30
    while _open_blob_files(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _open_blob_files(server) == 0


def test_a_client_that_hangs_up_stops_the_reading_of_its_blob(server, path) -> None:
    before = _settled_bytes_sent(server)
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        received = 0
        while received < 1024 * 1024:
            chunk = sock.recv(256 * 1024)
            assert chunk, "the server closed first"
            received += len(chunk)
    _assert_reading_stopped(server, before, 1)


def test_many_clients_hanging_up_at_once_leave_no_reads_behind(server, path) -> None:
    before = _settled_bytes_sent(server)
    socks = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(CLIENTS)]
    try:
        for sock in socks:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        for sock in socks:
            assert sock.recv(64 * 1024)
    finally:
        for sock in socks:
            sock.close()
    _assert_reading_stopped(server, before, CLIENTS)
    assert requests.get(server.url + path.lstrip("/"), timeout=60).content == DATA  # and it still answers whole
