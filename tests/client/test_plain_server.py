"""A server without eotdlfs's extensions (like the official EOTDL API of Nov 2023): no `size` in listings,
no HEAD, no Range, no capabilities route, 409 for every error. The client must still give true sizes and
correct byte ranges. The server here is a small stand-in answering those read routes the official way."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from eotdlfs.client.api import ApiClient
from eotdlfs.client.errors import NotFound
from eotdlfs.client.repository import ApiRepository
from eotdlfs.client.settings import Settings
from eotdlfs.fs.namespace import Namespace

CONTENT = {"a.txt": b"hello world", "dir/b c.bin": bytes(range(256)) * 100}
RECORD = {"id": "rec1", "uid": "owner", "name": "plain-ds", "authors": ["a"], "source": "http://x", "license": "MIT",
          "versions": [{"version_id": 1, "createdAt": "2023-11-14T10:00:00.123000", "size": 25611}]}


class PlainHandler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self._send(405, b'{"detail":"Method Not Allowed"}')

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/datasets" and "name" in query:
            if query["name"][0] != RECORD["name"]:
                return self._send(409, b'{"detail":"Dataset doesn\'t exist"}')
            return self._send(200, json.dumps(RECORD).encode())
        if url.path == "/datasets":
            return self._send(200, json.dumps([RECORD]).encode())
        if url.path == "/datasets/rec1/files":
            files = [{"filename": p, "version": 1, "checksum": hashlib.sha1(b).hexdigest()} for p, b in CONTENT.items()]
            return self._send(200, json.dumps(files).encode())
        prefix = "/datasets/rec1/download/"
        if url.path.startswith(prefix) and unquote(url.path[len(prefix):]) in CONTENT:
            return self._send(200, CONTENT[unquote(url.path[len(prefix):])], "application/octet-stream")
        self._send(404, b'{"detail":"Not Found"}')


@pytest.fixture
def plain_api():
    server = ThreadingHTTPServer(("127.0.0.1", 0), PlainHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    api = ApiClient(Settings(f"http://127.0.0.1:{server.server_port}/", None, None, 10))
    try:
        yield api
    finally:
        api.close()
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_sizes_ranges_and_versions_without_extensions(plain_api):
    repo = ApiRepository(plain_api)
    assert plain_api.capabilities() == {} and not plain_api.supports_drafts
    record = repo.record("datasets", "plain-ds")
    assert [v.number for v in record.published] == [1]
    assert record.versions[0].created_at.year == 2023 and record.versions[0].created_at.tzinfo is not None
    entries = {e.path: e for e in repo.files(record, 1)}
    assert {p: e.size for p, e in entries.items()} == {p: len(b) for p, b in CONTENT.items()}
    big = entries["dir/b c.bin"]
    assert repo.read_range(record, big, 300, 1000) == CONTENT["dir/b c.bin"][300:1300]
    assert repo.read_range(record, big, len(CONTENT["dir/b c.bin"]) - 3, 10) == CONTENT["dir/b c.bin"][-3:]
    assert plain_api.ranges_supported is False
    assert [bytes(b) for b in repo.read_files(record, list(entries.values()))] == list(CONTENT.values())


def test_the_official_409_for_a_missing_record_is_not_found(plain_api):
    with pytest.raises(NotFound, match="Dataset 'nope' doesn't exist"):
        ApiRepository(plain_api).record("datasets", "nope")


def test_files_are_dated_by_their_version_when_the_server_gives_no_file_times(plain_api, tmp_path):
    repo = ApiRepository(plain_api)
    record = repo.record("datasets", "plain-ds")
    assert {e.created_at for e in repo.files(record, 1)} == {None}
    namespace = Namespace(repo, tmp_path)
    version_time = record.versions[0].created_at.timestamp()
    assert namespace.resolve("/datasets/plain-ds/v1/dir/b c.bin").mtime == version_time
    assert namespace.listed_file("/datasets/plain-ds/v1/a.txt")[1] == version_time
