"""The FastAPI application: the EOTDL routes for datasets and models, plus eotdlfs extensions.

Handlers only parse the request, authenticate and call `Store`; every rule lives there.
Every error is answered as `{"detail": "<one string>"}`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Body, Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from eotdlfs.diskfull import is_disk_full
from eotdlfs.metadata import KINDS
from eotdlfs.parts import ENCODINGS
from eotdlfs.server.auth import AuthError, Reader, authenticate, load_secret
from eotdlfs.server.bodylimit import BodyLimit
from eotdlfs.server.contents import MAX_BYTES as CONTENTS_MAX_BYTES, MAX_FILES as CONTENTS_MAX_FILES, file_contents
from eotdlfs.server.db import TextWithNul
from eotdlfs.server.download import DownloadFastPath, Downloads
from eotdlfs.server.errors import ApiError
from eotdlfs.server.limits import Limits
from eotdlfs.server.stac import STAC_KIND
from eotdlfs.server.stats import Stats
from eotdlfs.server.store import Store
from eotdlfs.server.upkeep import upkeep

# Kept unquoted in asset download URLs: the official `get -a` names the local file after the text
# behind `/download/`, so only what would break the URL ('?', '#', '%', spaces...) is quoted.
HREF_SAFE = "/:@!$&'()*+,;=-._~"
# max_form_fields: Starlette's cap on fields per form (route 7 sends two per file)
CREDENTIAL_HEADERS = ("Authorization", "X-API-Key")  # the arguments of `authenticate`, in its order
PRIVATE_DETAIL = "Not authenticated (this repository is private: every request needs a token)"
CAPABILITIES = {"size": True, "range": True, "drafts": True, "max_form_fields": 1000, "carry_any_path": True,
                "part_encodings": list(ENCODINGS), "contents": {"max_files": CONTENTS_MAX_FILES,
                                                                "max_bytes": CONTENTS_MAX_BYTES}}


def _validation_detail(exc: RequestValidationError) -> str:
    """FastAPI's list of problems as one readable line, e.g. 'query.version: Input should be a valid integer'."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "Invalid request"


def _one_header(headers: Headers, name: str) -> str | None:
    """The value of header NAME; AuthError when it comes twice (a proxy in front and this server may
    each take another of the two, so neither is)."""
    values = headers.getlist(name)
    if len(values) > 1:
        raise AuthError(f"More than one {name} header")
    return values[0] if values else None


def kind_router(kind: str, store: Store, stats: Stats, user: Any, reader: Any, downloads: Downloads) -> APIRouter:
    """Routes 1-12 and the draft extension for one KIND ('datasets' or 'models')."""
    noun = kind[:-1]  # 'dataset' or 'model': the prefix of the answers' keys
    r = APIRouter(prefix=f"/{kind}")
    if kind == STAC_KIND:  # before `POST /{record_id}`, which would take "stac" for an id
        stac_routes(r, store, user, reader)

    @r.get("")
    def list_or_get(name: str | None = None, match: str | None = None, limit: int | None = None) -> Any:
        if name is not None:
            return store.record_by_name(kind, name)
        return store.list_records(kind, match, limit)

    @r.post("")
    def create(body: Any = Body(...), uid: str = Depends(user)) -> Any:
        return {f"{noun}_id": store.create_record(kind, uid, body)}

    @r.post("/version/{record_id}")
    def create_version(record_id: str, draft: bool = False, uid: str = Depends(user)) -> Any:
        return {f"{noun}_id": record_id, "version": store.create_version(kind, record_id, uid, draft)}

    @r.post("/chunk/{upload_id}")
    def chunk(upload_id: str, file: UploadFile = File(...), part_number: int = Form(...),
              checksum: str = Form(...), encoding: str | None = Form(None), size: int | None = Form(None),
              uid: str = Depends(user)) -> Any:
        store.store_chunk(kind, upload_id, uid, part_number, file.file, checksum, encoding, size)
        stats.upload("chunk")
        return {"message": "Chunk uploaded"}

    @r.post("/complete/{upload_id}")
    def complete(upload_id: str, version: int | None = None, uid: str = Depends(user)) -> Any:
        record_id, name, path, file_version = store.complete_upload(kind, upload_id, uid, version)
        stats.upload("complete")
        return {f"{noun}_id": record_id, f"{noun}_name": name, "filename": path, "file_version": file_version}

    @r.get("/{record_id}/files")
    def files(record_id: str, version: int | None = None, path: str | None = None,
              who: Reader = Depends(reader)) -> Any:
        return store.list_files(kind, record_id, version, path, who)

    @r.post("/{record_id}/batch")
    def batch(record_id: str, version: int | None = None, batch: UploadFile = File(...),
              checksums: list[str] = Form(...), uid: str = Depends(user)) -> Any:
        name, paths = store.ingest_batch(kind, record_id, uid, version, batch.file, checksums)
        stats.upload("batch")
        return {f"{noun}_id": record_id, f"{noun}_name": name, "filenames": paths}

    @r.post("/{record_id}/files")
    def carry(record_id: str, version: int | None = None, any_path: bool = False, filenames: list[str] = Form(...),
              checksums: list[str] = Form(...), uid: str = Depends(user)) -> Any:
        name = store.carry_files(kind, record_id, uid, version, filenames, checksums, any_path)
        stats.upload("carry")
        return {f"{noun}_id": record_id, f"{noun}_name": name, "filenames": filenames}

    @r.post("/{record_id}/uploadId")
    def upload_id(record_id: str, body: dict = Body(...), uid: str = Depends(user)) -> Any:
        upload, parts = store.start_upload(kind, record_id, uid, body.get("filname"), body.get("checksum"))
        return {"upload_id": upload, "parts": parts}

    @r.put("/{record_id}")
    def update(record_id: str, body: Any = Body(...), uid: str = Depends(user)) -> Any:
        return store.update_record(kind, record_id, uid, body)

    @r.post("/{record_id}/publish")
    def publish(record_id: str, version: int = Query(...), base: int | None = Query(None),
                uid: str = Depends(user)) -> Any:
        store.publish(kind, record_id, uid, version, base)
        return {f"{noun}_id": record_id, "version": version}

    @r.delete("/{record_id}/version/{version}")
    def discard(record_id: str, version: int, uid: str = Depends(user)) -> Any:
        store.discard(kind, record_id, uid, version)
        return {f"{noun}_id": record_id, "version": version}

    # Two routes, not one for both methods: that gave both the same operation ID in the schema.
    @r.head("/{record_id}/download/{path:path}", response_model=None, operation_id=f"head_{kind}_download")
    @r.get("/{record_id}/download/{path:path}", response_model=None)
    async def download(request: Request, record_id: str, path: str, version: int | None = None,
                       who: Reader = Depends(reader)) -> Response:
        # Normally answered earlier by DownloadFastPath; this route documents it in the schema.
        return await downloads.answer(kind, record_id, path, version, request.method == "HEAD",
                                      request.headers.get("range"), request.headers.get("if-range"), who)

    @r.post("/{record_id}/contents")
    def contents(record_id: str, body: Any = Body(...), who: Reader = Depends(reader)) -> Response:
        data = file_contents(store, kind, record_id, body, who)
        stats.contents(len(data))
        return Response(data, media_type="application/octet-stream")

    @r.post("/{record_id}")
    def ingest_file(record_id: str, version: int | None = None, file: UploadFile = File(...),
                    checksum: str = Form(...), uid: str = Depends(user)) -> Any:
        name = store.ingest_file(kind, record_id, uid, version, file.filename, file.file, checksum)
        stats.upload("file")
        return {f"{noun}_id": record_id, f"{noun}_name": name, "filename": file.filename}

    return r


def stac_routes(r: APIRouter, store: Store, user: Any, reader: Any) -> None:
    """S1, S4 and S5: the official client's STAC datasets (see eotdlfs/server/stac.py)."""

    @r.post("/stac")
    def create_stac(body: Any = Body(...), uid: str = Depends(user)) -> Any:
        return {"dataset_id": store.create_stac_record(STAC_KIND, uid, body)}

    @r.put("/stac/{record_id}")
    def put_stac(record_id: str, body: Any = Body(...), version: int | None = None, uid: str = Depends(user)) -> Any:
        return {"dataset_id": record_id, "version": store.put_stac(STAC_KIND, record_id, uid, body, version)}

    @r.get("/{record_id}/download")
    def download_stac(request: Request, record_id: str, version: int | None = None,
                      who: Reader = Depends(reader)) -> Any:
        base = str(request.base_url)
        return store.stac_feature_collection(
            STAC_KIND, record_id, version,
            lambda path: f"{base}datasets/{record_id}/download/{quote(path, safe=HREF_SAFE)}", who)


class RepositoryApp(FastAPI):
    """FastAPI with route 9 answered in front of all of it (see `download.DownloadFastPath`); when the
    downloads are private, a request without valid credentials is answered 401 in front of both."""

    def __init__(self, downloads: Downloads, **kwargs: Any):
        super().__init__(**kwargs)
        self._downloads = downloads
        self._front = DownloadFastPath(super().__call__, downloads)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._downloads.admits(Headers(scope=scope)):
            refused = JSONResponse({"detail": PRIVATE_DETAIL}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
            await refused(scope, receive, send)
            return
        await self._front(scope, receive, send)


def create_app(root: Path, limits: Limits | None = None, db_url: str | None = None,
               blobs_url: str | None = None, redirect_downloads: bool = False, private: bool = False) -> FastAPI:
    """The server for the repository stored under ROOT, or in DB_URL (`--db`) and BLOBS_URL (`--blobs`) when
    given; with REDIRECT_DOWNLOADS, downloads are 307s to the blob store (see `Downloads.answer`); PRIVATE:
    every request, reads too, needs credentials (the embedded local repository: a port on 127.0.0.1 is
    open to every user of the machine)."""
    limits = limits or Limits.from_env()
    store = Store(Path(root), limits, db_url, blobs_url)
    store.recover()
    secret = load_secret(Path(root), store.db)
    stats = Stats()

    def credentials(headers: Headers) -> str:
        return authenticate(store.db, secret, *(_one_header(headers, name) for name in CREDENTIAL_HEADERS))

    def current_user(request: Request) -> str:
        try:
            return credentials(request.headers)
        except AuthError as exc:
            raise ApiError(401, str(exc)) from None

    def reader_of(headers: Headers) -> Reader:
        """Who reads with HEADERS, checked only when asked (for a draft): a read needs no credentials,
        and bad ones make an anonymous reader, as before drafts were private."""
        def who() -> str | None:
            try:
                return credentials(headers)
            except AuthError:
                return None
        return who

    def reader(request: Request) -> Reader:
        return reader_of(request.headers)

    downloads = Downloads(store, stats, reader_of, redirect_downloads, private)
    app = RepositoryApp(downloads, title="eotdlfs repository", openapi_url="/openapi.json", docs_url="/docs",
                        redoc_url=None, lifespan=upkeep(store))
    app.state.store, app.state.stats, app.state.downloads = store, stats, downloads
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes, max_other_bytes=limits.max_other_body_bytes,
                       max_stac_bytes=limits.max_stac_body_bytes)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else exc.headers
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_detail(exc)}, status_code=422)

    @app.exception_handler(OverflowError)
    async def number_too_big(request: Request, exc: OverflowError) -> JSONResponse:
        # a query or path integer beyond SQLite's 64 bits reaches the database as an OverflowError
        return JSONResponse({"detail": "A number in the request is out of range"}, status_code=400)

    @app.exception_handler(TextWithNul)
    async def text_with_nul(request: Request, exc: TextWithNul) -> JSONResponse:
        # PostgreSQL's text cannot hold one (SQLite's can); Store answers lookups of one as on SQLite, before
        return JSONResponse({"detail": "A text in the request contains a NUL character"}, status_code=400)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        # JSON like every other answer (clients read `detail`); uvicorn still logs the traceback
        if is_disk_full(getattr(exc, "orig", None) or exc):  # SQLAlchemy wraps the driver's error
            return JSONResponse({"detail": "The repository's disk is full"}, status_code=507)
        return JSONResponse({"detail": f"Internal server error ({exc.__class__.__name__})"}, status_code=500)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.get("/")
    def root_info() -> Any:
        return {"name": "eotdlfs repository", "kinds": list(KINDS)}

    @app.get("/eotdlfs/stats")
    def get_stats() -> Any:
        return stats.snapshot()

    @app.get("/eotdlfs/capabilities")
    def capabilities() -> Any:
        return CAPABILITIES

    for kind in KINDS:
        app.include_router(kind_router(kind, store, stats, current_user, reader, downloads))
    return app

