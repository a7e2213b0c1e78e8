"""ASGI middleware refusing request bodies over a byte cap with 413, before or while they stream in."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    """413 when Content-Length says too much; stop reading when a chunked body grows too big.

    Multipart bodies (files) may reach MAX_BYTES; any other body (JSON, url-encoded forms)
    is parsed in memory, so it gets the much smaller MAX_OTHER_BYTES, except a STAC catalog's
    `PUT datasets/stac/ID` (one JSON of every item), which may reach MAX_STAC_BYTES.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, max_other_bytes: int, max_stac_bytes: int):
        self.app, self.max_bytes, self.max_other_bytes = app, max_bytes, max_other_bytes
        self.max_stac_bytes = max_stac_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        multipart = headers.get(b"content-type", b"").lower().startswith(b"multipart/")
        limit = self.max_bytes if multipart else self.max_other_bytes
        stac = scope["method"] == "PUT" and scope["path"].startswith("/datasets/stac/")
        if stac:
            limit = self.max_stac_bytes
        detail = f"Request body is larger than {limit} bytes"
        if stac:
            detail += (f" ({limit / 2**20:g} MiB, EOTDLFS_MAX_STAC_BODY_BYTES): a STAC catalog is parsed"
                       " whole in memory; split the dataset, or raise the limit on a server with the memory")
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # an HTTPException passes through FastAPI's body parsing and is answered as JSON
                    raise HTTPException(413, detail)
            return message

        await self.app(scope, limited_receive, send)
