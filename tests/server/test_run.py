"""Running the server: `start_in_thread` (embedded mount, benchmarks) and `eotdlfs serve`."""

from __future__ import annotations

import requests

from eotdlfs.server.run import start_in_thread


def test_start_in_thread_serves_and_stops(tmp_path):
    server = start_in_thread(tmp_path / "root")
    try:
        assert server.url == f"http://127.0.0.1:{server.port}/" and server.port > 0
        assert requests.get(server.url + "eotdlfs/capabilities", timeout=10).status_code == 200
        assert requests.get(server.url + "datasets", timeout=10).json() == []
    finally:
        server.stop()
    assert not server.thread.is_alive()
    assert (tmp_path / "root" / "repository.db").exists() and (tmp_path / "root" / "secret").exists()


def test_two_servers_share_nothing(tmp_path):
    a, b = start_in_thread(tmp_path / "a"), start_in_thread(tmp_path / "b")
    try:
        assert a.port != b.port
    finally:
        a.stop()
        b.stop()


def test_serve_refuses_a_bad_cap(tmp_path):
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "eotdlfs", "serve", "--root", str(tmp_path), "--port", "0"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "EOTDLFS_MAX_BODY_BYTES": "lots"})
    assert done.returncode == 1
    assert done.stderr.strip().endswith("error: EOTDLFS_MAX_BODY_BYTES must be an integer, got 'lots'")


def test_stop_does_not_wait_for_a_stalled_download(tmp_path):
    import hashlib
    import socket
    import time

    server = start_in_thread(tmp_path / "root")
    try:
        from eotdlfs.server.auth import issue_token

        headers = {"Authorization": f"Bearer {issue_token(tmp_path / 'root', 'a')}"}
        rid = requests.post(server.url + "datasets", headers=headers, json={
            "name": "stall", "authors": ["a"], "source": "http://x", "license": "MIT"}).json()["dataset_id"]
        requests.post(server.url + f"datasets/version/{rid}", headers=headers)
        data = b"s" * (64 * 1024 * 1024)
        requests.post(server.url + f"datasets/{rid}?version=1", headers=headers, files={"file": ("big", data)},
                      data={"checksum": hashlib.sha1(data).hexdigest()})
        stalled = socket.create_connection(("127.0.0.1", server.port))
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.sendall(f"GET /datasets/{rid}/download/big HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        time.sleep(0.5)  # the server is now blocked writing to a reader that never reads
        start = time.monotonic()
    finally:
        server.stop(timeout=30)
    assert not server.thread.is_alive() and time.monotonic() - start < 15
    stalled.close()
