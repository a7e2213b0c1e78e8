"""Building a mount: the repository client, the read-only side, the staging area and the FUSE session.

The one place that wires `eotdlfs.client` (the ports' HTTP implementation) to `eotdlfs.fs`;
`fs` itself never imports the client.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Callable

from eotdlfs.app.embedded import settings_or_local
from eotdlfs.cachedir import make_private, warn_if_shared
from eotdlfs.client.api import ApiClient
from eotdlfs.client.ingest.ledger import LEDGER_FILE, DraftLedger
from eotdlfs.client.publisher import ApiPublisher
from eotdlfs.client.repository import ApiRepository
from eotdlfs.client.settings import resolve_settings
from eotdlfs.fs.content import Content
from eotdlfs.fs.context import MountOptions, build_context
from eotdlfs.fs.fetcher import BlockFetcher
from eotdlfs.fs.fuse_binding import check_can_mount, run_fuse
from eotdlfs.fs.fuse_ops import EotdlfsOperations
from eotdlfs.fs.mount import PRIVATE_UMASK, clean_stale
from eotdlfs.fs.mountlock import hold_cache_dir
from eotdlfs.fs.namespace import Namespace
from eotdlfs.fs.nodes import Node
from eotdlfs.fs.staging.journal import STAGING_FOLDER
from eotdlfs.fs.staging.mounted import make_staging_area
from eotdlfs.repository import FileEntry, Record, Unreachable

log = logging.getLogger(__name__)

# The record lists asked for at start are waited for this long before the kernel sees the mount:
# its first lookup then finds them in hand (they came after it was ready on a loaded machine),
# and a silent server delays the mount by no more.
RECORDS_WAIT_S = 2.0
# Connections made as the mount starts, for the first lookups and fetches: each comes on a thread of its own
SPARE_CONNECTIONS = 4
AHEAD_NOT_OPENED = 4
AHEAD_FORGET_S = 10.0  # a stat long ago says nothing of what the lookups of now are for


class FirstBlocksAhead(ApiRepository):
    """The repository as a mount reads it: a file that a lookup finds alone (its version's list not
    in hand yet) has its first block (a small file whole) fetched at once, from the lookup's thread,
    since the kernel opens and reads a file right after looking it up. Not for eotdl://, where a
    script opens and reads at once, and where it means to (a seeking reader would pay a block).

    A lookup cannot tell a `stat` from an open: once AHEAD_NOT_OPENED files fetched so in the last
    AHEAD_FORGET_S are not opened, lookups fetch nothing until one is, or that long has passed (a
    script testing which of 1,000 paths exist, on a fresh mount, fetched a block per path)."""

    fetcher: BlockFetcher | None = None  # set once the mount is built, before the kernel sees it

    def __init__(self, api: ApiClient):
        super().__init__(api)
        self._lock = threading.Lock()
        # guarded by _lock: checksums fetched ahead and not opened since, with when (monotonic)
        self._not_opened: dict[str, float] = {}

    def lookup(self, record: Record, version: int, path: str) -> list[FileEntry]:
        return self._fetch_ahead(record, path, super().lookup(record, version, path))

    def lookup_at_once(self, record: Record, version: int, path: str) -> list[FileEntry] | None:
        found = super().lookup_at_once(record, version, path)
        return None if found is None else self._fetch_ahead(record, path, found)

    def opened(self, node: Node) -> None:
        """NODE, a published file, is being opened."""
        with self._lock:
            self._not_opened.pop(node.entry.checksum, None)

    def _fetch_ahead(self, record: Record, path: str, found: list[FileEntry]) -> list[FileEntry]:
        entry = found[0] if len(found) == 1 and found[0].path == path else None
        if self.fetcher is None or entry is None or entry.size == 0 or (entry.checksum, 0) in self.fetcher.cache:
            return found
        now = time.monotonic()
        with self._lock:
            for checksum, when in list(self._not_opened.items()):
                if now - when > AHEAD_FORGET_S:
                    del self._not_opened[checksum]
            if len(self._not_opened) >= AHEAD_NOT_OPENED:
                return found
            self._not_opened[entry.checksum] = now
        try:
            self.fetcher.demand(Content(record, entry), 0, self.fetcher.serial())
        except Exception as exc:  # only a head start: the open fetches as usual
            log.debug("nothing fetched ahead of %s: %s", path, exc)
        return found


def _told_first(first: Callable[[Node], None], then: Callable[[Node], None] | None) -> Callable[[Node], None]:
    def opened(node: Node) -> None:
        first(node)
        if then is not None:
            then(node)
    return opened


def wait_for(futures: list[Future], within: float) -> None:
    """Wait at most WITHIN s in all for FUTURES, whatever they end with."""
    deadline = time.monotonic() + within
    for future in futures:
        with contextlib.suppress(Exception):  # offline or silent: the first look says so
            future.result(timeout=max(0.0, deadline - time.monotonic()))


def check_reachable(api: ApiClient, namespace: Namespace, cache_dir: Path) -> None:
    """Before mounting, check that something takes connections at the API URL. When nothing does, a
    listing an earlier mount kept in CACHE_DIR is served offline (said in the log and in
    `server_reachable` of the status); without one the mount would show nothing but EIO, so it is
    refused (RuntimeError). A server that is there but silent is mounted: reads give EIO within
    the mount's bound, and work once it answers."""
    try:
        api.check_listening()
    except Unreachable as exc:
        if not namespace.kept_listing():
            raise RuntimeError(f"{exc}; {cache_dir} has no listing from an earlier mount to serve "
                               "offline, so nothing is mounted") from exc
        namespace.server_reachable = False
        log.warning("%s; mounting offline with the listing an earlier mount kept in %s", exc, cache_dir)


def run_foreground(mountpoint: Path, api_url: str | None, cache_dir: Path, cache_size: int,
                   allow_other: bool = False, autoflush: float | None = None,
                   ttl: float = 10.0) -> None:
    """Mount and serve until unmounted (this is the mount process)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Absolute now: libfuse moves this process to `/` once mounted, and the cache opens files
    # (SQLite connections per thread, staged files) for as long as it runs.
    mountpoint, cache_dir = Path(mountpoint).absolute(), Path(cache_dir).absolute()
    check_can_mount(allow_other)  # before the cache, repository and listings are set up for nothing
    make_private(cache_dir)
    warn_if_shared(cache_dir)
    os.umask(PRIVATE_UMASK)  # covers what diskcache, SQLite and logging create there, not only our own files
    hold_cache_dir(cache_dir, mountpoint)  # kept until this process exits
    clean_stale(mountpoint)
    settings, embedded = settings_or_local(resolve_settings(api_url))
    api = ApiClient(settings)
    options = MountOptions(cache_dir=cache_dir, cache_size=cache_size, ttl=ttl, autoflush=autoflush,
                           api_url=settings.api_url, read_timeout=settings.timeout + 5,
                           repository=str(embedded.root) if embedded else "")
    repo = FirstBlocksAhead(api)
    context = build_context(repo, options)
    repo.fetcher = context.fetcher
    context.tree.on_open = _told_first(repo.opened, context.tree.on_open)
    check_reachable(api, context.namespace, cache_dir)
    if context.namespace.server_reachable is not False:
        api.connect_ahead(SPARE_CONNECTIONS)
        wait_for(context.warming, RECORDS_WAIT_S)
    folder = cache_dir / STAGING_FOLDER
    staging = make_staging_area(context, ApiPublisher(api, DraftLedger(folder / LEDGER_FILE)), folder)
    log.info("mounting %s on %s (cache %s)", settings.api_url, mountpoint, cache_dir)
    try:
        run_fuse(EotdlfsOperations(context, str(mountpoint), staging), str(mountpoint), settings.api_url,
                 allow_other)
    finally:
        if embedded is not None:
            embedded.stop()
