"""A fault-injecting HTTP proxy for tests: sits between a client (or mount) and a server.

Every request is forwarded to the upstream server as is, unless a `Fault` rule matches
it; the rule then changes what the client gets back:

- `reset`     the connection is reset (RST) after AT bytes of the response body
- `truncate`  the full Content-Length is announced but the body stops after AT bytes
- `corrupt`   the body is sent whole, with one byte flipped at AT (same length)
- `slow`      the request is served, then its response held for DELAY seconds (then sent)
- `stall`     the request's headers and AT bytes of its body reach the server, then nothing
              more for DELAY seconds; then both connections are reset (a crash test kills
              the server meanwhile: "mid-upload")
- `pause`     AT bytes of the request body are read, then no more for DELAY seconds (a
              server busy elsewhere: once the socket buffers fill, about 3 MiB on loopback,
              the client's send blocks); then the request is read and served as usual
- `error500`  a 500 answer instead of the server's (the request is NOT forwarded)
- `drop`      the connection is closed before the request is forwarded
- `silent`    the connection is accepted and the request read, then nothing is ever answered
              (NOT forwarded) until the rule is cleared or DELAY seconds pass (default the
              longest, MAX_DELAY_S); then the connection is reset: a hung server
- `rewrite`   the server's answer is read whole and its body replaced by EDIT(body) (the
              length follows): a server that answers wrong things, such as bad names

A rule matches by method and a regex on the path (with query), for its next COUNT
requests (or until cleared), after letting its first AFTER matches through. `struck` is set
once the fault is in effect (for `slow`: the server has answered; for `stall`: the partial
request is sent; for `pause`: the reading stopped), so a test can act at that moment.
Rules are switched at runtime from the test thread; the proxy counts every fault it
injects, for the suite's report.
"""

from __future__ import annotations

import http.client
import re
import socket
import struct
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

MODES = ("reset", "truncate", "corrupt", "slow", "stall", "pause", "error500", "drop", "silent", "rewrite")
MAX_BODY = 512 * 1024 * 1024  # bigger request bodies are refused: tests never need them
MAX_DELAY_S = 120.0
CHUNK = 256 * 1024
UPSTREAM_TIMEOUT_S = 120.0
# Headers that describe one hop, not the message: never forwarded.
_HOP_HEADERS = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclass
class Fault:
    """One rule: MODE for requests whose path matches PATH (and METHOD), COUNT times (None: until cleared)."""

    mode: str
    path: str = ""
    method: str | None = None
    count: int | None = None
    at: int = 0          # body offset where reset/truncate/corrupt strike (clamped to the body)
    delay: float = 0.0   # seconds, for `slow`, `stall`, `pause` and `silent`
    after: int = 0       # matching requests let through before the fault strikes
    edit: Callable[[bytes], bytes] | None = None  # for `rewrite`: the answer's new body from the old
    hits: int = field(default=0, init=False)
    seen: int = field(default=0, init=False)
    struck: threading.Event = field(default_factory=threading.Event, init=False)
    released: threading.Event = field(default_factory=threading.Event, init=False)  # ends a wait early

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown fault mode {self.mode!r}, expected one of {MODES}")
        if not 0 <= self.delay <= MAX_DELAY_S:
            raise ValueError(f"delay must be within 0..{MAX_DELAY_S} s")
        if (self.mode == "rewrite") != (self.edit is not None):
            raise ValueError("`rewrite`, and only it, takes an edit function")
        self._pattern = re.compile(self.path)

    def matches(self, method: str, path: str) -> bool:
        """Whether this request gets the fault (counts the matching requests it lets through)."""
        if self.count is not None and self.hits >= self.count:
            return False
        if not ((self.method is None or self.method == method) and self._pattern.search(path)):
            return False
        self.seen += 1
        return self.seen > self.after


class FaultProxy:
    """A proxy on 127.0.0.1 (free port) in front of UPSTREAM_URL; use as a context manager."""

    def __init__(self, upstream_url: str):
        parts = urlsplit(upstream_url)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._lock = threading.Lock()
        # guarded by _lock
        self._faults: list[Fault] = []
        self.injected: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self.headers_seen: list[tuple[str, str, dict[str, str]]] = []  # (method, path, headers) of each request
        self.bytes_received = 0  # request bodies, as they came over the wire (what a client sent)
        self._stopping = threading.Event()
        self._server = QuietHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,), name="faultproxy", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def inject(self, mode: str, path: str = "", *, method: str | None = None, count: int | None = None,
               at: int = 0, delay: float = 0.0, after: int = 0,
               edit: Callable[[bytes], bytes] | None = None) -> Fault:
        """Add a rule (first added, first matched); returns it so a test can read `hits` or wait on `struck`."""
        fault = Fault(mode, path, method, count, at, delay, after, edit)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        """Back to pass-through; `slow`, `stall`, `pause` and `silent` waits in progress end now."""
        with self._lock:
            for fault in self._faults:
                fault.released.set()
            self._faults.clear()

    def total_injected(self) -> int:
        with self._lock:
            return sum(self.injected.values())

    def stop(self) -> None:
        self._stopping.set()
        self.clear()  # wakes every `slow`, `stall`, `pause` and `silent` sleeper
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- used by the handler threads -----------------------------------------

    def _take_fault(self, method: str, path: str, headers: dict[str, str]) -> Fault | None:
        with self._lock:
            self.requests[method] += 1
            self.headers_seen.append((method, path, headers))
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.hits += 1
                    self.injected[fault.mode] += 1
                    return fault
        return None


class QuietHTTPServer(ThreadingHTTPServer):
    """A threaded HTTP server that does not print the connection resets tests cause on purpose."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _handler_for(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(_ProxyHandler):
        pass

    Handler.proxy = proxy
    return Handler


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as pooled clients expect
    proxy: FaultProxy
    _upstream: http.client.HTTPConnection | None = None

    def log_message(self, format: str, *args: object) -> None:  # tests stay quiet
        pass

    def do_GET(self) -> None:
        self._relay()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def _relay(self) -> None:
        fault = self.proxy._take_fault(self.command, self.path, dict(self.headers))
        body = self._read_request_body(fault if fault is not None and fault.mode == "pause" else None)
        if body is None:
            return
        with self.proxy._lock:
            self.proxy.bytes_received += len(body)
        if fault is not None and fault.mode not in ("slow", "stall", "pause"):  # those strike elsewhere
            fault.struck.set()
        if fault is not None and fault.mode == "drop":
            self._reset()
            return
        if fault is not None and fault.mode == "error500":
            self._send_error500()
            return
        if fault is not None and fault.mode == "silent":
            fault.released.wait(fault.delay or MAX_DELAY_S)
            self._reset()
            return
        if fault is not None and fault.mode == "stall":
            self._stall(body, fault)
            return
        try:
            response = self._forward(body)
        except (http.client.HTTPException, OSError):  # the server is down: the client sees it as down too
            self._reset()
            return
        if fault is not None and fault.mode == "slow":
            fault.struck.set()
            if fault.released.wait(fault.delay) and self.proxy._stopping.is_set():
                self._reset()
                return
        self._send_response(response, fault)

    def _read_request_body(self, pause: Fault | None = None) -> bytes | None:
        """The request's body; with PAUSE, its reading stops for the fault's delay after its AT bytes."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 <= length <= MAX_BODY:
            self._send_error500(b'{"detail":"proxy: request body too large"}', status=413)
            return None
        head = b""
        if pause is not None:
            head = self.rfile.read(min(max(pause.at, 0), length))
            pause.struck.set()
            pause.released.wait(pause.delay)
        return head + self.rfile.read(length - len(head))

    def _read_chunked(self) -> bytes:
        chunks, total = [], 0
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY:
                raise ValueError("chunked request body too large")
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    def _forward(self, body: bytes) -> http.client.HTTPResponse:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
        headers["Content-Length"] = str(len(body))
        if self.command in ("GET", "HEAD") and not body:
            del headers["Content-Length"]
        while True:
            reused = self._upstream is not None
            if self._upstream is None:
                self._upstream = http.client.HTTPConnection(*self.proxy.upstream, timeout=UPSTREAM_TIMEOUT_S)
            try:
                self._upstream.request(self.command, self.path, body=body or None, headers=headers)
                return self._upstream.getresponse()
            except (http.client.HTTPException, OSError):
                self._upstream_close()
                if not reused:  # a kept-alive connection the server closed is retried once, fresh
                    raise

    def _stall(self, body: bytes, fault: Fault) -> None:
        """Send the head and AT bytes of the request on a fresh connection, wait DELAY, reset both sides."""
        head = [f"{self.command} {self.path} HTTP/1.1"]
        head += [f"{k}: {v}" for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS | {"content-length"}]
        head += [f"Content-Length: {len(body)}", "Connection: close"]
        try:
            with socket.create_connection(self.proxy.upstream, timeout=UPSTREAM_TIMEOUT_S) as upstream:
                upstream.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body[: max(fault.at, 0)])
                fault.struck.set()
                fault.released.wait(fault.delay)
                upstream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            fault.struck.set()
        self._reset()

    def _send_response(self, response: http.client.HTTPResponse, fault: Fault | None) -> None:
        length_header = response.getheader("Content-Length")
        body_expected = self.command != "HEAD" and response.status not in (204, 304)
        buffered = None
        if body_expected and fault is not None and fault.mode == "rewrite":
            buffered = fault.edit(response.read())
            length = len(buffered)
        elif body_expected and length_header is None:  # upstream streamed chunks: buffer and announce a length
            buffered = response.read()
            length = len(buffered)
        else:
            length = int(length_header or 0)
        self.send_response_only(response.status, response.reason)
        for key, value in response.getheaders():
            if key.lower() not in _HOP_HEADERS and key.lower() != "content-length":
                self.send_header(key, value)
        self.send_header("Content-Length", str(length))
        if response.getheader("Connection", "").lower() == "close":
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if not body_expected:
            response.read()
            return
        self._send_body(response, buffered, length, fault)

    def _send_body(self, response: http.client.HTTPResponse, buffered: bytes | None, length: int,
                   fault: Fault | None) -> None:
        mode = fault.mode if fault is not None else None
        strike = min(max(fault.at, 0), max(length - 1, 0)) if fault is not None else -1
        sent = 0
        while sent < length:
            if buffered is not None:
                chunk, buffered = buffered[:CHUNK], buffered[CHUNK:]
            else:
                chunk = response.read(min(CHUNK, length - sent))
            if not chunk:
                break
            if mode in ("reset", "truncate") and sent + len(chunk) > strike:
                self.wfile.write(chunk[: strike - sent])
                self.wfile.flush()
                self._upstream_close()
                if mode == "reset":
                    self._reset()
                else:
                    self.close_connection = True
                return
            if mode == "corrupt" and sent <= strike < sent + len(chunk):
                i = strike - sent
                chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1:]
            self.wfile.write(chunk)
            sent += len(chunk)
        self.wfile.flush()

    def _send_error500(self, body: bytes = b'{"detail":"Internal Server Error (injected)"}', status: int = 500) -> None:
        self.send_response_only(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _upstream_close(self) -> None:
        if self._upstream is not None:  # the rest of its response is unread: the connection is unusable
            self._upstream.close()
            self._upstream = None

    def _reset(self) -> None:
        """Close with SO_LINGER 0, so the peer sees a connection reset, not an orderly end."""
        self._upstream_close()
        self.close_connection = True
        try:
            self.wfile.flush()
        except OSError:
            pass
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()

    def finish(self) -> None:
        self._upstream_close()
        try:
            super().finish()
        except OSError:  # the socket was reset on purpose
            pass
