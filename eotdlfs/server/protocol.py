"""uvicorn's HTTP/1.1 protocol (httptools) with a request's head bounded in time and in bytes.

uvicorn bounds neither: a connection that never finishes its head (slowloris: a header byte
now and then, which also restarts uvicorn's keep-alive timer) was kept for good, a file
descriptor each until the server could accept no one; and a head of endless header bytes was
buffered whole, re-copied as it grew (200 MB took 46 s of the event loop's CPU, during which
no other request was answered). A head must now arrive within `head_timeout_s` of the
connection's start or of the previous answer (408 otherwise, looked at every quarter of it),
and be at most about `max_head_bytes` long (431 otherwise); either way the connection is
then closed.

uvicorn bounds no answer's sending either: a client that stops reading a download kept its
connection, the blob's open file and up to a chunk (1 MiB) in memory for good. When no byte of
an answer is accepted by the client for `send_timeout_s` (nginx's `send_timeout`), the
connection is aborted (a close would wait for the unsent bytes). Looked at by the same timer:
the bytes not yet acknowledged (the transport's buffer and the kernel's send queue) are
compared with the previous look's; a reader that progresses, however slowly, is never cut.

Nor does uvicorn bound a request's body in time: a client that sent a head and then a body byte
now and then (or none) held its connection, the application's task and the parsed part of the
body (up to 1 MiB of a multipart file in memory) for good. While the application waits for a
body, a gap of `body_timeout_s` between two of its reads (nginx's `client_body_timeout`) is
answered 408 and the connection closed; time in which the server itself does not read (its
buffer is full, or the client waits for its `100 Continue`) is not the client's.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import struct
import termios
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

CHECKS_PER_TIMEOUT = 4  # a head is given up between 1 and 1.25 timeouts after it was awaited
_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class BoundedHeadProtocol(HttpToolsProtocol):
    """HttpToolsProtocol closing a connection whose request head is too slow or too long, or whose
    client stopped sending its body or taking its answer; first in the bases of a subclass of
    HttpToolsProtocol (`bounded_head`), it bounds that one's heads."""

    def __init__(self, *args: Any, max_head_bytes: int, head_timeout_s: float, send_timeout_s: float,
                 body_timeout_s: float, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.max_head_bytes, self.head_timeout_s, self.send_timeout_s = max_head_bytes, head_timeout_s, send_timeout_s
        self.body_timeout_s = body_timeout_s
        self._check_every = min(head_timeout_s, send_timeout_s, body_timeout_s) / CHECKS_PER_TIMEOUT
        # A timer per connection looking now and then, not one armed and cancelled per request:
        # a request then costs two stores of the loop's time.
        self._head_check: asyncio.TimerHandle | None = None
        self._awaiting_head_since: float | None = None  # the loop's time, while a head is awaited
        self._awaiting_body_since: float | None = None  # the loop's time of the last body bytes, until its end
        self._in_head = False  # between a message's first byte and its last header
        self._head_bytes = 0
        self._began_in_this_read = False
        self._socket_fd = -1
        self._unsent = 0  # bytes of answers not acknowledged by the client at the previous look
        self._unsent_since = 0.0  # the loop's time since when they are
        self._resumed = False  # the transport drained below its low mark since the previous look

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._awaiting_head_since = self.loop.time()
        sock = transport.get_extra_info("socket")
        self._socket_fd = sock.fileno() if sock is not None else -1
        self._head_check = self.loop.call_later(self._check_every, self._check_times)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_check is not None:
            self._head_check.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._began_in_this_read = False
        super().data_received(data)
        # A read in which a head began may end a previous message too: it is not counted, so the
        # bound is met within one read's bytes (uvloop reads at most 256 KiB).
        if self._in_head and not self._began_in_this_read and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._refuse(431, f"The request's head is larger than {self.max_head_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes, self._began_in_this_read = True, 0, True

    def on_headers_complete(self) -> None:
        self._in_head, self._awaiting_head_since, self._awaiting_body_since = False, None, self.loop.time()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._awaiting_body_since = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._awaiting_body_since = None
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.pipeline:  # waiting for the next head
            self._awaiting_head_since = self.loop.time()

    def resume_writing(self) -> None:
        self._resumed = True  # the client took bytes: its send timer restarts at the next look
        super().resume_writing()

    def _check_times(self) -> None:
        now = self.loop.time()
        if self._client_stopped_reading(now):
            self.transport.abort()
            return
        since = self._awaiting_head_since
        if since is not None and now - since >= self.head_timeout_s:
            self._refuse(408, f"No whole request head within {self.head_timeout_s:g} s")
        if self._client_stopped_sending_its_body(now):
            self._refuse(408, f"No byte of the request's body for {self.body_timeout_s:g} s")
        if not self.transport.is_closing() or self._unsent:  # a closing transport waits for its unsent bytes
            self._head_check = self.loop.call_later(self._check_every, self._check_times)

    def _client_stopped_reading(self, now: float) -> bool:
        """Whether bytes of an answer wait, unchanged, for `send_timeout_s`. Any change restarts the
        timer: fewer is the client's progress; more, new bytes the server could write (unpaused)."""
        unsent = self.transport.get_write_buffer_size() + _kernel_unsent(self._socket_fd)
        if unsent != self._unsent or self._resumed or not unsent:
            self._unsent, self._unsent_since, self._resumed = unsent, now, False
            return False
        return now - self._unsent_since >= self.send_timeout_s

    def _client_stopped_sending_its_body(self, now: float) -> bool:
        """Whether the application has waited `body_timeout_s` for more of a body the client owes."""
        cycle = self.cycle
        if self._awaiting_body_since is None or cycle is None or cycle.response_complete:
            return False
        if self.flow.read_paused or cycle.waiting_for_100_continue:  # the server's wait, not the client's
            self._awaiting_body_since = now
            return False
        return now - self._awaiting_body_since >= self.body_timeout_s

    def _refuse(self, status: int, detail: str) -> None:
        """Answer STATUS (unless a response is under way: it would be cut into) and close."""
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete or not self.cycle.response_started:
            body = json.dumps({"detail": detail}).encode()
            head = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])]
            head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
            head += [b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)]
            self.transport.write(b"".join(head) + body)
        self.transport.close()


def _kernel_unsent(fd: int) -> int:
    """Bytes of the socket FD's send queue the peer has not acknowledged (Linux's SIOCOUTQ)."""
    if fd < 0:
        return 0
    try:
        return struct.unpack("i", fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    except OSError:
        return 0


def bounded_head(protocol: type[HttpToolsProtocol]) -> type[BoundedHeadProtocol]:
    """PROTOCOL (uvicorn's httptools protocol or a subclass) with its request heads bounded: its
    callbacks run after the bounds' (which see every head, also one PROTOCOL answers itself)."""
    return type(f"BoundedHead{protocol.__name__}", (BoundedHeadProtocol, protocol), {})
