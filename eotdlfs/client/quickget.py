"""Plain GETs on one kept-alive connection per thread: a mount's cold reads and lone lookups.

urllib3's urlopen cost about 250 us of CPU per small range here (its pool, retry and header
objects, the check that a pooled connection is still up), http.client's own request and
answer about 140 us (its header objects, and the email parser for the answer's head). Only
the simple case is read here: the request written whole in one send, a 206 with a
Content-Length (a 200 for a lookup) and neither Content-Encoding nor Transfer-Encoding; any other answer drops
the connection and is left to the caller's full way (requests). http.client still makes
the connection (and its TLS). For servers reached without a proxy (the caller checks); an https:// server's
certificate is checked as requests checks it (see `tls_context`). Failures come out as
urllib3's exceptions, as urlopen raises them, so the caller handles one set.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import ssl
import threading
import weakref
from typing import Mapping

import requests
import requests.certs
import urllib3

from eotdlfs.client.bodies import DOWNLOAD_BLOCK, page_aligned
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
        default_port = self._port == (443 if self._https else 80)
        self._host_line = f"Host: {self._host if default_port else f'{self._host}:{self._port}'}"
        self._connect_timeout, self._read_timeout = connect_timeout, read_timeout
        self._local = threading.local()
        # guarded by _lock: the connections of live threads, to close them all (weak: a thread that
        # ends takes its connection with it, so threads that come and go leave no sockets open)
        self._lock = threading.Lock()
        self._made: weakref.WeakSet[http.client.HTTPConnection] = weakref.WeakSet()
        self._spares: list[http.client.HTTPConnection] = []  # made ahead, for threads without one (`connect_ahead`)
        self._closed = False  # no more spares then

    def range_body(self, target: str, headers: Mapping[str, str],
                   progress: Arrived | None = None) -> tuple[memoryview | None, int, str | None]:
        """GET TARGET with a Range in HEADERS: (its body in page-aligned memory, status, None) for a
        plain 206, else (None, status, Location), the connection dropped (its body left unread).
        Raises urllib3's errors for the connection and requests' for a broken body (as `pages_of`)."""
        return self._get(target, headers, 206, progress)

    def whole_body(self, target: str) -> tuple[memoryview | None, int, str | None]:
        """GET TARGET, as `range_body` but for a plain 200 (a small JSON answer)."""
        return self._get(target, {}, 200, None)

    def range_bodies(self, asks: list[tuple[str, Mapping[str, str]]]) -> list[memoryview] | None:
        """GETs of ranges (target, headers with a Range) in flight at once from this thread, each on a
        connection of its own (the thread's, then others it keeps), all sent before any answer is read,
        AT_ONCE at a time: a seeking reader's tile rows came one after the other, or hopped to fetch
        threads and back. Their bodies when all are plain 206s, else None (for the caller's full way);
        failures as `range_body`'s, every connection of the batch closed."""
        wire = [self._request(target, headers) for target, headers in asks]
        bodies: list[memoryview] = []
        for lo in range(0, len(wire), AT_ONCE):
            batch, answers = wire[lo:lo + AT_ONCE], None
            for fresh in (False, True):  # kept connections the server closed meanwhile: once more, on new ones
                conns: list[http.client.HTTPConnection] = []
                try:
                    conns = self._connections(len(batch), fresh)
                    for conn, request in zip(conns, batch):
                        _send(conn.sock, request)
                    answers = [_answer(conn.sock, 206, None) for conn in conns]
                    break
                except _Stale as exc:
                    self._drop_all(conns)
                    if fresh:
                        raise _as_urllib3(exc, asks[lo][0]) from exc
                except (OSError, http.client.HTTPException) as exc:
                    self._drop_all(conns)
                    raise _as_urllib3(exc, asks[lo][0]) from exc
                except BaseException:
                    self._drop_all(conns)
                    raise
            assert answers is not None
            self._drop_all([conn for conn, (*_, keep) in zip(conns, answers) if not keep])
            if any(body is None for body, *_ in answers):
                return None
            bodies += [body for body, *_ in answers]
        return bodies

    def _get(self, target: str, headers: Mapping[str, str], plain_status: int,
             progress: Arrived | None) -> tuple[memoryview | None, int, str | None]:
        request = self._request(target, headers)
        conn = getattr(self._local, "conn", None)
        try:
            if conn is None or conn.sock is None:
                conn = self._connect()  # maybe a spare, made a while ago
            try:
                return self._exchange(conn.sock, request, plain_status, progress)
            except _Stale:
                self.drop()  # a kept-alive connection the server closed meanwhile: once more, on a new one
            return self._exchange(self._connect(may_take_spare=False).sock, request, plain_status, progress)
        except (_Stale, OSError, http.client.HTTPException) as exc:
            self.drop()
            raise _as_urllib3(exc, target) from exc
        except BaseException:
            self.drop()
            raise

    def _connections(self, count: int, fresh: bool) -> list[http.client.HTTPConnection]:
        """This thread's connection and COUNT - 1 more that it keeps for `range_bodies`, made as needed
        (FRESH: all new)."""
        first = getattr(self._local, "conn", None)
        if fresh or first is None or first.sock is None:
            first = self._connect(may_take_spare=not fresh)
        more = [] if fresh else [conn for conn in getattr(self._local, "more", []) if conn.sock is not None]
        self._local.more = more
        while len(more) < count - 1:
            more.append(self._connection(may_take_spare=not fresh))
        return [first, *more[:count - 1]]

    def _drop_all(self, conns: list[http.client.HTTPConnection]) -> None:
        for conn in conns:
            if conn is getattr(self._local, "conn", None):
                self.drop()
                continue
            self._local.more = [kept for kept in getattr(self._local, "more", []) if kept is not conn]
            with self._lock:
                self._made.discard(conn)
            conn.close()

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
            made, self._made, self._spares, self._closed = list(self._made), weakref.WeakSet(), [], True
        for conn in made:
            conn.close()

    def connect_ahead(self, count: int) -> None:
        """Make COUNT connections now, for the first threads that ask: a fresh mount's first lookups
        came each on a FUSE thread of its own, which connected while the user's `open` waited. A
        spare the server closed meanwhile is sent on once, found closed, and replaced (`_get`)."""
        for _ in range(count):
            try:
                conn = self._connection(may_take_spare=False)
            except (OSError, http.client.HTTPException):
                return  # the first read will say why
            with self._lock:
                if self._closed:
                    conn.close()
                    return
                self._spares.append(conn)

    def _connect(self, may_take_spare: bool = True) -> http.client.HTTPConnection:
        self._local.conn = None
        self._local.conn = conn = self._connection(may_take_spare)
        return conn

    def _connection(self, may_take_spare: bool = True) -> http.client.HTTPConnection:
        """A connection made ahead (`connect_ahead`), or a new one."""
        with self._lock:
            spare = self._spares.pop() if may_take_spare and self._spares else None
        if spare is not None:
            return spare
        conn = self._unconnected()
        try:
            self._open(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _unconnected(self) -> http.client.HTTPConnection:
        if not self._https:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self._connect_timeout)
        else:
            if self._tls is None:
                self._tls = tls_context(self._verify)
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=self._connect_timeout, context=self._tls)
        with self._lock:
            self._made.add(conn)
        return conn

    def _open(self, conn: http.client.HTTPConnection) -> None:
        conn.connect()  # the TLS handshake included, under the connect timeout
        conn.sock.settimeout(self._read_timeout)  # then the request is sent and answered under the read timeout

    def _request(self, target: str, headers: Mapping[str, str]) -> bytes:
        """The request's bytes, as http.client would send them (a target or value that could split
        the request is refused as http.client refuses it)."""
        fields = {**self._headers, **headers}
        if _SPLITS_REQUEST.search(target) or any(_BREAKS_LINE.search(f"{n}{v}") for n, v in fields.items()):
            raise ValueError(f"a request for {target!r} that could be read as two")
        text = "\r\n".join([f"GET {target} HTTP/1.1", self._host_line, *(f"{n}: {v}" for n, v in fields.items())])
        return text.encode("latin-1") + b"\r\n\r\n"

    def _exchange(self, sock: socket.socket, request: bytes, plain_status: int,
                  progress: Arrived | None) -> tuple[memoryview | None, int, str | None]:
        """Send REQUEST on SOCK and read the answer's head; for a plain PLAIN_STATUS its body too.
        _Stale when the connection ends before any byte of the answer (a kept-alive
        connection the server closed: safe to send again)."""
        _send(sock, request)
        body, status, location, keep = _answer(sock, plain_status, progress)
        if not keep:
            self.drop()
        return body, status, location


def _send(sock: socket.socket, request: bytes) -> None:
    try:
        sock.sendall(request)
    except ConnectionError as exc:  # a kept-alive connection the server closed
        raise _Stale(str(exc)) from exc


def _answer(sock: socket.socket, plain_status: int,
            progress: Arrived | None) -> tuple[memoryview | None, int, str | None, bool]:
    """The answer on SOCK: (its body, status, None) for a plain PLAIN_STATUS, else (None, status, its
    Location), its body left unread; and whether the connection may carry another request. _Stale
    when the connection ends before any byte of it (a kept-alive one the server closed: safe to send again)."""
    try:
        head, extra = _read_head(sock)
    except ConnectionError as exc:
        raise _Stale(str(exc)) from exc
    status, fields = _parse_head(head)
    length = fields.get(b"content-length")
    plain = status == plain_status and length is not None and length.isdigit() and not (
        fields.keys() & {b"content-encoding", b"transfer-encoding"})
    if not plain:
        location = fields.get(b"location")
        return None, status, None if location is None else location.decode("latin-1"), False
    body = _read_body(sock, int(length), extra, progress)
    return body, status, None, b"close" not in fields.get(b"connection", b"").lower()


class _Stale(http.client.HTTPException):
    """The connection ended before the answer began."""


# what may not be in a request target, or in a header (http.client refuses the same)
_SPLITS_REQUEST = re.compile(r"[\x00-\x20\x7f]")
_BREAKS_LINE = re.compile(r"[\r\n\x00]")
AT_ONCE = 4  # ranges of one `range_bodies` call in flight at once
HEAD_LIMIT = 64 << 10  # an answer's status line and headers: route 9's are about 300 bytes
HEAD_BUFFER = 4096  # mostly the head alone: the body is read straight into its memory


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The answer's head up to its blank line, and the bytes read past it (the body's start)."""
    buffer = bytearray()
    while True:
        chunk = sock.recv(HEAD_BUFFER)
        if not chunk:
            if not buffer:
                raise _Stale("the connection ended before the answer")
            raise http.client.IncompleteRead(bytes(buffer))
        buffer += chunk
        end = buffer.find(b"\r\n\r\n", max(0, len(buffer) - len(chunk) - 3))
        if end >= 0:
            return bytes(buffer[:end]), bytes(buffer[end + 4:])
        if len(buffer) > HEAD_LIMIT:
            raise http.client.LineTooLong("the answer's head")



def _parse_head(head: bytes) -> tuple[int, dict[bytes, bytes]]:
    """(status, lower-cased field name -> value) of an HTTP/1.x answer's head."""
    lines = head.split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code = rest[:3]
    if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise http.client.BadStatusLine(lines[0].decode("latin-1"))
    fields = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if colon:
            fields[name.strip().lower()] = value.strip()
    return int(code), fields


def _read_body(sock: socket.socket, size: int, extra: bytes, progress: Arrived | None) -> memoryview:
    """The SIZE bytes of a body in page-aligned memory, EXTRA (read with the head) first; failures
    as requests' (as from `pages_of`). PROGRESS is told (the memory, bytes so far) after each piece."""
    body = page_aligned(size)
    if len(extra) > size:
        raise requests.exceptions.ChunkedEncodingError(f"{len(extra)} bytes for a body of {size}")
    got = len(extra)
    body[:got] = extra
    try:
        while True:
            if got and progress is not None:
                progress(body, got)
            if got == size:
                return body
            count = sock.recv_into(body[got:got + DOWNLOAD_BLOCK])
            if not count:
                raise requests.exceptions.ChunkedEncodingError(f"body ended after {got} of {size} bytes")
            got += count
    except TimeoutError as exc:
        raise requests.ConnectionError(urllib3.exceptions.ReadTimeoutError(None, None, str(exc))) from exc
    except ssl.SSLError as exc:
        raise requests.ConnectionError(urllib3.exceptions.SSLError(exc)) from exc
    except ConnectionError as exc:
        raise requests.exceptions.ChunkedEncodingError(exc) from exc


def _as_urllib3(exc: OSError | http.client.HTTPException, target: str) -> urllib3.exceptions.HTTPError:
    """EXC as urllib3's urlopen raises it: a read timeout, a TLS failure (a certificate not
    trusted, ...), or a protocol error saying why."""
    if isinstance(exc, ssl.SSLError):
        return urllib3.exceptions.SSLError(exc)
    if isinstance(exc, TimeoutError):
        return urllib3.exceptions.ReadTimeoutError(None, target, f"Read timed out. ({exc})")  # type: ignore[arg-type]
    return urllib3.exceptions.ProtocolError(f"Connection aborted: {exc}", exc)
