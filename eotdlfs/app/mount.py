"""Building a mount: the repository client, the read-only side, the staging area and the FUSE session.

The one place that wires `eotdlfs.client` (the ports' HTTP implementation) to `eotdlfs.fs`;
`fs` itself never imports the client.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from eotdlfs.app.embedded import settings_or_local
from eotdlfs.client.api import ApiClient
from eotdlfs.client.ingest.ledger import LEDGER_FILE, DraftLedger
from eotdlfs.client.publisher import ApiPublisher
from eotdlfs.client.repository import ApiRepository
from eotdlfs.client.settings import resolve_settings
from eotdlfs.fs.context import MountOptions, build_context
from eotdlfs.fs.fuse_binding import run_fuse
from eotdlfs.fs.fuse_ops import EotdlfsOperations
from eotdlfs.fs.mount import PRIVATE_UMASK, clean_stale, make_private
from eotdlfs.fs.mountlock import hold_cache_dir
from eotdlfs.fs.namespace import Namespace
from eotdlfs.fs.staging.mounted import make_staging_area
from eotdlfs.repository import Unreachable

log = logging.getLogger(__name__)


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
    make_private(cache_dir)
    os.umask(PRIVATE_UMASK)  # covers what diskcache, SQLite and logging create there, not only our own files
    hold_cache_dir(cache_dir, mountpoint)  # kept until this process exits
    clean_stale(mountpoint)
    settings, embedded = settings_or_local(resolve_settings(api_url))
    api = ApiClient(settings)
    options = MountOptions(cache_dir=cache_dir, cache_size=cache_size, ttl=ttl, autoflush=autoflush,
                           api_url=settings.api_url, read_timeout=settings.timeout + 5)
    context = build_context(ApiRepository(api), options)
    check_reachable(api, context.namespace, cache_dir)
    folder = cache_dir / "staging"
    staging = make_staging_area(context, ApiPublisher(api, DraftLedger(folder / LEDGER_FILE)), folder)
    log.info("mounting %s on %s (cache %s)", settings.api_url, mountpoint, cache_dir)
    try:
        run_fuse(EotdlfsOperations(context, str(mountpoint), staging), str(mountpoint), settings.api_url,
                 allow_other)
    finally:
        if embedded is not None:
            embedded.stop()
