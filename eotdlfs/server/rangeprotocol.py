"""Route 9's plainest answers of local blobs, given by the HTTP protocol itself, below ASGI.

A mount's random 4 KiB read is one ranged GET of route 9 for a piece of 64 KiB. Through ASGI
such a request costs a task, a request-response cycle, two ASGI messages and a write per
message (the client wakes for the head, then again for the body); here it is answered in
the parser's callback with one write. A larger range, or a whole file, of a local blob is
sent by the kernel from the blob file (`filesend`; on plain TCP). Only the plainest case is
taken: a keep-alive HTTP/1.1 GET without a body, nothing pipelined before it, a client
reading its answers (writing is not paused: one that sends requests without reading them is
left to uvicorn's cycle, which waits for it and stops reading), a satisfiable single range
(or none) of a blob in a local folder, no `--redirect-downloads`. Everything else, errors
included (404, 416, 422...), goes on to the ASGI application unchanged, which answers it as
before; what is answered here carries the bytes and headers that path would send
(`BlobResponse` makes both heads) and is counted in the same stats.
"""

from __future__ import annotations

from urllib.parse import unquote

import httptools
from starlette.datastructures import Headers
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from eotdlfs.server.blobs import FileRange
from eotdlfs.server.download import _DOWNLOAD_PATH, BlobResponse, Downloads, _version, parse_range
from eotdlfs.server.filesend import FileCycle
from eotdlfs.server.store import BlobRef

SMALL_RANGE = 256 * 1024


class _Answered:
    """Stands for the request-response cycle of a request answered here: complete, and its
    message event (which `connection_lost` sets) waited on by nobody."""

    response_complete = True

    @property
    def message_event(self) -> "_Answered":
        return self

    def set(self) -> None:
        pass


_ANSWERED = _Answered()


def range_protocol(downloads: Downloads) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol, answering the plainest local downloads of DOWNLOADS' route 9 itself."""

    class RangeProtocol(HttpToolsProtocol):
        def on_headers_complete(self) -> None:
            if not self._answer_here():
                super().on_headers_complete()

        def _answer_here(self) -> bool:
            parser = self.parser
            if (parser.get_method() != b"GET" or parser.get_http_version() != "1.1" or not parser.should_keep_alive()
                    or parser.should_upgrade() or self.pipeline or not self.cycle_done() or self.flow.write_paused
                    or self.root_path
                    or self.limit_concurrency is not None or self.config.access_log or downloads.redirect):
                return False
            try:
                target = self._target()
                return target is not None and (self._answer_small_range(*target) or self._send_file(*target))
            except Exception:  # noqa: BLE001 - errors (404, 416, 422, a missing blob, a full disk...) are
                return False  # the application's to answer, as ever: it meets them again

        def _answer_small_range(self, blob: BlobRef, file_path: str, byte_range: tuple[int, int] | None) -> bool:
            answer = self._small_range(blob, file_path, byte_range)
            if answer is None:
                return False
            downloads.stats.download()
            self.transport.write(answer[0])
            downloads.stats.sent(answer[1])
            self.cycle = _ANSWERED  # type: ignore[assignment]
            self.on_response_complete()
            return True

        def _target(self) -> tuple[BlobRef, str, tuple[int, int] | None] | None:
            """The blob this request asks for, its path, and the range of it to send (None: all of it),
            if this request may be answered here; Unsatisfiable when its range is."""
            url = httptools.parse_url(self.url)
            path = url.path.decode("ascii")
            match = _DOWNLOAD_PATH.match(unquote(path) if "%" in path else path)
            if match is None:
                return None
            range_header = if_range = None
            for name, value in self.headers:
                if name == b"range":
                    range_header = value.decode("latin-1")
                elif name == b"if-range":
                    if_range = value.decode("latin-1")
                elif name in (b"content-length", b"transfer-encoding"):
                    return None  # a body: left to uvicorn's cycle
            if not downloads.admits(Headers(raw=self.headers)):
                return None  # a refusal is the application's to answer
            kind, record_id, file_path = match.groups()
            blob = downloads.find_at_once(kind, record_id, file_path, _version({"query_string": url.query or b""}),
                                          downloads.reader_of(Headers(raw=self.headers)))
            if blob is None:
                return None  # its lookup may wait on the network: not on the event loop
            byte_range = parse_range(range_header, blob.size)
            if if_range not in (None, f'"{blob.checksum}"'):
                byte_range = None  # the client's copy is of other bytes: all of them, as `Downloads.answer`
            return blob, file_path, byte_range

        def _small_range(self, blob: BlobRef, file_path: str,
                         byte_range: tuple[int, int] | None) -> tuple[bytes, int] | None:
            """The whole answer to this request and its body's length, if it is a small range answered at once."""
            if byte_range is None or byte_range[1] - byte_range[0] >= SMALL_RANGE:
                return None
            length = byte_range[1] - byte_range[0] + 1
            reader = downloads.store.blobs.reader(blob.checksum, *byte_range)
            try:
                data = reader.read_at(byte_range[0], length) if reader.inline else b""
            finally:
                reader.close()
            if len(data) != length:  # not a local file, or shorter than its row says
                return None
            head = self._head(BlobResponse(downloads.store.blobs, blob, file_path, False, byte_range,
                                           downloads.stats.sent))
            return head + data, length

        def _send_file(self, blob: BlobRef, file_path: str, byte_range: tuple[int, int] | None) -> bool:
            """Whether this request's answer, a large one of a local blob, is being sent by the kernel
            (`filesend`); on plain TCP only, its transport's buffer empty."""
            first, last = byte_range or (0, blob.size - 1)
            if last - first < SMALL_RANGE or self.scheme != "http" or self.transport.get_write_buffer_size():
                return False
            reader = downloads.store.blobs.reader(blob.checksum, first, last)
            if not isinstance(reader, FileRange):
                reader.close()
                return False
            cycle = FileCycle(self.loop, self.transport, self.on_response_complete)
            head = self._head(BlobResponse(downloads.store.blobs, blob, file_path, False, byte_range,
                                           downloads.stats.sent))
            downloads.stats.download()
            self.cycle = cycle  # type: ignore[assignment]
            task = self.loop.create_task(cycle.run(head, reader.fd, first, last - first + 1, downloads.stats.sent))
            task.add_done_callback(lambda _: reader.close())
            # among the requests' tasks: a stopping server waits for it (and cancels it past its grace)
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            return True

        def _head(self, response: BlobResponse) -> bytes:
            """RESPONSE's status line and headers, the server's default headers first, as uvicorn writes them."""
            head = [STATUS_LINE[response.status_code]]
            for name, value in self.server_state.default_headers + response.raw_headers:
                head += [name, b": ", value, b"\r\n"]
            head.append(b"\r\n")
            return b"".join(head)

        def cycle_done(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

    return RangeProtocol
