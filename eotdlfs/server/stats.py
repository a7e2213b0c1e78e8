"""Counters since server start, served at /eotdlfs/stats for tests and benchmarks."""

from __future__ import annotations

import threading
from typing import Any

UPLOAD_ROUTES = ("batch", "file", "chunk", "complete", "carry")


class Stats:
    """Bytes sent by downloads, number of downloads and of accepted uploads per route, files sent by
    the `contents` extension and their bytes (apart from `bytes_sent`: route 9's)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.bytes_sent = 0
        self.downloads = 0
        self.uploads = dict.fromkeys(UPLOAD_ROUTES, 0)
        self.contents_requests = 0
        self.contents_bytes = 0

    def sent(self, n: int) -> None:
        with self._lock:
            self.bytes_sent += n

    def download(self) -> None:
        with self._lock:
            self.downloads += 1

    def contents(self, nbytes: int) -> None:
        with self._lock:
            self.contents_requests += 1
            self.contents_bytes += nbytes

    def upload(self, route: str) -> None:
        with self._lock:
            self.uploads[route] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"bytes_sent": self.bytes_sent, "downloads": self.downloads, "uploads": dict(self.uploads),
                    "contents": {"requests": self.contents_requests, "bytes": self.contents_bytes}}
