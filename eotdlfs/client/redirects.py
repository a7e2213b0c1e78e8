"""Presigned object-store URLs that a repository's download route redirected to, kept until they expire.

A server run with `--redirect-downloads` answers a download with `307` to a short-lived URL
of the object (S3 presigned). The client asks the API once per file version and reuses the URL
for every ranged read until shortly before it expires, or until the store refuses it; then it
asks the API again. Requests to the store go through a session with no credentials on it:
requests itself drops `Authorization` on a redirect to another host, but not a session header
such as `X-API-Key`, so the client never lets requests follow the redirect.
"""

from __future__ import annotations

import threading
import time
from calendar import timegm
from typing import Hashable
from urllib.parse import parse_qs, urlsplit

REUSE_MARGIN_S = 10.0       # stop using a URL this long before it expires (clock skew, slow reads)
UNKNOWN_LIFETIME_S = 60.0   # a URL that does not say when it expires
MAX_URLS = 10_000


def expires_at(url: str, now: float) -> float:
    """When URL stops working: SigV4's X-Amz-Date + X-Amz-Expires, SigV2's Expires, else NOW + UNKNOWN_LIFETIME_S."""
    query = {k.lower(): v[-1] for k, v in parse_qs(urlsplit(url).query).items()}
    try:
        if "x-amz-date" in query and "x-amz-expires" in query:
            signed = timegm(time.strptime(query["x-amz-date"], "%Y%m%dT%H%M%SZ"))
            return signed + int(query["x-amz-expires"])
        if "expires" in query:
            return float(query["expires"])
    except ValueError:
        pass
    return now + UNKNOWN_LIFETIME_S


class PresignedUrls:
    """File version -> its presigned URL while it is good; thread-safe, at most MAX_URLS kept."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._urls: dict[Hashable, tuple[str, float]] = {}  # guarded by _lock

    def get(self, key: Hashable) -> str | None:
        with self._lock:
            found = self._urls.get(key)
        if found is None or time.time() > found[1] - REUSE_MARGIN_S:
            return None
        return found[0]

    def put(self, key: Hashable, url: str) -> None:
        deadline = expires_at(url, time.time())
        with self._lock:
            if len(self._urls) >= MAX_URLS:
                self._urls.pop(next(iter(self._urls)))  # the oldest
            self._urls[key] = (url, deadline)

    def drop(self, key: Hashable) -> None:
        with self._lock:
            self._urls.pop(key, None)
