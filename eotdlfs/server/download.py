"""Serving a blob: Range parsing, 200/206/416 answers, strong ETag, streamed in 1 MiB chunks.

One `Range: bytes=...` range is honoured (first-last, first-, -suffix). Several ranges
are answered with the whole file (200), which RFC 9110 allows. A range that starts at
or beyond the end, an empty suffix, or last < first is answered 416 with
`Content-Range: bytes */SIZE`.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, TypeVar
from urllib.parse import parse_qsl

import anyio
from starlette.datastructures import Headers
from anyio import CancelScope, CapacityLimiter
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eotdlfs.server.auth import Reader
from eotdlfs.server.blobs import Blobs, RangeReader
from eotdlfs.server.errors import ApiError
from eotdlfs.server.stats import Stats
from eotdlfs.server.store import BlobRef, Store

T = TypeVar("T")
CHUNK = 1024 * 1024
# A local blob's reads of up to this much run on the event loop (cheaper than a hop to a worker
# thread), and a response's first chunk is no larger: a mount's first read of a file waits for
# its first 128 KiB (the kernel's request), which then left only once a whole MiB was read.
FIRST_CHUNK = 128 * 1024
# Worker threads of the calls of downloads that may wait on the network (PostgreSQL's queries,
# signing a URL with credentials botocore fetches first): their own, so a hung database holds
# at most these, not the threads of the application's other routes.
STALLING_CALL_THREADS = 16


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
    """An ASGI response with the bytes [first, last] of a blob, in chunks of at most 1 MiB.

    Reads of up to FIRST_CHUNK from a local blob happen inline (cheaper than a thread hop), and
    the first chunk is one; others in a worker thread.
    """

    def __init__(self, blobs: Blobs, blob: BlobRef, filename: str, head: bool, byte_range: tuple[int, int] | None,
                 on_sent: Callable[[int], None]):
        self.blobs, self.blob, self.head, self.on_sent = blobs, blob, head, on_sent
        self.first, self.last = byte_range if byte_range else (0, blob.size - 1)
        self.status_code = 206 if byte_range else 200
        self.background = None
        self.raw_headers = [
            _OCTETS, (b"content-length", b"%d" % (self.last - self.first + 1)), _RANGES,
            (b"etag", b'"%s"' % blob.checksum.encode()),
            (b"content-disposition", b'attachment; filename="%s"' % _header_safe(os.path.basename(filename)).encode()),
        ]
        if byte_range:
            self.raw_headers.append((b"content-range", b"bytes %d-%d/%d" % (self.first, self.last, blob.size)))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        reader = self.blobs.reader(self.blob.checksum, self.first, self.last)
        try:
            if self.head or self.last - self.first < (FIRST_CHUNK if reader.inline else CHUNK):
                await self._send(reader, send)  # one read: nothing to stop
                return
            # uvicorn's `send` on a lost connection returns as if it had sent: without watching
            # for the client's leaving, the rest of the blob was read for nobody.
            async with anyio.create_task_group() as sending:
                sending.start_soon(_cancel_when_gone, receive, sending.cancel_scope)
                await self._send(reader, send)
                sending.cancel_scope.cancel()
        finally:
            reader.close()  # after a cancelled read in a worker thread has returned: anyio waits for it

    async def _send(self, reader: RangeReader, send: Send) -> None:
        offset, end = self.first, self.last + 1
        small = reader.inline and 0 < end - offset <= 65536 and not self.head
        # A small range is read before its head is sent: head and body then leave back to
        # back, and the client wakes once for both, not once for the head and again for the body.
        data = reader.read_at(offset, end - offset) if small else None
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        if self.head or offset >= end:
            await send({"type": "http.response.body", "body": b""})
            return
        while offset < end:
            n = min(CHUNK, end - offset)
            if data is None and reader.inline and offset == self.first:
                n = min(n, FIRST_CHUNK)  # read here and sent at once: what the reader waits for first
            if data is None and reader.inline and n <= FIRST_CHUNK:
                data = reader.read_at(offset, n)
            elif data is None:
                data = await anyio.to_thread.run_sync(reader.read_at, offset, n)
            if not data:
                break  # the blob is shorter than its row says: stop rather than spin
            offset += len(data)
            await send({"type": "http.response.body", "body": data, "more_body": offset < end})
            self.on_sent(len(data))
            data = None
        if offset < end:
            await send({"type": "http.response.body", "body": b""})


async def _cancel_when_gone(receive: Receive, scope: CancelScope) -> None:
    """Cancel SCOPE once the client has gone (a GET's body, if any, is read and dropped meanwhile)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


_OCTETS = (b"content-type", b"application/octet-stream")
_RANGES = (b"accept-ranges", b"bytes")


def _header_safe(name: str) -> str:
    """NAME fit for a quoted header value: printable Latin-1, no quote or backslash."""
    return "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in name)


def unsatisfiable_headers(size: int) -> dict[str, str]:
    return {"content-range": f"bytes */{size}", "accept-ranges": "bytes"}


class Downloads:
    """Route 9's answers. A file version that a published version holds never changes (a published
    version is never discarded, on any replica), so its blob is looked up in the database once;
    a draft's file version, which a discard can remove, and 'the latest' are looked up every time."""

    KNOWN_LIMIT = 20_000  # about 10 MB of lookups; past it they are forgotten and asked again

    def __init__(self, store: Store, stats: Stats, reader_of: Callable[[Headers], Reader], redirect: bool = False,
                 private: bool = False):
        # READER_OF: who reads with a request's headers, for every way route 9 is answered (draft files)
        self.store, self.stats, self.reader_of, self.redirect = store, stats, reader_of, redirect
        self.private = private  # every request needs credentials, reads too (`admits`)
        self._known: dict[tuple[str, str, str, int | None], BlobRef] = {}
        self._stalling_calls = CapacityLimiter(STALLING_CALL_THREADS)

    def admits(self, headers: Headers) -> bool:
        """Whether a request with HEADERS may be answered: always, unless the repository is private and
        they carry no valid credentials (checked by every way in: the app, its front, the protocol)."""
        return not self.private or self.reader_of(headers)() is not None

    def find_at_once(self, kind: str, record_id: str, path: str, file_version: int | None,
                     reader: Reader) -> BlobRef | None:
        """The blob, when it is known or its store's queries cannot stall (SQLite); None when finding it
        would wait on the network (a caller on the event loop then leaves the request to `find`)."""
        blob = self._known.get((kind, record_id, path, file_version))
        if blob is None and not self.store.queries_may_stall:
            blob = self._look_up(kind, record_id, path, file_version, reader)
        return blob

    async def find(self, kind: str, record_id: str, path: str, file_version: int | None, reader: Reader) -> BlobRef:
        blob = self._known.get((kind, record_id, path, file_version))
        if blob is None:
            blob = await self.off_loop(self.store.queries_may_stall, self._look_up, kind, record_id, path,
                                       file_version, reader)
        return blob

    def _look_up(self, kind: str, record_id: str, path: str, file_version: int | None, reader: Reader) -> BlobRef:
        """The store's answer, kept when it never changes."""
        blob = self.store.find_download(kind, record_id, path, file_version, reader)
        if blob.published and file_version is not None:
            if len(self._known) >= self.KNOWN_LIMIT:
                self._known.clear()
            self._known[(kind, record_id, path, file_version)] = blob
        return blob

    async def off_loop(self, may_stall: bool, call: Callable[..., T], *args: Any) -> T:
        """CALL(*ARGS), on a worker thread when it MAY_STALL (it may wait on a network):
        on the event loop, a slow or hung database stalls every request, even those never touching it.
        SQLite's queries stay on the loop (a hop to a thread costs more than the query)."""
        if not may_stall:
            return call(*args)
        return await anyio.to_thread.run_sync(call, *args, limiter=self._stalling_calls)

    async def answer(self, kind: str, record_id: str, path: str, file_version: int | None, head: bool,
                     range_header: str | None, if_range: str | None, reader: Reader) -> Response:
        """Raises ApiError (404, 416). With `redirect` (`--redirect-downloads`) a GET is answered 307
        to a short-lived presigned URL of the blob, when its store has URLs; a HEAD is still answered
        here (a URL presigned for GET is refused for HEAD). Signing runs on a worker thread: botocore
        may first fetch credentials (an instance's role, SSO, a credential_process). A draft's file
        version is READER's if it owns the record, else missing."""
        blob = await self.find(kind, record_id, path, file_version, reader)
        try:
            byte_range = parse_range(range_header, blob.size)
        except Unsatisfiable:
            raise ApiError(416, "Requested range not satisfiable", unsatisfiable_headers(blob.size)) from None
        if byte_range is not None and if_range not in (None, f'"{blob.checksum}"'):
            byte_range = None  # the client's copy is of other bytes: send the whole file
        if not head:
            url = await self.off_loop(True, self.store.blobs.presign, blob.checksum, path) if self.redirect else None
            self.stats.download()
            if url is not None:
                return Response(status_code=307, headers={"location": url, "cache-control": "no-store"})
        return BlobResponse(self.store.blobs, blob, path, head, byte_range, self.stats.sent)


_DOWNLOAD_PATH = re.compile(r"^/(datasets|models)/([^/]+)/download/(.*)$", re.DOTALL)
_FILES_PATH = re.compile(r"^/(datasets|models)/([^/]+)/files$")


class DownloadFastPath:
    """Answers route 9, and route 5 asked for one path (a mount's lookup before it has a version's
    list), before the whole FastAPI application: its error, telemetry and body-limit middleware,
    routing, validation, dependencies and, for route 5, the hop to a worker thread (about half a
    request's CPU on a 4 KiB range; a lookup took 0.7-3 ms there, its query 60 us).

    Downloads are what mounts and benchmarks hammer, and a fresh mount's first open waits for a
    lookup per path component. The FastAPI routes stay for the OpenAPI schema and give the same
    answers; an unexpected error, before any byte is sent, is left to them, so it is answered as
    every other route's (JSON 500, or 507 for a full disk)."""

    def __init__(self, app: ASGIApp, downloads: Downloads):
        self.app, self.downloads = app, downloads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = lookup = None
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            match = _DOWNLOAD_PATH.match(scope["path"])
            if match is None and scope["method"] == "GET" and _query(scope, "path") is not None:
                lookup = _FILES_PATH.match(scope["path"])
        if match is None and lookup is None:
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            try:
                reader = self.downloads.reader_of(Headers(scope=scope))
                if lookup is not None:
                    kind, record_id = lookup.groups()
                    store = self.downloads.store
                    response = JSONResponse(await self.downloads.off_loop(
                        store.queries_may_stall, store.list_files, kind, record_id, _version(scope),
                        _query(scope, "path"), reader))
                else:
                    response = await self.downloads.answer(*match.groups(), _version(scope),
                                                            scope["method"] == "HEAD", *_range_headers(scope), reader)
            except ApiError as exc:
                response = JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)
            await response(scope, receive, sending)
        except Exception:
            if started:
                raise
            await self.app(scope, receive, send)


def _query(scope: Scope, name: str) -> str | None:
    """The last value of the query parameter NAME, as FastAPI reads a plain one."""
    query = scope.get("query_string", b"").decode("latin-1")
    values = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == name]
    return values[-1] if values else None


def _version(scope: Scope) -> int | None:
    """The `version` query parameter, checked as FastAPI would (422 when not an integer)."""
    raw = _query(scope, "version")
    if raw is None:
        return None
    raw = raw.strip()
    if not (raw.lstrip("+-").isascii() and raw.lstrip("+-").isdigit()):
        raise ApiError(422, "query.version: Input should be a valid integer, unable to parse string as an integer")
    value = int(raw) if len(raw) <= 19 else None
    if value is None or not -(2**63) <= value < 2**63:
        raise ApiError(400, "A number in the request is out of range")
    return value


def _range_headers(scope: Scope) -> tuple[str | None, str | None]:
    range_header = if_range = None
    for name, value in scope["headers"]:
        if name == b"range":
            range_header = value.decode("latin-1")
        elif name == b"if-range":
            if_range = value.decode("latin-1")
    return range_header, if_range
