"""The EOTDL repository HTTP API (every route of the contract plus eotdlfs's extensions), one method per route.

One pooled `requests.Session` shared by all threads; every call has a short connect timeout,
and the configured timeout (`EOTDLFS_TIMEOUT`) for sending the request, body included
(`transport.py`), and for the answer; idempotent calls (GET/HEAD, and uploads the server
treats idempotently) are retried with exponential backoff on connection errors and
502/503/504; a 4xx is never retried, nor a GET/HEAD whose answer did not come within the
timeout (a silent server costs one timeout, not one per try). Failures come out as the typed exceptions of `eotdlfs.client.errors`.

Servers without the extensions are served too: no `size` in listings -> the size comes
from a HEAD (or the Content-Length of a GET) of the download route, cached; no Range ->
the whole file is fetched and the slice returned (`ranges_supported` says which way the
last range read went); no capabilities route -> no drafts.

Locks. `_lock` guards the size and capability caches and is held for dict work only;
`requests.Session` is shared without it (its connection pool is thread-safe). No other
object's lock is taken under it.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator, Sequence
from urllib.parse import quote

import requests
import urllib3

from eotdlfs.client.bodies import DOWNLOAD_BLOCK, body_in_pages, whole_body
from eotdlfs.client.errors import (NotFound, RepositoryError, ServerError, Unreachable, error_for_status, failure_reason,
                                   not_trusted, timed_out)
from eotdlfs.client.quickget import QuickGets
from eotdlfs.client.redirects import PresignedUrls
from eotdlfs.client.settings import Settings
from eotdlfs.client.transport import SendTimeoutAdapter
from eotdlfs.metadata import Metadata, record_noun
from eotdlfs.repository import Arrived

CONNECT_TIMEOUT = 5.0
POOL_SIZE = 32
RETRYABLE_STATUS = (502, 503, 504)
ASSEMBLY_BYTES_PER_S = 20e6  # a slow server's speed at assembling and hashing a multipart upload


def file_url_path(path: str) -> str:
    """A record file path for a URL: each segment percent-encoded, '/' kept between segments."""
    return "/".join(quote(segment, safe="") for segment in path.split("/"))


def _detail(response: requests.Response) -> str:
    """The server's `detail`, or a short description when the body is not the usual JSON."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip().splitlines()
        return text[0][:200] if text else f"HTTP {response.status_code} {response.reason}"
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):  # FastAPI validation errors: [{"loc": [...], "msg": ...}, ...]
        return "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', ())[1:])}: {d.get('msg', '')}" if isinstance(d, dict) else str(d)
            for d in detail
        )
    return f"HTTP {response.status_code} {response.reason}"


class ApiClient:
    """The routes of one repository server; thread-safe."""

    def __init__(self, settings: Settings, retries: int = 3, backoff: float = 0.2,
                 connect_timeout: float = CONNECT_TIMEOUT):
        if not settings.api_url:
            raise ValueError("no API URL configured; set EOTDL_API_URL or --api-url")
        # set once
        self.settings = settings
        self.base_url = settings.api_url
        self._retries = retries
        self._backoff = backoff
        self._connect_timeout = connect_timeout
        self._session = requests.Session()
        # requests are sent under the configured timeout, not urllib3's default of the connect timeout
        adapter = SendTimeoutAdapter(settings.timeout, pool_connections=4, pool_maxsize=POOL_SIZE, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        if settings.token:
            self._session.headers["Authorization"] = f"Bearer {settings.token}"
        if settings.api_key:
            self._session.headers["X-API-Key"] = settings.api_key
        # for presigned object-store URLs (see eotdlfs.client.redirects): never any credentials on it
        self._store = requests.Session()
        self._store.mount("http://", SendTimeoutAdapter(settings.timeout, pool_maxsize=POOL_SIZE, max_retries=0))
        self._store.mount("https://", SendTimeoutAdapter(settings.timeout, pool_maxsize=POOL_SIZE, max_retries=0))
        self._presigned = PresignedUrls()
        # `_quick_range` when no proxy is set, checking certificates as requests would (`verify`, CA
        # bundles in the environment); a plain flag, cleared when ranges come another way.
        env = self._session.merge_environment_settings(self.base_url, {}, None, None, None)
        self._quick = not env["proxies"]
        self._quick_gets = QuickGets(self.base_url, self._session.headers, connect_timeout, settings.timeout,
                                     env["verify"])
        # guarded by _lock
        self._lock = threading.Lock()
        self._sizes: dict[tuple[str, str, str, int | None], int] = {}
        self._capabilities: dict[str, Any] | None = None
        # What the last range read found: True when the server honoured Range, False when it
        # sent the whole file (sliced here), None before any. A plain flag, set without the lock:
        # it only reports which path served the bytes (the tests of both paths read it).
        self.ranges_supported: bool | None = None

    def close(self) -> None:
        self._session.close()
        self._store.close()
        self._quick_gets.close()

    # ---- transport

    def _request(
        self, method: str, route: str, *, idempotent: bool, ok: Sequence[int] = (200,), **kwargs: Any
    ) -> requests.Response:
        """One call with timeout, retries for idempotent calls, and errors raised as typed exceptions."""
        url = self.base_url + route
        kwargs.setdefault("timeout", (self._connect_timeout, self.settings.timeout))
        attempts = self._retries + 1 if idempotent else 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = self._session.request(method, url, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                # a read is not retried after a timeout (docstring); an upload is (a slow store)
                if last or not_trusted(exc) or (isinstance(exc, requests.ReadTimeout) and method in ("GET", "HEAD")):
                    raise self._unreachable(exc) from exc
            else:
                if response.status_code in ok:
                    return response
                if response.status_code in RETRYABLE_STATUS and not last:
                    response.close()
                else:
                    error = error_for_status(response.status_code, _detail(response))
                    response.close()
                    raise error
            time.sleep(self._backoff * (2**attempt))
        raise AssertionError("unreachable")  # the loop always returns or raises

    def _unreachable(self, exc: Exception) -> Unreachable:
        return Unreachable(f"cannot reach the repository at {self.base_url} ({failure_reason(exc)})")

    def _json(self, method: str, route: str, *, idempotent: bool, **kwargs: Any) -> Any:
        response = self._request(method, route, idempotent=idempotent, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise ServerError(f"{method} {route}: answer is not JSON", response.status_code) from exc

    def check_listening(self, answer_wait: float = 0.5) -> None:
        """Raise Unreachable when nothing takes a connection at the API URL (refused, no such
        host, connect timeout), retried as idempotent calls are. A server that takes it is
        there, even if it does not answer within ANSWER_WAIT seconds: its calls time out alone."""
        for attempt in range(self._retries + 1):
            try:
                self._session.head(self.base_url, timeout=(self._connect_timeout, answer_wait)).close()
                return
            except requests.ReadTimeout:
                return
            except requests.ConnectionError as exc:
                if attempt == self._retries or not_trusted(exc):
                    raise self._unreachable(exc) from exc
            time.sleep(self._backoff * (2**attempt))

    # ---- extensions

    def capabilities(self) -> dict[str, Any]:
        """The server's eotdlfs extensions; `{}` for a plain EOTDL server (the route answers 404)."""
        with self._lock:
            if self._capabilities is not None:
                return self._capabilities
        try:
            caps = self._json("GET", "eotdlfs/capabilities", idempotent=True)
        except NotFound:
            caps = {}
        except RepositoryError as exc:
            if exc.status in (404, 405):
                caps = {}
            else:
                raise
        with self._lock:
            self._capabilities = caps if isinstance(caps, dict) else {}
            return self._capabilities

    @property
    def supports_drafts(self) -> bool:
        return bool(self.capabilities().get("drafts"))

    # ---- records (routes 1-4, plus draft, publish, discard)

    def records(self, kind: str, match: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("match", match), ("limit", limit)) if v is not None}
        return self._json("GET", kind, idempotent=True, params=params)

    def record_by_name(self, kind: str, name: str) -> dict[str, Any]:
        try:
            data = self._json("GET", kind, idempotent=True, params={"name": name})
        except NotFound:
            data = None  # the server's "Dataset doesn't exist" does not say which
        if not isinstance(data, dict):  # (a server that ignores ?name= answers the whole list)
            raise NotFound(f"{record_noun(kind)} {name!r} doesn't exist", 404)
        return data

    def create_record(self, kind: str, metadata: Metadata) -> str:
        data = self._json("POST", kind, idempotent=False, json=metadata.to_json())
        return str(data.get("dataset_id") or data.get("model_id"))

    def create_version(self, kind: str, record_id: str, draft: bool = False) -> int:
        params = {"draft": "true"} if draft else None
        data = self._json("POST", f"{kind}/version/{quote(record_id, safe='')}", idempotent=False, params=params)
        return int(data["version"])

    def publish(self, kind: str, record_id: str, version: int, base: int | None = None) -> None:
        """Publish draft VERSION; with BASE (the latest published version it was diffed against, 0 for none),
        only if that is still the latest: else Conflict (409) and nothing is published."""
        params = {"version": version} if base is None else {"version": version, "base": base}
        self._request("POST", f"{kind}/{quote(record_id, safe='')}/publish", idempotent=True, params=params)

    def discard_draft(self, kind: str, record_id: str, version: int) -> None:
        self._request("DELETE", f"{kind}/{quote(record_id, safe='')}/version/{version}", idempotent=False)

    # ---- files (routes 5-12)

    def files(self, kind: str, record_id: str, version: int | None = None,
              path: str | None = None) -> list[dict[str, Any]]:
        """Route 5: the files of dataset VERSION (every file version of every path when None);
        with PATH, what our server has at PATH (see `Repository.lookup`), the whole list from
        a server that ignores it."""
        params = {k: v for k, v in (("version", version), ("path", path)) if v is not None} or None
        return self._json("GET", f"{kind}/{quote(record_id, safe='')}/files", idempotent=True, params=params)

    def upload_batch(self, kind: str, record_id: str, version: int, zip_bytes: bytes, checksums: Sequence[str]) -> None:
        """Route 6: a zip of small files, `checksums` in the zip's entry order."""
        self._request(
            "POST", f"{kind}/{quote(record_id, safe='')}/batch", idempotent=True,
            params={"version": version},
            files={"batch": ("batch.zip", zip_bytes, "application/zip")},
            data={"checksums": list(checksums)},
        )

    def carry(self, kind: str, record_id: str, version: int, paths: Sequence[str], checksums: Sequence[str],
              any_path: bool = False) -> None:
        """Route 7: add already-stored files (path + checksum) to VERSION without sending bytes; ANY_PATH
        (servers whose capabilities say `carry_any_path`): also under a path that never had those bytes."""
        params: dict[str, Any] = {"version": version}
        if any_path:
            params["any_path"] = "true"
        self._request("POST", f"{kind}/{quote(record_id, safe='')}/files", idempotent=True,
                      params=params, data={"filenames": list(paths), "checksums": list(checksums)})

    @property
    def carries_any_path(self) -> bool:
        """Whether route 7 takes known bytes under a new path (`carry_any_path`): renames and copies send nothing."""
        return bool(self.capabilities().get("carry_any_path"))

    def upload_file(self, kind: str, record_id: str, version: int, path: str, data: bytes, checksum: str) -> None:
        """Route 8: one file in one request."""
        self._request(
            "POST", f"{kind}/{quote(record_id, safe='')}", idempotent=True,
            params={"version": version}, files={"file": (path, data)}, data={"checksum": checksum},
        )

    def start_multipart(self, kind: str, record_id: str, path: str, checksum: str) -> tuple[str, list[int]]:
        """Route 10: an upload id for PATH, and the part numbers the server already has (resume)."""
        data = self._json(
            "POST", f"{kind}/{quote(record_id, safe='')}/uploadId", idempotent=True,
            json={"filname": path, "checksum": checksum},
        )
        return str(data["upload_id"]), [int(p) for p in data.get("parts") or []]

    def upload_chunk(self, kind: str, upload_id: str, part_number: int, chunk: bytes, md5: str,
                     encoding: str | None = None, size: int | None = None) -> None:
        """Route 11: one part (numbered from 1) with the MD5 hex of its bytes. ENCODING, for servers whose
        capabilities list it in `part_encodings`: 'deflate', CHUNK is those bytes deflated; 'zeros', the part
        is SIZE zero bytes and CHUNK is empty. MD5 is always of the part's SIZE bytes."""
        data = {"part_number": str(part_number), "checksum": md5}
        if encoding is not None:
            data.update(encoding=encoding, size=str(size))
        self._request("POST", f"{kind}/chunk/{quote(upload_id, safe='')}", idempotent=True,
                      files={"file": ("chunk", chunk)}, data=data)

    def complete_multipart(self, kind: str, upload_id: str, version: int, size: int = 0) -> None:
        """Route 12: assemble the parts into a file of VERSION. The server reads and hashes all SIZE bytes
        first, so the answer may take longer than the usual read timeout."""
        read_timeout = max(self.settings.timeout, size / ASSEMBLY_BYTES_PER_S)
        self._request("POST", f"{kind}/complete/{quote(upload_id, safe='')}", idempotent=False,
                      params={"version": version}, timeout=(self._connect_timeout, read_timeout))

    # ---- downloads (route 9)

    def _download_route(self, kind: str, record_id: str, path: str) -> str:
        return f"{kind}/{quote(record_id, safe='')}/download/{file_url_path(path)}"

    @staticmethod
    def _version_params(file_version: int | None) -> dict[str, int] | None:
        return {"version": file_version} if file_version is not None else None

    def _download_get(self, kind: str, record_id: str, path: str, file_version: int | None,
                      headers: dict[str, str]) -> requests.Response:
        """A streamed GET of route 9 (200, 206 or 416), from the object store when the server redirects there.

        The presigned URL is reused while good; refused (any other answer) it is dropped and the API
        asked again once. Requests never follows the redirect itself (see eotdlfs.client.redirects)."""
        key = (kind, record_id, path, file_version)
        url = self._presigned.get(key)
        if url is not None:
            response = self._store_get(url, headers)
            if response.status_code in (200, 206, 416):
                return response
            response.close()
            self._presigned.drop(key)
        response = self._request("GET", self._download_route(kind, record_id, path), idempotent=True,
                                 ok=(200, 206, 307, 416), params=self._version_params(file_version), headers=headers,
                                 stream=True, allow_redirects=False)
        if response.status_code != 307:
            return response
        url = response.headers.get("Location")
        response.close()
        if not url:
            raise ServerError(f"{path}: a redirect without a Location", 307)
        self._presigned.put(key, url)
        response = self._store_get(url, headers)
        if response.status_code not in (200, 206, 416):
            response.close()
            self._presigned.drop(key)
            raise error_for_status(response.status_code, f"{path}: the object store answered {response.status_code}")
        return response

    def _quick_range(self, kind: str, record_id: str, path: str, file_version: int | None, headers: dict[str, str],
                     progress: Arrived | None = None) -> tuple[memoryview | None, Exception | None]:
        """A plain 206 range of route 9 through `QuickGets`, skipping requests' and urllib3's
        per-call work (see eotdlfs.client.quickget): (bytes, None); else (None,
        None), or (None, the error) when the connection failed (a first try spent)."""
        if not self._quick or self._presigned.get((kind, record_id, path, file_version)) is not None:
            return None, None
        url = self._quick_gets.base + self._download_route(kind, record_id, path)
        if file_version is not None:
            url += f"?version={int(file_version)}"
        try:
            body, status, location = self._quick_gets.range_body(url, headers, progress)
        except (urllib3.exceptions.HTTPError, requests.RequestException) as exc:  # no connection; a broken body
            return None, exc
        if body is None:
            self._quick = status not in (200, 307)  # a server without ranges, or redirecting
            if status == 307 and location:  # the store's URL, for the full way to reuse
                self._presigned.put((kind, record_id, path, file_version), location)
        return body, None

    def _store_get(self, url: str, headers: dict[str, str]) -> requests.Response:
        try:
            return self._store.get(url, headers=headers, stream=True, allow_redirects=False,
                                   timeout=(self._connect_timeout, self.settings.timeout))
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise Unreachable(f"cannot reach the object store ({failure_reason(exc)})") from exc

    def head_file(self, kind: str, record_id: str, path: str, file_version: int | None) -> int:
        """The size of one file version, from HEAD (or a GET's Content-Length where HEAD is refused); cached."""
        key = (kind, record_id, path, file_version)
        with self._lock:
            if key in self._sizes:
                return self._sizes[key]
        route, params = self._download_route(kind, record_id, path), self._version_params(file_version)
        try:
            response = self._request("HEAD", route, idempotent=True, params=params)
        except RepositoryError as exc:
            if exc.status != 405:
                raise
            response = self._request("GET", route, idempotent=True, params=params, stream=True)
        response.close()
        length = response.headers.get("Content-Length")
        if length is None:
            raise ServerError(f"no Content-Length for {path}", response.status_code)
        with self._lock:
            self._sizes[key] = int(length)
        return int(length)

    def contents(self, kind: str, record_id: str, files: Sequence[tuple[str, int]]) -> bytes:
        """Our extension `contents`: the bytes of FILES (path, file version), one after another."""
        return self._request("POST", f"{kind}/{quote(record_id, safe='')}/contents", idempotent=True,
                             json={"files": [list(f) for f in files]}).content

    def read_range(self, kind: str, record_id: str, path: str, file_version: int | None, start: int,
                   length: int, progress: Arrived | None = None) -> bytes | memoryview:
        """LENGTH bytes of a file version from START (fewer at end of file, b'' past it), in
        page-aligned memory when the server sent a range (see `body_in_pages`).

        A connection broken mid-body (reset, or fewer bytes than Content-Length) is retried like
        any idempotent read; short bytes are never returned. A body that stalls past the read
        timeout is not: the reader has waited long enough. PROGRESS: see `pages_of`.
        """
        if length <= 0:
            return b""
        headers = {"Range": f"bytes={start}-{start + length - 1}"}
        quick, failed = self._quick_range(kind, record_id, path, file_version, headers, progress)
        if quick is not None:
            self.ranges_supported = True
            return quick
        if failed is not None:  # that was the first try
            if self._retries == 0 or timed_out(failed) or not_trusted(failed):
                raise self._unreachable(failed) from failed
            time.sleep(self._backoff)
        for attempt in range(0 if failed is None else 1, self._retries + 1):
            response = self._download_get(kind, record_id, path, file_version, headers)
            try:
                if response.status_code == 416:
                    self.ranges_supported = True
                    return b""
                body = body_in_pages(response, progress) if response.status_code == 206 else whole_body(response)
                break
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                if attempt == self._retries or timed_out(exc):
                    raise self._unreachable(exc) from exc
            finally:
                response.close()
            time.sleep(self._backoff * (2**attempt))
        if response.status_code == 206:
            self.ranges_supported = True
            return body
        self.ranges_supported = False  # the whole file came back: slice it
        return body[start:start + length]

    @contextmanager
    def download(self, kind: str, record_id: str, path: str, file_version: int | None) -> Iterator[Iterator[bytes]]:
        """A whole file version as an iterator of blocks (the connection is released on exit)."""
        response = self._download_get(kind, record_id, path, file_version, {})
        if response.status_code != 200:
            response.close()
            raise ServerError(f"{path}: answered {response.status_code} to a plain GET", response.status_code)
        try:
            yield response.iter_content(DOWNLOAD_BLOCK)
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            raise self._unreachable(exc) from exc
        finally:
            response.close()

