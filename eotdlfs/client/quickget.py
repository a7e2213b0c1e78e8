"""Plain GETs on one kept-alive http.client connection per thread: what a mount's cold reads send.

urllib3's urlopen cost about 250 us of CPU per small range here (its pool, retry and header
objects, the check that a pooled connection is still up), http.client's own request about
140 us. For servers reached without a proxy (the caller checks); an https:// server's
certificate is checked as requests checks it (see `tls_context`). Failures come out as
urllib3's exceptions, as urlopen raises them, so the caller handles one set.
"""

from __future__ import annotations

import http.client
import os
import ssl
import threading
import weakref
from typing import Mapping

import requests.certs
import urllib3

from eotdlfs.client.bodies import pages_of
from eotdlfs.repository import Arrived


def tls_context(verify: bool | str) -> ssl.SSLContext:
    """The TLS settings requests uses for VERIFY, a session's `verify` merged with the environment
    (`REQUESTS_CA_BUNDLE`, `CURL_CA_BUNDLE`): True checks the certificate and host name against
    requests' own CA bundle (certifi's), a path against that bundle file or folder, False not at all."""
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        return context
    where = requests.certs.where() if verify is True else str(verify)
    if os.path.isdir(where):
        return ssl.create_default_context(capath=where)
    return ssl.create_default_context(cafile=where)


class QuickGets:
    """GETs of paths of one http(s):// server, each thread on a connection of its own, kept alive."""

    def __init__(self, base_url: str, headers: Mapping[str, str], connect_timeout: float, read_timeout: float,
                 verify: bool | str = True):
        url = urllib3.util.parse_url(base_url)
        self.base = url.path or "/"  # what paths start with
        self._https = url.scheme == "https"
        self._host, self._port = url.host or "", url.port or (443 if self._https else 80)
        self._verify = verify
        # made at the first https connection, not here: a CA bundle that cannot be read fails the
        # first read as it fails requests' first call (set once; two threads may both make it)
        self._tls: ssl.SSLContext | None = None
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

    def range_body(self, target: str, headers: Mapping[str, str],
                   progress: Arrived | None = None) -> tuple[memoryview | None, int, str | None]:
        """GET TARGET with a Range in HEADERS: (its body in page-aligned memory, status, None) for a
        plain 206, else (None, status, Location), the connection dropped (its body left unread).
        Raises urllib3's errors for the connection and requests' for a broken body (`pages_of`)."""
        raw = self.get(target, headers)
        body = None
        try:
            announced = raw.getheader("Content-Length")
            if raw.status == 206 and announced is not None and raw.getheader("Content-Encoding") is None:
                body = pages_of(raw, int(announced), progress)
            return body, raw.status, raw.getheader("Location")
        finally:
            if body is None:
                self.drop()  # a body left unread must not reach the next request on this connection

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
        if not self._https:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self._connect_timeout)
        else:
            if self._tls is None:
                self._tls = tls_context(self._verify)
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=self._connect_timeout, context=self._tls)
        self._local.conn = conn
        with self._lock:
            self._made.add(conn)
        conn.connect()  # the TLS handshake included, under the connect timeout
        conn.sock.settimeout(self._read_timeout)  # then the request is sent and answered under the read timeout
        return conn

    def _send(self, conn: http.client.HTTPConnection, target: str,
              headers: Mapping[str, str]) -> http.client.HTTPResponse:
        conn.request("GET", target, headers={**self._headers, **headers})
        return conn.getresponse()


def _as_urllib3(exc: OSError | http.client.HTTPException, target: str) -> urllib3.exceptions.HTTPError:
    """EXC as urllib3's urlopen raises it: a read timeout, a TLS failure (a certificate not
    trusted, ...), or a protocol error saying why."""
    if isinstance(exc, ssl.SSLError):
        return urllib3.exceptions.SSLError(exc)
    if isinstance(exc, TimeoutError):
        return urllib3.exceptions.ReadTimeoutError(None, target, f"Read timed out. ({exc})")  # type: ignore[arg-type]
    return urllib3.exceptions.ProtocolError(f"Connection aborted: {exc}", exc)
