"""An https:// server (a real server on 127.0.0.1 with a certificate of a test CA): ranges come the
quick way when its certificate is trusted as requests would trust it, and a clear error when not."""

from __future__ import annotations

import gc
import hashlib
import http.client
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest
import trustme

from eotdlfs.client.api import ApiClient
from eotdlfs.client.errors import Unreachable
from eotdlfs.client.quickget import QuickGets
from eotdlfs.client.settings import Settings
from eotdlfs.server.run import RunningServer, start_in_thread
from tests.fs.datasets import ingest_one_file

SIZE = 3 * 1024 * 1024 + 17


@dataclass
class HttpsServer:
    """What the mount and ingest helpers use of a server: `url`, `token(user)`; the CA bundle trusting it."""

    running: RunningServer
    root: Path
    ca_bundle: str

    @property
    def url(self) -> str:
        return self.running.url

    def token(self, user: str) -> str:
        from eotdlfs.server.auth import issue_token

        return issue_token(self.root, user)


@pytest.fixture
def https_server_for(tmp_path: Path, monkeypatch) -> Iterator[Callable[[str], HttpsServer]]:
    """https_server_for(name) -> a server on https://127.0.0.1:PORT/ whose certificate, of a new
    test CA, names NAME; no CA bundle in the environment (the tests say which one requests trust)."""
    for variable in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("EOTDLFS_CACHE_DIR", str(tmp_path / "hash-cache"))
    running: list[RunningServer] = []

    def make(name: str) -> HttpsServer:
        folder = tmp_path / f"tls{len(running)}"
        folder.mkdir()
        ca, bundle = trustme.CA(), folder / "ca.pem"
        ca.cert_pem.write_to_path(str(bundle))
        issued = ca.issue_cert(name)
        issued.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
        issued.private_key_pem.write_to_path(str(folder / "key.pem"))
        running.append(start_in_thread(folder / "root", ssl_certfile=str(folder / "cert.pem"),
                                       ssl_keyfile=str(folder / "key.pem")))
        return HttpsServer(running[-1], folder / "root", str(bundle))

    try:
        yield make
    finally:
        # A client the test left holds a kept TLS connection until collected: the server's stop would
        # wait its whole graceful bound (5 s) for the close_notify that connection never answers.
        gc.collect()
        for server in running:
            server.stop()


@pytest.fixture
def published(https_server_for, unique_name, tmp_path, monkeypatch) -> tuple[HttpsServer, str, bytes]:
    """An https server for 127.0.0.1 with a dataset of one file 'big.bin': (server, record name, its bytes)."""
    server = https_server_for("127.0.0.1")
    name = unique_name("https")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", server.ca_bundle)
    data = ingest_one_file(server, tmp_path / "src", name, "big.bin", SIZE)
    return server, name, data


@pytest.mark.parametrize("bundle", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE folder"])
def test_ranges_of_an_https_server_come_the_quick_way_with_the_ca_bundle_of_the_environment(published, monkeypatch,
                                                                                          tmp_path, bundle):
    """The CA bundle requests would trust, named by either variable, a file or a folder (OpenSSL's
    hashed names, as `openssl rehash` makes them)."""
    server, name, data = published
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    variable, *folder = bundle.split()
    if folder:
        (tmp_path / "cas").mkdir()
        shutil.copy(server.ca_bundle, tmp_path / "cas" / "test-ca.pem")
        subprocess.run(["openssl", "rehash", str(tmp_path / "cas")], check=True, timeout=60)
    monkeypatch.setenv(variable, str(tmp_path / "cas") if folder else server.ca_bundle)
    api = ApiClient(Settings(server.url, server.token("alice"), None, 30))
    record_id = api.record_by_name("datasets", name)["id"]
    calls = []
    request = api._session.request
    monkeypatch.setattr(api._session, "request", lambda *a, **kw: calls.append(a) or request(*a, **kw))
    for start in (0, 70_000, SIZE - 1000):
        assert api.read_range("datasets", record_id, "big.bin", 1, start, 10_000) == data[start:start + 10_000]
    assert calls == [] and api.ranges_supported
    assert isinstance(getattr(api._quick_gets._local, "conn", None), http.client.HTTPSConnection)
    api.close()


@pytest.mark.parametrize("case", ["no CA given", "certificate of another host"])
def test_an_untrusted_certificate_fails_the_read_at_once_naming_the_url(published, https_server_for, monkeypatch,
                                                                        case):
    """No CA bundle trusting the server's certificate, or a trusted certificate naming another host:
    the read fails with the URL and why, without a retry (a long backoff would show one)."""
    server, name, _ = published
    trusted = ApiClient(Settings(server.url, None, None, 30))
    record_id = trusted.record_by_name("datasets", name)["id"]
    trusted.close()
    if case == "no CA given":
        monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    else:
        server = https_server_for("eotdl.example")
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", server.ca_bundle)
    api = ApiClient(Settings(server.url, None, None, 30), backoff=10)
    started = time.monotonic()
    with pytest.raises(Unreachable, match=f"at {server.url} .*certificate is not trusted"):
        api.read_range("datasets", record_id, "big.bin", 1, 0, 10_000)
    assert time.monotonic() - started < 5
    api.close()


def test_quick_gets_that_check_no_certificate_read_without_a_ca(published, monkeypatch):
    """A session with `verify=False` (requests then checks nothing): its quick GETs neither."""
    server, name, data = published
    api = ApiClient(Settings(server.url, None, None, 30))
    record_id = api.record_by_name("datasets", name)["id"]
    api.close()
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    gets = QuickGets(server.url, {}, 5, 5, verify=False)
    body, status, _ = gets.range_body(f"/datasets/{record_id}/download/big.bin", {"Range": "bytes=0-9"})
    assert (status, bytes(body)) == (206, data[:10])
    gets.close()


def test_a_mount_of_an_https_server_reads_files_byte_identical(published, mount_factory):
    server, name, data = published  # REQUESTS_CA_BUNDLE is set: the mount gets it
    mnt = mount_factory(server)
    out = subprocess.run(["sha1sum", str(mnt.path / "datasets" / name / "v1" / "big.bin")],
                         check=True, capture_output=True, text=True, timeout=60).stdout.split()[0]
    assert out == hashlib.sha1(data).hexdigest()
