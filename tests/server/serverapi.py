"""Helpers for the server tests: an `Api` bound to one server, kind and user, zip/sha1 builders, and raw
HTTP over a socket."""

from __future__ import annotations

import hashlib
import io
import socket
import zipfile
from datetime import datetime

import requests


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def zip_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def one_answer(sock: socket.socket) -> bytes:
    """What the server sent on SOCK until it closed it or finished an answer ending in a JSON object;
    socket.timeout if it keeps it open."""
    answer = b""
    while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    return answer


class Api:
    """Requests against one server for one KIND, authenticated as one user (or nobody)."""

    def __init__(self, server, kind: str = "datasets", token: str | None = None):
        self.server, self.kind, self.url = server, kind, server.url
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def as_user(self, user: str | None) -> "Api":
        return Api(self.server, self.kind, self.server.token(user) if user else None)

    def of_kind(self, kind: str) -> "Api":
        api = Api(self.server, kind)
        api.headers = dict(self.headers)
        return api

    @property
    def noun(self) -> str:
        return self.kind[:-1]

    def req(self, method: str, path: str, **kw) -> requests.Response:
        headers = {**self.headers, **kw.pop("headers", {})}
        return requests.request(method, self.url + path, headers=headers, timeout=60, **kw)

    def get(self, path: str, **kw) -> requests.Response:
        return self.req("GET", path, **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return self.req("POST", path, **kw)

    # -- the official client's calls, asserting success --------------------

    def create(self, name: str, **extra) -> str:
        body = {"name": name, "authors": ["Ada"], "source": "http://example.com", "license": "MIT", **extra}
        r = self.post(self.kind, json=body)
        assert r.status_code == 200, r.text
        return r.json()[f"{self.noun}_id"]

    def new_version(self, rid: str, draft: bool = False) -> int:
        r = self.post(f"{self.kind}/version/{rid}" + ("?draft=true" if draft else ""))
        assert r.status_code == 200, r.text
        return r.json()["version"]

    def batch(self, rid: str, version: int, files: dict[str, bytes], checksums: list[str] | None = None):
        return self.post(f"{self.kind}/{rid}/batch?version={version}",
                         files={"batch": ("batch.zip", zip_of(files))},
                         data={"checksums": checksums if checksums is not None else [sha1(d) for d in files.values()]})

    def carry(self, rid: str, version: int, files: dict[str, str]):
        return self.post(f"{self.kind}/{rid}/files?version={version}",
                         data={"filenames": list(files), "checksums": list(files.values())})

    def files(self, rid: str, version: int | None = None) -> list[dict]:
        """Route 5's entries without their `createdAt` (checked to be an ISO 8601 time), for comparing the rest."""
        return [{k: v for k, v in f.items() if k != "createdAt"} for f in self.dated_files(rid, version)]

    def dated_files(self, rid: str, version: int | None = None) -> list[dict]:
        r = self.get(f"{self.kind}/{rid}/files" + (f"?version={version}" if version is not None else ""))
        assert r.status_code == 200, r.text
        for entry in r.json():
            datetime.fromisoformat(entry["createdAt"])
        return r.json()

    def record(self, name: str) -> dict:
        r = self.get(f"{self.kind}?name={name}")
        assert r.status_code == 200, r.text
        return r.json()

    def download(self, rid: str, path: str, file_version: int | None = None, **kw) -> requests.Response:
        q = f"?version={file_version}" if file_version is not None else ""
        return self.get(f"{self.kind}/{rid}/download/{path}{q}", **kw)

    def published_file(self, name: str, data: bytes) -> str:
        """The download path of DATA as the one file of version 1 of a new record NAME."""
        rid = self.create(name)
        self.new_version(rid)
        assert self.batch(rid, 1, {"big.bin": data}).status_code == 200
        return f"/{self.kind}/{rid}/download/big.bin"
