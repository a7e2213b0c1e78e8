"""Plain GETs on one kept-alive http.client connection per thread: what a mount's cold reads send.

urllib3's urlopen cost about 250 us of CPU per small range here (its pool, retry and header
objects, the check that a pooled connection is still up), http.client's own request about
140 us. For http:// servers reached without a proxy (the caller checks). Failures come out
as urllib3's exceptions, as urlopen raises them, so the caller handles one set.
"""

from __future__ import annotations

import http.client
import threading
import weakref
from typing import Mapping

import urllib3


class QuickGets:
    """GETs of paths of one http:// server, each thread on a connection of its own, kept alive."""

    def __init__(self, base_url: str, headers: Mapping[str, str], connect_timeout: float, read_timeout: float):
        url = urllib3.util.parse_url(base_url)
        self.base = url.path or "/"  # what paths start with
        self._host, self._port = url.host or "", url.port or 80
        self._headers = dict(headers)
        self._connect_timeout, self._read_timeout = connect_timeout, read_timeout
        self._local = threading.local()
        # guarded by _lock: the connections of live threads, to close them all (weak: a thread that
        # ends takes its connection with it, so threads that come and go leave no sockets open)
        self._lock = threading.Lock()
        self._made: weakref.WeakSet[http.client.HTTPConnection] = weakref.WeakSet()

    def get(self, target: str, headers: Mapping[str, str]) -> http.client.HTTPResponse:
        """The answer to GET TARGET, its headers read: read its body to the end, or call `drop`."""
        conn = getattr(self._local, "conn", None)
        try:
            if conn is not None and conn.sock is not None:
                try:
                    return self._send(conn, target, headers)
                except (ConnectionError, http.client.BadStatusLine):
                    self.drop()  # a kept-alive connection the server closed meanwhile: once more, on a new one
            return self._send(self._connect(), target, headers)
        except (OSError, http.client.HTTPException) as exc:
            self.drop()
            raise _as_urllib3(exc, target) from exc
        except BaseException:
            self.drop()
            raise

    def drop(self) -> None:
        """Close this thread's connection (a body left unread must not meet the next request)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            with self._lock:
                self._made.discard(conn)
            conn.close()

    def close(self) -> None:
        with self._lock:
            made, self._made = list(self._made), weakref.WeakSet()
        for conn in made:
            conn.close()

    def _connect(self) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection(self._host, self._port, timeout=self._connect_timeout)
        self._local.conn = conn
        with self._lock:
            self._made.add(conn)
        conn.connect()
        conn.sock.settimeout(self._read_timeout)  # then the request is sent and answered under the read timeout
        return conn

    def _send(self, conn: http.client.HTTPConnection, target: str, headers: Mapping[str, str]) -> http.client.HTTPResponse:
        conn.request("GET", target, headers={**self._headers, **headers})
        return conn.getresponse()


def _as_urllib3(exc: OSError | http.client.HTTPException, target: str) -> urllib3.exceptions.HTTPError:
    """EXC as urllib3's urlopen raises it: a read timeout, or a protocol error saying why."""
    if isinstance(exc, TimeoutError):
        return urllib3.exceptions.ReadTimeoutError(None, target, f"Read timed out. ({exc})")  # type: ignore[arg-type]
    return urllib3.exceptions.ProtocolError(f"Connection aborted: {exc}", exc)
