"""The mount's live statistics, served as the virtual file `MNT/.eotdlfs/status.json`."""

from __future__ import annotations

import json
import os
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
        "server_reachable": context.namespace.server_reachable,
        "cache_dir": str(context.options.cache_dir),
        "cache": dict(cache, hit_rate=round(cache["hits"] / lookups, 4) if lookups else None),
        "fetch": context.fetcher.stats.as_dict(),
    }
    if staging is not None and hasattr(staging, "status"):
        status["staging"] = staging.status()
    return status


def status_bytes(status: dict[str, Any]) -> bytes:
    return (json.dumps(status, indent=2, sort_keys=True) + "\n").encode()


def _human(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def format_status(status: dict[str, Any]) -> str:
    """A few human lines; staging details (if any) as the overlay reports them."""
    cache, fetch = status.get("cache", {}), status.get("fetch", {})
    rate = cache.get("hit_rate")
    reachable = {True: "yes", False: "NO", None: "unknown"}[status.get("server_reachable")]
    lines = [
        f"mount        {status.get('mountpoint')} (pid {status.get('pid')}, up {status.get('uptime_s')} s)",
        f"server       {status.get('api_url')} reachable: {reachable}",
        f"cache        {_human(cache.get('bytes_used'))} of {_human(cache.get('size_limit'))} "
        f"in {status.get('cache_dir')}",
        f"hit rate     {'-' if rate is None else f'{rate:.1%}'} "
        f"({cache.get('hits', 0)} hits, {cache.get('misses', 0)} misses)",
        f"fetched      {_human(fetch.get('bytes_fetched'))} in {fetch.get('requests', 0)} requests, "
        f"{fetch.get('fetch_errors', 0)} errors",
    ]
    if cache.get("write_errors"):
        lines.append(f"cache full   {cache['write_errors']} blocks could not be stored (reads still work)")
    if cache.get("damaged_blocks"):
        lines.append(f"damaged      {cache['damaged_blocks']} cached blocks failed their check and were fetched again")
    if fetch.get("last_fetch_error"):
        lines.append(f"last error   {fetch['last_fetch_error']}")
    if "staging" in status:
        from eotdlfs.fs.staging.control import format_staging

        lines.extend(format_staging(status["staging"]))
    return "\n".join(lines)
