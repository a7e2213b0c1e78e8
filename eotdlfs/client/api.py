"""The EOTDL repository HTTP API (every route of the contract plus eotdlfs's extensions), one method per route.

One pooled `requests.Session` shared by all threads; every call has a short connect timeout,
and the configured timeout (`EOTDLFS_TIMEOUT`) for sending the request, body included
(`transport.py`), and for the answer; idempotent calls (GET/HEAD, and uploads the server
treats idempotently) are retried with exponential backoff on connection errors and
502/503/504; a 4xx is never retried, nor a GET/HEAD whose answer did not come within the
timeout (a silent server costs one timeout, not one per try). Failures come out as the typed
exceptions of `eotdlfs.client.errors`.

Route 9 (downloads) is in `downloads_api.py`. Servers without the extensions are served too:
no `size` in listings -> the size comes from a HEAD (or the Content-Length of a GET) of the
download route, cached; no Range -> the whole file is fetched and the slice returned
(`ranges_supported` says which way the last range read went); no capabilities route -> no drafts.

Locks. `_lock` guards the size and capability caches and is held for dict work only;
`requests.Session` is shared without it (its connection pool is thread-safe). No other
object's lock is taken under it.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Sequence
from urllib.parse import quote, urlencode

import requests
import urllib3

from eotdlfs.client.errors import (NotFound, RepositoryError, ServerError, Unreachable, error_for_status,
                                   failure_reason, not_trusted, timed_out)
from eotdlfs.client.downloads_api import FileDownloads
from eotdlfs.client.quickget import QuickGets
from eotdlfs.client.redirects import PresignedUrls
from eotdlfs.client.settings import Settings
from eotdlfs.client.transport import SendTimeoutAdapter
from eotdlfs.metadata import Metadata, record_noun

CONNECT_TIMEOUT = 5.0
POOL_SIZE = 32
RETRYABLE_STATUS = (502, 503, 504)
ASSEMBLY_BYTES_PER_S = 20e6  # a slow server's speed at assembling and hashing a multipart upload


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


class ApiClient(FileDownloads):
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

    def connect_ahead(self, count: int) -> None:
        """COUNT connections for range reads and lookups made in the background now (`QuickGets.connect_ahead`);
        none behind a proxy."""
        if self._quick:
            threading.Thread(target=self._quick_gets.connect_ahead, args=(count,), name="connect-ahead",
                             daemon=True).start()

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

    def update_record(self, kind: str, record_id: str, fields: dict[str, Any]) -> None:
        """The official `PUT KIND/ID`: set the record's FIELDS (authors, license, source)."""
        self._request("PUT", f"{kind}/{quote(record_id, safe='')}", idempotent=True, json=fields)

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

    def lookup_at_once(self, kind: str, record_id: str, version: int, path: str) -> list[dict[str, Any]] | None:
        """Route 5 with PATH (see `files`) through `QuickGets`, on the caller's thread, tried once: a
        fresh mount's lookups wait for it, and requests and a hop to a fetch thread were most of
        their time. None when it must go the full way (`files`): a proxy, an answer other than a
        plain 200, a connection that failed; Unreachable when no answer came within the timeout."""
        if not self._quick:
            return None
        target = f"{self._quick_gets.base}{kind}/{quote(record_id, safe='')}/files?"
        try:
            body, _, _ = self._quick_gets.whole_body(target + urlencode({"version": version, "path": path}))
        except (urllib3.exceptions.HTTPError, requests.RequestException) as exc:
            if timed_out(exc) or not_trusted(exc):
                raise self._unreachable(exc) from exc  # the full way would wait as long again
            return None
        try:
            return None if body is None else json.loads(bytes(body))
        except ValueError:
            return None

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
