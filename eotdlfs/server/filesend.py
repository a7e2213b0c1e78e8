"""Large answers of local blobs sent by the kernel from the blob file to the socket (sendfile).

Through ASGI a large download is read a MiB at a time into fresh memory on a worker thread,
then copied into the socket by the transport: two copies, a thread hop and a fresh bytes per
MiB. Here `os.sendfile` moves the file's cached pages into the socket; the event loop only
waits for the socket to take more. Plain TCP only: TLS encrypts in user space.

The answer (its head too) leaves by writes on a duplicate of the transport's socket, begun
while the transport's own buffer is empty and nothing else is written on the connection until
it ends, so no bytes of the transport's come between. The connection's bounds (`protocol`) still
hold: a client that takes no byte for `send_timeout_s` sees the kernel's send queue stand still
and its connection aborted, which wakes the sending here to stop. Readers that arrive while an
answer is sent wait in uvicorn's pipeline, as behind any answer.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Callable

TURN_BYTES = 4 << 20  # sent before letting the loop's other callbacks run (a fast client never fills the socket)
READ_AHEAD = 8 << 20  # the blob's bytes asked of the disk ahead of sendfile, so a cold disk rarely stalls the loop


class BlobEnded(Exception):
    """The blob file ended before the bytes its row (and the answer's head) promised."""


class FileCycle:
    """uvicorn's request-response cycle for an answer sent from a file: what the protocol and its
    bounds read and set on a cycle (`disconnected`, `keep_alive`, the message event), and `run`,
    the sending."""

    response_started = True
    waiting_for_100_continue = False

    def __init__(self, loop: asyncio.AbstractEventLoop, transport: asyncio.Transport,
                 on_response: Callable[[], None]):
        self.loop, self.transport, self.on_response = loop, transport, on_response
        self.response_complete = self.disconnected = False
        self.keep_alive = True  # the server's shutdown clears it: the connection is closed after this answer
        self.more_body, self.body = True, b""  # set by the parser's callbacks for the request (a GET, bodiless)
        self._socket: socket.socket | None = None
        self._writable: asyncio.Future[None] | None = None

    @property
    def message_event(self) -> "FileCycle":
        return self

    def set(self) -> None:
        """Called on news of the connection (its loss above all): a wait for the socket ends, to look."""
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    async def run(self, head: bytes, fd: int, offset: int, count: int, on_sent: Callable[[int], None]) -> None:
        """Send HEAD, then COUNT bytes of the file FD from OFFSET (its reader closes it: not here).
        ON_SENT is told each write's byte count of the body."""
        sock = socket.socket(fileno=os.dup(self.transport.get_extra_info("socket").fileno()))
        try:
            sock.setblocking(False)
            await self._send(sock, head, fd, offset, count, on_sent)
        except (OSError, BlobEnded):
            self.transport.abort()  # its head promised the bytes: the client must not take fewer as all
            return
        except asyncio.CancelledError:  # the server stopping past its grace
            self.transport.abort()
            raise
        finally:
            sock.close()  # the duplicate alone: it would keep the connection open after the transport's abort
        if self.disconnected:
            return
        self.response_complete = True
        if not self.keep_alive:
            self.transport.close()
        self.on_response()

    async def _send(self, sock: socket.socket, head: bytes, fd: int, offset: int, count: int,
                    on_sent: Callable[[int], None]) -> None:
        pending = memoryview(head)
        while pending and not self.disconnected:
            try:
                pending = pending[sock.send(pending, socket.MSG_MORE):]  # with the body's first bytes
            except BlockingIOError:
                await self._until_writable(sock)
        end, turn, asked = offset + count, 0, offset
        while offset < end and not self.disconnected:
            if offset >= asked:
                asked = min(offset + READ_AHEAD, end)
                os.posix_fadvise(fd, offset, asked - offset, os.POSIX_FADV_WILLNEED)
            try:
                sent = os.sendfile(sock.fileno(), fd, offset, min(end - offset, TURN_BYTES))
            except BlockingIOError:
                await self._until_writable(sock)
                turn = 0
                continue
            if not sent:
                raise BlobEnded(f"the blob ended at {offset} of {end} bytes")
            offset += sent
            turn += sent
            on_sent(sent)
            if turn >= TURN_BYTES:
                await asyncio.sleep(0)
                turn = 0

    async def _until_writable(self, sock: socket.socket) -> None:
        # On the duplicate: the loop refuses to watch a descriptor its transport owns.
        self._writable = self.loop.create_future()
        self.loop.add_writer(sock.fileno(), self.set)
        try:
            await self._writable
        finally:
            self.loop.remove_writer(sock.fileno())
            self._writable = None
