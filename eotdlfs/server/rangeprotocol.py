"""Small ranges of local blobs answered by the HTTP protocol itself, below ASGI.

A mount's random 4 KiB read is one ranged GET of route 9 for a piece of 64 KiB. Through ASGI
such a request costs a task, a request-response cycle, two ASGI messages and a write per
message (the client wakes for the head, then again for the body); here it is answered in
the parser's callback with one write. Only the plainest case is taken: a keep-alive HTTP/1.1
GET without a body, nothing pipelined before it, a client reading its answers (writing is not
paused: one that sends requests without reading them is left to uvicorn's cycle, which waits
for it and stops reading), a satisfiable single range of at most
SMALL_RANGE bytes of a blob in a local folder, no `--redirect-downloads`. Everything else,
errors included (404, 416, 422...), goes on to the ASGI application unchanged, which answers
it as before; what is answered here carries the bytes and headers that path would send
(`BlobResponse` makes both heads).
"""

from __future__ import annotations

from urllib.parse import unquote

import httptools
from starlette.datastructures import Headers
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from eotdlfs.server.download import _DOWNLOAD_PATH, BlobResponse, Downloads, _version, parse_range

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
    """uvicorn's httptools protocol, answering small local ranges of DOWNLOADS' route 9 itself."""

    class RangeProtocol(HttpToolsProtocol):
        def on_headers_complete(self) -> None:
            if not self._answer_small_range():
                super().on_headers_complete()

        def _answer_small_range(self) -> bool:
            parser = self.parser
            if (parser.get_method() != b"GET" or parser.get_http_version() != "1.1" or not parser.should_keep_alive()
                    or parser.should_upgrade() or self.pipeline or not self.cycle_done() or self.flow.write_paused
                    or self.root_path
                    or self.limit_concurrency is not None or self.config.access_log or downloads.redirect):
                return False
            try:
                answer = self._small_range()
            except Exception:  # noqa: BLE001 - errors (404, 416, 422, a missing blob, a full disk...) are
                return False  # the application's to answer, as ever: it meets them again
            if answer is None:
                return False
            downloads.stats.download()
            self.transport.write(answer[0])
            downloads.stats.sent(answer[1])
            self.cycle = _ANSWERED  # type: ignore[assignment]
            self.on_response_complete()
            return True

        def _small_range(self) -> tuple[bytes, int] | None:
            """The whole answer to this request and its body's length, if it is one answered here."""
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
            if range_header is None or not downloads.admits(Headers(raw=self.headers)):
                return None  # a refusal is the application's to answer
            kind, record_id, file_path = match.groups()
            blob = downloads.find_at_once(kind, record_id, file_path, _version({"query_string": url.query or b""}),
                                          downloads.reader_of(Headers(raw=self.headers)))
            if blob is None:
                return None  # its lookup may wait on the network: not on the event loop
            byte_range = parse_range(range_header, blob.size)
            if byte_range is None or byte_range[1] - byte_range[0] >= SMALL_RANGE \
                    or if_range not in (None, f'"{blob.checksum}"'):
                return None
            length = byte_range[1] - byte_range[0] + 1
            reader = downloads.store.blobs.reader(blob.checksum, *byte_range)
            try:
                data = reader.read_at(byte_range[0], length) if reader.inline else b""
            finally:
                reader.close()
            if len(data) != length:  # not a local file, or shorter than its row says
                return None
            response = BlobResponse(downloads.store.blobs, blob, file_path, False, byte_range, downloads.stats.sent)
            head = [STATUS_LINE[206]]
            for name, value in self.server_state.default_headers + response.raw_headers:
                head += [name, b": ", value, b"\r\n"]
            head += [b"\r\n", data]
            return b"".join(head), length

        def cycle_done(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

    return RangeProtocol
