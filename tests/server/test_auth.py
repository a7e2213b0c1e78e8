"""Auth: reads are public; every write needs a valid token or API key, and the record's owner."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time

import jwt
import pytest
import requests
from serverapi import Api, sha1, zip_of

from eotdlfs.server.auth import load_secret


def _b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _bad_credentials(server) -> dict[str, dict[str, str]]:
    now = int(time.time())
    secret = server.secret()
    claims = {"sub": "alice", "iat": now, "exp": now + 3600}
    bearer = lambda t: {"Authorization": f"Bearer {t}"}  # noqa: E731
    return {
        "none": {},
        "garbage": bearer("not-a-jwt"),
        "other-secret": bearer(jwt.encode(claims, "someone else's secret, long enough for HS256", algorithm="HS256")),
        "alg-none": bearer(f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."),
        "expired": bearer(jwt.encode({**claims, "iat": now - 7200, "exp": now - 3600}, secret, algorithm="HS256")),
        "no-sub": bearer(jwt.encode({"iat": now, "exp": now + 3600}, secret, algorithm="HS256")),
        "hs512": bearer(jwt.encode(claims, secret, algorithm="HS512")),
        "basic-scheme": {"Authorization": "Basic YWxpY2U6cHc="},
        "bad-api-key": {"X-API-Key": "eotdlfs_nope"},
    }


class Fixture:
    """A record owned by alice with version 1, one file, and an open upload."""

    def __init__(self, api: Api, name: str):
        self.api, self.name = api, name
        self.rid = api.create(name)
        api.new_version(self.rid)
        api.new_version(self.rid, draft=True)
        assert api.batch(self.rid, 1, {"f": b"f"}).status_code == 200
        r = api.post(f"{api.kind}/{self.rid}/uploadId", json={"filname": "u", "checksum": sha1(b"u")})
        self.upload_id = r.json()["upload_id"]

    def writes(self) -> dict[str, tuple[str, str, dict]]:
        k, rid, up = self.api.kind, self.rid, self.upload_id
        return {
            "create": ("POST", k, {"json": {"name": self.name + "-x", "authors": ["a"], "source": "http://x",
                                            "license": "MIT"}}),
            "version": ("POST", f"{k}/version/{rid}", {}),
            "batch": ("POST", f"{k}/{rid}/batch?version=1",
                      {"files": {"batch": ("b.zip", zip_of({"g": b"g"}))}, "data": {"checksums": [sha1(b"g")]}}),
            "carry": ("POST", f"{k}/{rid}/files?version=1", {"data": {"filenames": ["f"], "checksums": [sha1(b"f")]}}),
            "file": ("POST", f"{k}/{rid}?version=1", {"files": {"file": ("h", b"h")}, "data": {"checksum": sha1(b"h")}}),
            "uploadId": ("POST", f"{k}/{rid}/uploadId", {"json": {"filname": "v", "checksum": sha1(b"v")}}),
            "chunk": ("POST", f"{k}/chunk/{up}", {"files": {"file": ("c", b"u")},
                                                  "data": {"part_number": 1, "checksum": "7b774effe4a349c6dd82ad4f4f21d34c"}}),
            "complete": ("POST", f"{k}/complete/{up}?version=1", {}),
            "publish": ("POST", f"{k}/{rid}/publish?version=2", {}),
            "discard": ("DELETE", f"{k}/{rid}/version/2", {}),
        }

    def state(self) -> tuple:
        rec = self.api.record(self.name)
        return (rec["versions"], rec["drafts"], self.api.files(self.rid),
                self.api.get(f"{self.api.kind}?name={self.name}-x").status_code)


@pytest.fixture
def owned(api, unique_name) -> Fixture:
    return Fixture(api, unique_name("auth"))


ROUTES = ["create", "version", "batch", "carry", "file", "uploadId", "chunk", "complete", "publish", "discard"]


@pytest.mark.parametrize("route", ROUTES)
def test_writes_refuse_bad_credentials(owned, repo_server, route):
    method, path, kw = owned.writes()[route]
    before = owned.state()
    for label, headers in _bad_credentials(repo_server).items():
        r = requests.request(method, repo_server.url + path, headers=headers, timeout=30, **kw)
        assert r.status_code == 401, (label, r.text)
        assert isinstance(r.json()["detail"], str)
    assert owned.state() == before


def test_401_details(owned, repo_server):
    creds = _bad_credentials(repo_server)
    url = repo_server.url + f"{owned.api.kind}/version/{owned.rid}"
    detail = lambda label: requests.post(url, headers=creds[label], timeout=30).json()["detail"]  # noqa: E731
    assert detail("none") == "Not authenticated"
    assert detail("other-secret") == "Invalid token"
    assert detail("alg-none") == "Invalid token"
    assert detail("expired") == "Token expired"
    assert detail("bad-api-key") == "Invalid API key"


@pytest.mark.parametrize("route", [r for r in ROUTES if r != "create"])
def test_writes_by_other_user_are_403(owned, route):
    method, path, kw = owned.writes()[route]
    before = owned.state()
    r = owned.api.as_user("mallory").req(method, path, **kw)
    assert r.status_code == 403, r.text
    assert r.json() == {"detail": f"You are not the owner of this {owned.api.noun}"}
    assert owned.state() == before


@pytest.mark.parametrize("route", ROUTES)
def test_writes_by_owner_succeed(owned, route):
    method, path, kw = owned.writes()[route]
    if route == "complete":  # needs its part first
        assert owned.api.req(*owned.writes()["chunk"][:2], **owned.writes()["chunk"][2]).status_code == 200
    r = owned.api.req(method, path, **kw)
    assert r.status_code == 200, r.text


def test_api_key_works_as_owner(owned, repo_server):
    key = repo_server.api_key("alice")
    r = requests.post(repo_server.url + f"{owned.api.kind}/version/{owned.rid}", headers={"X-API-Key": key})
    assert r.status_code == 200
    other = repo_server.api_key("mallory")
    r = requests.post(repo_server.url + f"{owned.api.kind}/version/{owned.rid}", headers={"X-API-Key": other})
    assert r.status_code == 403


def test_reads_need_no_auth_and_accept_it(owned, repo_server):
    anonymous = Api(repo_server, owned.api.kind)
    for api in (anonymous, owned.api):
        assert api.get(owned.api.kind).status_code == 200
        assert api.record(owned.name)["id"] == owned.rid
        assert api.files(owned.rid, 1)
        assert api.download(owned.rid, "f").content == b"f"
    # a bad token on a read is ignored, not refused
    assert requests.get(repo_server.url + owned.api.kind, headers={"Authorization": "Bearer junk"}).status_code == 200


def test_token_command(tmp_path):
    root = tmp_path / "root"
    done = subprocess.run([sys.executable, "-m", "eotdlfs", "token", "--root", str(root), "--user", "zoe"],
                          capture_output=True, text=True, timeout=60, check=True)
    token = done.stdout.strip()
    assert "\n" not in token and done.stderr.startswith("api key: eotdlfs_")
    claims = jwt.decode(token, load_secret(root), algorithms=["HS256"])
    assert claims["sub"] == "zoe" and claims["exp"] - claims["iat"] == 30 * 24 * 3600
    assert (root / "secret").stat().st_mode & 0o777 == 0o600
    # the official client decodes the token without verifying it
    assert jwt.decode(token, options={"verify_signature": False})["sub"] == "zoe"


def test_token_command_refuses_empty_user(tmp_path):
    done = subprocess.run([sys.executable, "-m", "eotdlfs", "token", "--root", str(tmp_path), "--user", " "],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip() == "error: --user must not be empty"


@pytest.mark.parametrize("header", ["Authorization", "X-API-Key"])
def test_a_credential_header_sent_twice_is_refused(repo_server, unique_name, header):
    """Two values of one credential header: a proxy and this server may each pick another one, so
    neither is taken (the server used to act as the first, here bob, whatever the second said)."""
    import http.client

    values = {"Authorization": [f"Bearer {repo_server.token(u)}" for u in ("bob", "alice")],
              "X-API-Key": ["eotdlfs_one", "eotdlfs_two"]}[header]
    name = unique_name("twice")
    body = json.dumps({"name": name, "authors": ["a"], "source": "http://x", "license": "MIT"}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", repo_server.port, timeout=30)
    try:
        conn.putrequest("POST", "/datasets")
        for value in values:
            conn.putheader(header, value)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        answer = conn.getresponse()
        status, detail = answer.status, json.loads(answer.read())["detail"]
    finally:
        conn.close()
    assert (status, detail) == (401, f"More than one {header} header")
    assert requests.get(repo_server.url + f"datasets?name={name}", timeout=30).status_code == 404
