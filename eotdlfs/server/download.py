"""Serving a blob: Range parsing, 200/206/416 answers, strong ETag, streamed in 1 MiB chunks.

One `Range: bytes=...` range is honoured (first-last, first-, -suffix). Several ranges
are answered with the whole file (200), which RFC 9110 allows. A range that starts at
or beyond the end, an empty suffix, or last < first is answered 416 with
`Content-Range: bytes */SIZE`.
"""

from __future__ import annotations

import os
from typing import Callable

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from eotdlfs.server.store import BlobRef

CHUNK = 1024 * 1024


class Unsatisfiable(Exception):
    """The Range header asks for bytes the file does not have."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) inclusive for a single satisfiable range; None for the whole file."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None  # unknown unit or several ranges: whole file
    first_s, dash, last_s = spec.strip().partition("-")
    first_s, last_s = first_s.strip(), last_s.strip()
    if not dash or not (first_s or last_s) or not all(s.isascii() and s.isdigit() for s in (first_s, last_s) if s):
        return None  # malformed (isdigit alone accepts '²'): RFC 9110 says ignore the header
    if not first_s:  # suffix: the last N bytes
        n = _number(last_s)
        if n == 0 or size == 0:
            raise Unsatisfiable
        return max(size - n, 0), size - 1
    first = _number(first_s)
    last = _number(last_s) if last_s else size - 1
    if first >= size or last < first:
        raise Unsatisfiable
    return first, min(last, size - 1)


def _number(digits: str) -> int:
    """The value of a run of ASCII digits; past 18 digits (int() refuses 4,300+) just "bigger than any file"."""
    return int(digits) if len(digits) <= 18 else 10**18


class BlobResponse(Response):
    """An ASGI response with the bytes [first, last] of a blob, read in chunks off the event loop."""

    def __init__(self, blob: BlobRef, filename: str, head: bool, byte_range: tuple[int, int] | None,
                 on_sent: Callable[[int], None]):
        self.blob, self.head, self.on_sent = blob, head, on_sent
        self.first, self.last = byte_range if byte_range else (0, blob.size - 1)
        length = self.last - self.first + 1
        self.status_code = 206 if byte_range else 200
        self.background = None
        headers = {
            "content-type": "application/octet-stream",
            "content-length": str(length),
            "accept-ranges": "bytes",
            "etag": f'"{blob.checksum}"',
            "content-disposition": f'attachment; filename="{os.path.basename(filename)}"',
        }
        if byte_range:
            headers["content-range"] = f"bytes {self.first}-{self.last}/{blob.size}"
        self.raw_headers = [(k.encode(), v.encode("latin-1", "replace")) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fd = os.open(self.blob.path, os.O_RDONLY)
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            offset, end = self.first, self.last + 1
            if self.head or offset >= end:
                await send({"type": "http.response.body", "body": b""})
                return
            while offset < end:
                n = min(CHUNK, end - offset)
                data = os.pread(fd, n, offset) if n <= 65536 else await anyio.to_thread.run_sync(os.pread, fd, n, offset)
                if not data:
                    break  # the blob is shorter than its row says: stop rather than spin
                offset += len(data)
                await send({"type": "http.response.body", "body": data, "more_body": offset < end})
                self.on_sent(len(data))
            if offset < end:
                await send({"type": "http.response.body", "body": b""})
        finally:
            os.close(fd)


def unsatisfiable_headers(size: int) -> dict[str, str]:
    return {"content-range": f"bytes */{size}", "accept-ranges": "bytes"}
