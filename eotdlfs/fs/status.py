"""The mount's live statistics, served as the virtual file `MNT/.eotdlfs/status.json`."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from typing import Any

from eotdlfs.fs.context import MountContext

STATUS_DIR = ".eotdlfs"
STATUS_FILE = "status.json"
STATUS_PATH = f"/{STATUS_DIR}/{STATUS_FILE}"


def collect_status(context: MountContext, mountpoint: str, staging: Any = None,
                   started: float | None = None) -> dict[str, Any]:
    try:  # starts a refresh of the record list when stale; `server_reachable` is what the last one found
        context.namespace.records("datasets")
    except Exception:
        pass
    cache = context.cache.stats()
    lookups = cache["hits"] + cache["misses"]
    status = {
        "mountpoint": mountpoint,
        "pid": os.getpid(),
        "api_url": context.options.api_url,
        "uptime_s": round(time.time() - (started or context.namespace.started), 1),
        "server_reachable": _server_reachable(context),
        "cache_dir": str(context.options.cache_dir),
        "cache": dict(cache, hit_rate=round(cache["hits"] / lookups, 4) if lookups else None),
        "fetch": dict(context.fetcher.stats.as_dict(), pieces_let_go=context.reader.pieces.let_go),
        "prefetched_files": context.prefetch.fetched,
    }
    if staging is not None and hasattr(staging, "status"):
        try:
            status["staging"] = staging.status()
        except (OSError, sqlite3.Error) as exc:
            # its journals are on the cache disk: when that fails, the rest of the status is what tells the user
            status["staging"] = {"error": f"the staging journals cannot be read: {exc}"}
    return status


def status_bytes(status: dict[str, Any]) -> bytes:
    return (json.dumps(status, indent=2, sort_keys=True) + "\n").encode()


def _server_reachable(context: MountContext) -> bool | None:
    """The latest evidence: bytes fetched after the repository was found unreachable (a read that
    failed, a refresh that failed) say it is back, without waiting for the listing's next refresh."""
    namespace = context.namespace
    if namespace.server_reachable is False and context.fetcher.stats.last_fetch_at > namespace.reachability_at:
        return True
    return namespace.server_reachable
