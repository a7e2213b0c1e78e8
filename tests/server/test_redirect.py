"""`eotdlfs serve --redirect-downloads`: downloads are 307s to presigned object-store URLs; the client
and the mount follow them for ranged reads, reuse a URL while it is good, and never send credentials
to the store. The store (moto) sits behind a recording proxy, which sees what the store is sent."""

from __future__ import annotations

import os
import time
from typing import Iterator

import pytest
import requests
from tests.conftest import FULL_MATRIX
from serverapi import Api

from eotdlfs.client.api import ApiClient
from eotdlfs.client.redirects import REUSE_MARGIN_S, PresignedUrls, expires_at
from eotdlfs.client.settings import Settings
from tests.conftest import RepoServer, _serve
from tests.reliability.faultproxy import FaultProxy

full_matrix = pytest.mark.skipif(not FULL_MATRIX, reason="PostgreSQL + S3: set EOTDLFS_FULL_MATRIX=1 (CI does)")
DATA = os.urandom(3 * 1024 * 1024 + 17)
CREDENTIALS = ("authorization", "x-api-key")


@pytest.fixture
def store_proxy(request) -> Iterator[FaultProxy]:
    with FaultProxy(request.getfixturevalue("s3").endpoint) as proxy:
        yield proxy


@pytest.fixture
def redirecting(request, store_proxy, tmp_path) -> Iterator[RepoServer]:
    """A PostgreSQL + S3 server with --redirect-downloads, its S3 endpoint the recording proxy; one file in it."""
    pg, s3 = request.getfixturevalue("postgres"), request.getfixturevalue("s3")
    env = {**s3.env, "AWS_ENDPOINT_URL": store_proxy.url.rstrip("/")}
    server = RepoServer(tmp_path / "root", env=env, db=pg.database(), blobs=s3.bucket(), args=("--redirect-downloads",))
    for running in _serve(server):
        api = Api(running, "datasets", running.token("alice"))
        running.rid = api.create("redirected")
        api.new_version(running.rid)
        assert api.batch(running.rid, 1, {"d/big.bin": DATA}).status_code == 200
        yield running


def _store_gets(proxy: FaultProxy) -> list[dict[str, str]]:
    """Headers of the GETs the object store was sent (lower-case names)."""
    return [{k.lower(): v for k, v in h.items()} for m, _, h in proxy.headers_seen if m == "GET"]


@full_matrix
def test_download_answers_307_to_the_store(redirecting, store_proxy):
    route = redirecting.url + f"datasets/{redirecting.rid}/download/d/big.bin"
    r = requests.get(route, allow_redirects=False, timeout=30)
    assert r.status_code == 307 and r.headers["location"].startswith(store_proxy.url)
    assert "X-Amz-Signature" in r.headers["location"]
    head = requests.head(route, timeout=30)  # HEAD is answered by the replica: a GET URL is refused for HEAD
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(DATA)
    ranged = requests.get(route, headers={"Range": "bytes=100-199"}, timeout=30)
    assert ranged.status_code == 206 and ranged.content == DATA[100:200]


@full_matrix
@pytest.mark.parametrize("credential", ["token", "api_key"])
def test_client_follows_the_redirect_reuses_the_url_and_sends_no_credentials(redirecting, store_proxy, credential):
    settings = Settings(redirecting.url, redirecting.token("alice") if credential == "token" else None,
                        redirecting.api_key("alice") if credential == "api_key" else None)
    client = ApiClient(settings)
    before = redirecting.stats()
    store_proxy.headers_seen.clear()
    try:
        for start in range(0, len(DATA), 1024 * 1024):
            assert bytes(client.read_range("datasets", redirecting.rid, "d/big.bin", None, start, 1024 * 1024)) \
                == DATA[start:start + 1024 * 1024]
        with client.download("datasets", redirecting.rid, "d/big.bin", None) as blocks:
            assert b"".join(blocks) == DATA
    finally:
        client.close()
    gets = _store_gets(store_proxy)
    assert [g for g in gets if any(c in g for c in CREDENTIALS)] == []
    after = redirecting.stats()
    assert after["downloads"] - before["downloads"] == 1  # one 307; every later read reused its URL
    assert after["bytes_sent"] == before["bytes_sent"]  # no byte went through the replica
    assert len(gets) == 5 and [g.get("range") for g in gets[:4]] == [
        f"bytes={s}-{s + 1024 * 1024 - 1}" for s in range(0, len(DATA), 1024 * 1024)]


@full_matrix
def test_requests_alone_would_send_a_session_api_key_to_the_store(redirecting, store_proxy):
    """Why the client never lets requests follow the 307: a session header survives the redirect."""
    session = requests.Session()
    session.headers["X-API-Key"] = "secret-key"
    session.headers["Authorization"] = "Bearer secret-token"
    store_proxy.headers_seen.clear()
    assert session.get(redirecting.url + f"datasets/{redirecting.rid}/download/d/big.bin", timeout=30).content == DATA
    (sent,) = _store_gets(store_proxy)
    assert sent.get("x-api-key") == "secret-key" and "authorization" not in sent


@full_matrix
def test_a_refused_url_is_asked_for_again(redirecting, store_proxy):
    client = ApiClient(Settings(redirecting.url, redirecting.token("alice"), None))
    try:
        assert bytes(client.read_range("datasets", redirecting.rid, "d/big.bin", None, 0, 10)) == DATA[:10]
        before = redirecting.stats()["downloads"]
        store_proxy.inject("error500", r"/blobs/", method="GET", count=1)  # the store refuses the kept URL once
        assert bytes(client.read_range("datasets", redirecting.rid, "d/big.bin", None, 10, 10)) == DATA[10:20]
        assert redirecting.stats()["downloads"] - before == 1  # asked the API for a new URL
    finally:
        client.close()


@full_matrix
def test_mount_reads_through_the_redirect(redirecting, store_proxy, mount_factory):
    store_proxy.headers_seen.clear()
    mount = mount_factory(redirecting)
    with open(mount.path / "datasets" / "redirected" / "v1" / "d" / "big.bin", "rb") as f:
        f.seek(2 * 1024 * 1024)
        assert f.read(4096) == DATA[2 * 1024 * 1024:2 * 1024 * 1024 + 4096]
        f.seek(0)
        assert f.read() == DATA
    gets = _store_gets(store_proxy)
    assert gets and [g for g in gets if any(c in g for c in CREDENTIALS)] == []
    assert redirecting.stats()["bytes_sent"] == 0


def test_presigned_urls_are_kept_until_shortly_before_they_expire():
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    url = f"http://s3/b/k?X-Amz-Date={stamp}&X-Amz-Expires=300&X-Amz-Signature=x"
    assert abs(expires_at(url, now) - (int(now) + 300)) <= 1
    assert expires_at("http://s3/b/k?Expires=1700000000", now) == 1700000000
    assert expires_at("http://elsewhere/k", now) > now
    urls = PresignedUrls()
    urls.put("fresh", url)
    old = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now - 300 + REUSE_MARGIN_S / 2))
    urls.put("expiring", f"http://s3/b/k?X-Amz-Date={old}&X-Amz-Expires=300")
    assert urls.get("fresh") == url and urls.get("expiring") is None
    urls.drop("fresh")
    assert urls.get("fresh") is None
