"""Route 9 (file downloads) of the API client: ranges, whole files, sizes and the `contents` extension.

A mixin of `ApiClient` (eotdlfs.client.api), kept apart so each module has one job: it uses the
client's session, retry settings, caches and lock, which `ApiClient.__init__` sets up.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator, Sequence
from urllib.parse import quote

import requests
import urllib3

from eotdlfs.client.bodies import DOWNLOAD_BLOCK, body_in_pages, whole_body
from eotdlfs.client.errors import (RepositoryError, ServerError, Unreachable, error_for_status, failure_reason,
                                   not_trusted, timed_out)
from eotdlfs.repository import Arrived


def file_url_path(path: str) -> str:
    """A record file path for a URL: each segment percent-encoded, '/' kept between segments."""
    return "/".join(quote(segment, safe="") for segment in path.split("/"))


class FileDownloads:
    """The download methods of `ApiClient`."""

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
        url = self._quick_url(kind, record_id, path, file_version)
        if url is None:
            return None, None
        try:
            body, status, location = self._quick_gets.range_body(url, headers, progress)
        except (urllib3.exceptions.HTTPError, requests.RequestException) as exc:  # no connection; a broken body
            return None, exc
        if body is None:
            self._quick = status not in (200, 307)  # a server without ranges, or redirecting
            if status == 307 and location:  # the store's URL, for the full way to reuse
                self._presigned.put((kind, record_id, path, file_version), location)
        return body, None

    def _quick_url(self, kind: str, record_id: str, path: str, file_version: int | None) -> str | None:
        """Route 9's target for `QuickGets`, or None when the quick way does not serve (a proxy set, a
        server without ranges, a file redirected to the object store)."""
        if not self._quick or self._presigned.get((kind, record_id, path, file_version)) is not None:
            return None
        url = self._quick_gets.base + self._download_route(kind, record_id, path)
        return url if file_version is None else f"{url}?version={int(file_version)}"

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

    def read_ranges(self, kind: str, record_id: str, path: str, file_version: int | None,
                    spans: Sequence[tuple[int, int]]) -> list[bytes | memoryview]:
        """The bytes of each (start, length) of SPANS of a file version, the requests in flight at once
        on this thread (`QuickGets.range_bodies`) where the quick way serves them, else one after the
        other as `read_range` reads them (a reset connection then retried as there)."""
        url = self._quick_url(kind, record_id, path, file_version) if len(spans) > 1 else None
        if url is not None:
            try:
                bodies = self._quick_gets.range_bodies(
                    [(url, {"Range": f"bytes={start}-{start + length - 1}"}) for start, length in spans])
            except (urllib3.exceptions.HTTPError, requests.RequestException) as exc:
                if self._retries == 0 or timed_out(exc) or not_trusted(exc):
                    raise self._unreachable(exc) from exc
                bodies = None
            if bodies is not None:
                self.ranges_supported = True
                return list(bodies)
        return [self.read_range(kind, record_id, path, file_version, start, length) for start, length in spans]

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

