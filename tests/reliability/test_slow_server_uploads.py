"""Uploads to a server that stops reading for longer than the connect timeout: the configured timeout
(`EOTDLFS_TIMEOUT`) governs sending each body, so every upload goes through in one attempt.

urllib3 used to send bodies under the connect timeout (5 s): a server pausing ~20 s failed every
file over 16 MiB after 4 attempts. Scaled down to stay fast: connect timeout 1 s, configured
timeout 8 s, the server (a fault proxy) stops reading each upload body for 3 s; and once as a
user meets it: `eotdlfs ingest` with its 5 s connect timeout, `EOTDLFS_TIMEOUT=10`, a 7 s pause.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from eotdlfs.client.api import ApiClient
from eotdlfs.client.ingest import ingest_folder
from eotdlfs.client.settings import Settings
from eotdlfs.metadata import load_metadata
from reliability.faultproxy import FaultProxy
from reliability.ingestkit import MiB, bytes_lost, make_folder, record, run_ingest

CONNECT_S, TIMEOUT_S, PAUSE_S = 1.0, 8.0, 3.0


@pytest.fixture(autouse=True)
def _own_hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EOTDLFS_CACHE_DIR", str(tmp_path / "cache"))


def slow_server_client(proxy: FaultProxy, server) -> ApiClient:
    settings = Settings(api_url=proxy.url, token=server.token("alice"), api_key=None, timeout=TIMEOUT_S)
    return ApiClient(settings, connect_timeout=CONNECT_S)


def folder_of(folder: Path, name: str, sizes: dict[str, int]) -> dict[str, bytes]:
    files = {"metadata.yml": f"name: {name}\nauthors: [Reliability]\nlicense: MIT\nsource: http://example.com\n".encode()}
    files.update({path: os.urandom(size) for path, size in sizes.items()})
    for path, data in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(data)
    return files


def test_an_ingest_through_a_server_pausing_past_the_connect_timeout_sends_each_body_once(
        module_server, unique_name, tmp_path, tally):
    name = unique_name("pause")
    # one 17 MiB file (2 multipart parts of 10 and 7 MiB) and 6 MiB of small files (one zip batch):
    # each body is larger than the ~3 MiB the socket buffers take while the server does not read
    files = folder_of(tmp_path / "src", name, {"big/scene.tif": 17 * MiB, **{f"tiles/{i}.bin": 2 * MiB for i in range(3)}})
    with FaultProxy(module_server.url) as proxy:
        parts = proxy.inject("pause", r"/chunk/", method="POST", delay=PAUSE_S)
        batches = proxy.inject("pause", r"/batch\?", method="POST", delay=PAUSE_S)
        api = slow_server_client(proxy, module_server)
        result = ingest_folder(api, "datasets", tmp_path / "src")
        tally.faults_injected += parts.hits + batches.hits
        record_id = api.record_by_name("datasets", name)["id"]
    assert (result.version, result.uploaded) == (1, 5)
    assert (parts.seen, batches.seen) == (2, 1)  # paused, and sent once: no attempt timed out
    lost = bytes_lost(module_server.url, "datasets", record_id, 1, files)
    tally.bytes_lost += lost
    assert lost == 0


def test_a_single_file_upload_through_a_server_pausing_past_the_connect_timeout_goes_through_once(
        module_server, unique_name, tmp_path, tally):
    name = unique_name("pause")
    folder_of(tmp_path / "src", name, {})
    data = os.urandom(6 * MiB)
    with FaultProxy(module_server.url) as proxy:
        api = slow_server_client(proxy, module_server)
        api.create_record("datasets", load_metadata(tmp_path / "src"))
        record_id = api.record_by_name("datasets", name)["id"]
        draft = api.create_version("datasets", record_id, draft=True)
        pause = proxy.inject("pause", rf"/datasets/{record_id}\?", method="POST", delay=PAUSE_S)
        api.upload_file("datasets", record_id, draft, "scene.tif", data, hashlib.sha1(data).hexdigest())
        tally.faults_injected += pause.hits
    assert pause.seen == 1
    stored = {f["filename"]: f["checksum"] for f in api.files("datasets", record_id, draft)}
    assert stored == {"scene.tif": hashlib.sha1(data).hexdigest()}


def test_eotdlfs_ingest_sends_parts_under_eotdlfs_timeout_not_the_connect_timeout(module_server, unique_name, tmp_path,
                                                                                   tally):
    name = unique_name("pause")
    files = make_folder(tmp_path / "src", name, small=3, large_bytes=17 * MiB)
    with FaultProxy(module_server.url) as proxy:
        parts = proxy.inject("pause", r"/chunk/", method="POST", delay=7.0)  # > 5 s connect, < EOTDLFS_TIMEOUT
        done = run_ingest(tmp_path / "src", proxy.url, module_server.token("alice"), tmp_path / "cache-home")
        tally.faults_injected += parts.hits
    assert done.returncode == 0, done.stderr
    assert parts.seen == 2
    lost = bytes_lost(module_server.url, "datasets", record(module_server.url, "datasets", name)["id"], 1, files)
    tally.bytes_lost += lost
    assert lost == 0
