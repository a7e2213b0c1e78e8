"""The Python API: `eotdlfs.connect(...)` and the `Connection` it returns.

One connection to a repository (settings and credentials found as by every command; with no
API URL, the embedded local repository), for scripts and notebooks: list records and versions,
ingest a folder, download a version, open a file. Files are read lazily through the same
read path as the mount (block cache, fetcher, SHA-1 and per-block checks), built on the first
`open` in the mount's cache dir by default, so a file read here is cached for a mount and the
other way round. The CLI's `ingest`, `get` and `list` are this API plus printing
(`app/commands.py`); `eotdl://` (`app/fsspec_eotdl.py`) is this API behind fsspec.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from eotdlfs.app.remotefile import RemoteFile, open_remote
from eotdlfs.cachedir import make_private, user_cache_dir, warn_if_shared
from eotdlfs.client.api import ApiClient
from eotdlfs.client.repository import ApiRepository
from eotdlfs.client.settings import Settings, resolve_settings
from eotdlfs.fs.context import MountContext, MountOptions, build_context
from eotdlfs.fs.namespace import FILE, LATEST, Node
from eotdlfs.fs.pieces import SCRIPT_STORE_AT_BYTES
from eotdlfs.metadata import KINDS, record_noun
from eotdlfs.repository import IngestResult, Record, TransferProgress, Version

if TYPE_CHECKING:
    from eotdlfs.app.embedded import LocalRepository
    from eotdlfs.client.download import DownloadResult

DEFAULT_CACHE_SIZE = 20 << 30  # the mount's default: one limit for the cache they share
URL_PREFIX = "eotdl://"  # the fsspec URL of a path, as a pystac walk over eotdl:// hands out asset hrefs
log = logging.getLogger(__name__)

SPARE_CONNECTIONS = 2  # made as the read path is built (`ApiClient.connect_ahead`)
_LATEST_IN_PATH = re.compile(rf"^(/(?:{'|'.join(KINDS)})/[^/]+)/{LATEST}(?=/|$)")


class Connection:
    """A repository, for scripts: records, versions, ingest, download and lazy reads."""

    def __init__(self, settings: Settings, embedded: LocalRepository | None = None, cache_dir: Path | None = None,
                 cache_size: int = DEFAULT_CACHE_SIZE, ttl: float = 10.0):
        self.settings = settings
        self.cache_dir = Path(cache_dir) if cache_dir else user_cache_dir()
        self.cache_size = cache_size
        self.ttl = ttl
        self.api = ApiClient(settings)
        self.repo = ApiRepository(self.api)  # the port the read path and the record calls go through
        self._embedded = embedded
        self._lock = threading.Lock()
        self._reading: MountContext | None = None  # built by the first read
        self._scratch: Path | None = None  # the cache dir made for this connection when CACHE_DIR was refused

    # --- records ---------------------------------------------------------------------------

    def list(self, kind: str = "datasets", match: str | None = None) -> list[Record]:
        """The records of KIND (names containing MATCH, case-insensitive), drafts included in their versions."""
        record_noun(kind)
        return self.repo.records(kind, match)

    def record(self, name: str, kind: str = "datasets") -> Record:
        """The record named NAME; `NotFound` when there is none."""
        record_noun(kind)
        return self.repo.record(kind, name)

    def versions(self, name: str, kind: str = "datasets") -> list[Version]:
        """NAME's published versions, oldest first."""
        return list(self.record(name, kind).published)

    # --- whole versions --------------------------------------------------------------------

    def ingest(self, path: str | Path, kind: str = "datasets",
               progress: TransferProgress | None = None) -> IngestResult:
        """Ingest the folder PATH (with its metadata.yml, or a STAC catalog.json) as the next
        version of the record it names: only new and changed files are sent. `NothingToIngest`
        when nothing changed."""
        from eotdlfs.client.ingest import ingest_folder  # the engine (and STAC's stack) only for an ingest

        record_noun(kind)
        result = ingest_folder(self.api, kind, Path(path), progress)
        with self._lock:
            reading = self._reading
        if reading is not None:
            reading.namespace.invalidate(kind)  # the next open sees the new version at once
        return result

    def get(self, name: str, version: int | str | None = None, out: str | Path = ".", kind: str = "datasets",
            progress: TransferProgress | None = None) -> DownloadResult:
        """Download NAME's VERSION (default: latest; 2, '2' or 'v2') into OUT/NAME/vN/, each file's
        SHA-1 checked, files already there skipped."""
        from eotdlfs.client.download import download_version

        record_noun(kind)
        return download_version(self.api, kind, name, version_number(version), Path(out), progress)

    # --- reading ---------------------------------------------------------------------------

    def open(self, path: str) -> RemoteFile:
        """A seekable binary file of PATH ('datasets/NAME/v2/a.tif', 'datasets/NAME/latest/a.tif', or
        its eotdl:// URL), read lazily through the block cache and checked against its SHA-1."""
        node = self.resolve(path)
        if node.type != FILE:
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        reading = self.reading()
        reading.prefetch.opened(node)  # a walk of small files (fs.get, a loop of opens) as on the mount
        return open_remote(reading.reader, node.record, node.entry, path)

    def resolve(self, path: str) -> Node:
        """What PATH is in the mount's tree, `latest` followed; FileNotFoundError naming PATH as
        given when nothing (the tree names '/datasets/NAME/v1/x' or, for a record, 'datasets/NAME')."""
        try:
            return self.reading().namespace.resolve(self.tree_path(path))
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path) from None

    def tree_path(self, path: str) -> str:
        """PATH (or its eotdl:// URL) as the namespace knows it: '/KIND/NAME/vN/...', with `latest`
        replaced by its version."""
        path = "/" + "/".join(p for p in path.removeprefix(URL_PREFIX).split("/") if p)
        match = _LATEST_IN_PATH.match(path)
        if match is None:
            return path
        target = self.reading().namespace.resolve(f"{match.group(1)}/{LATEST}").target  # one rule for `latest`
        return f"{match.group(1)}/{target}{path[match.end():]}"

    def reading(self) -> MountContext:
        """The read path (cache, fetcher, namespace, reader), built once."""
        with self._lock:
            if self._reading is None:
                try:
                    self._reading = self._build_reading()
                except OSError as exc:
                    # A read-only home (a container's, a notebook's) or a cache dir another user owns: reads
                    # would all fail for want of a cache. They go through a cache of this connection instead.
                    self._scratch = Path(tempfile.mkdtemp(prefix="eotdlfs-cache-"))
                    log.warning("cannot use the cache dir %s (%s): caching in %s for this connection alone "
                                "(give cache_dir= a folder you can write)", self.cache_dir, exc, self._scratch)
                    self.cache_dir = self._scratch
                    self._reading = self._build_reading()
            return self._reading

    def _build_reading(self) -> MountContext:
        make_private(self.cache_dir)
        warn_if_shared(self.cache_dir)
        # No version list in the background after a first lookup: a script opening one
        # file of 10,000 may be done before it comes, and would pay for it while reading.
        options = MountOptions(cache_dir=self.cache_dir, cache_size=self.cache_size, ttl=self.ttl,
                               api_url=self.settings.api_url or "", read_timeout=self.settings.timeout + 5,
                               repository=str(self._embedded.root) if self._embedded else "",
                               list_later=False, store_pieces_at=SCRIPT_STORE_AT_BYTES)
        # A script's first lookup and reads (its thread, the piece workers') find their connections made
        self.api.connect_ahead(SPARE_CONNECTIONS)
        return build_context(self.repo, options)

    # --- the end ---------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            reading, self._reading = self._reading, None
        if reading is not None:
            reading.close()
        self.api.close()
        if self._embedded is not None:
            self._embedded.stop()
            self._embedded = None
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def version_number(version: int | str | None) -> int | None:
    """VERSION as a number: 2, '2' or 'v2' (a version folder's name) are 2; None (the latest) stays None.
    TypeError for anything else: a version given as '2' was compared with the numbers and not found."""
    if isinstance(version, str) and re.fullmatch(r"v?[0-9]+", version):
        return int(version.removeprefix("v"))
    if version is None or (isinstance(version, int) and not isinstance(version, bool)):
        return version
    raise TypeError(f"version: a whole number such as 2 or '2' (or None for the latest), not {version!r}")


def connect(api_url: str | None = None, token: str | None = None, cache_dir: str | Path | None = None,
            cache_size: int = DEFAULT_CACHE_SIZE, ttl: float = 10.0) -> Connection:
    """A connection to the repository at API_URL (default: `EOTDL_API_URL`, the config file, else
    the embedded local repository), with TOKEN (default: `EOTDL_TOKEN`, `EOTDL_API_KEY`, the config
    file, the official client's login). Reads are cached in CACHE_DIR (default: the mount's)."""
    settings, embedded = resolve_settings(api_url, token), None
    if settings.api_url is None:
        # Imported only then: the server's stack (FastAPI, SQLAlchemy) is a second of start-up.
        from eotdlfs.app.embedded import settings_or_local

        settings, embedded = settings_or_local(settings)
    return Connection(settings, embedded, Path(cache_dir) if cache_dir else None, cache_size, ttl)

