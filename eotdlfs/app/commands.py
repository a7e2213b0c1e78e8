"""The work behind the `eotdlfs` commands: connect, run the library call, say what happened.

`ingest`, `get` and `list` are the Python API (`app/connection.py`) plus printing, so scripts
and the command line run one implementation. `cli.py` only parses options and turns
`CLIENT_ERRORS` into its one-line `error: ...`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable

from eotdlfs.client.progress import progress_for
from eotdlfs.fs.staging.control import request_flush
from eotdlfs.metadata import MetadataError, record_noun
from eotdlfs.repository import NothingToIngest, RepositoryError, TransferProgress, Unauthorized

CLIENT_ERRORS = (RepositoryError, MetadataError, OSError, ValueError)


def human_bytes(n: int) -> str:
    """1536 -> '1.5 KiB'."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _interactive() -> bool:
    return sys.stderr.isatty()


def ingest_command(path: Path, kind: str, api_url: str | None, token: str | None) -> str:
    """Ingest PATH; the one-line summary (or why nothing was done)."""
    from eotdlfs.app.connection import connect  # the HTTP stack: not for `flush` and `status`
    from eotdlfs.client.ingest import folder_name

    record_noun(kind)
    name = folder_name(path)  # validated before any connection is made
    with connect(api_url, token) as repo, progress_for(f"{name}", _interactive()) as progress:
        try:
            result = repo.ingest(path, kind, progress)
        except NothingToIngest as exc:
            return f"{exc}; no version created"
        except KeyboardInterrupt:
            raise RepositoryError("interrupted; run the same ingest again to resume where it stopped") from None
        except Unauthorized as exc:
            if repo.settings.token or repo.settings.api_key:
                raise
            raise Unauthorized(f"{exc} (no credentials: use EOTDL_TOKEN, EOTDL_API_KEY or --token-file)",
                               exc.status) from exc
    resumed = f" (resumed: {result.resumed} already sent by an interrupted run)" if result.resumed else ""
    return (f"{name} v{result.version}: {result.uploaded} uploaded, {result.carried} carried, "
            f"{result.dropped} removed, {human_bytes(result.bytes_sent)} sent{resumed}"
            + (f"; {result.record_note}" if result.record_note else ""))


def get_command(name: str, version: int | None, kind: str, out: Path, api_url: str | None, token: str | None) -> str:
    """Download NAME's version into OUT/NAME/vN; a line saying where and what was fetched."""
    from eotdlfs.app.connection import connect

    record_noun(kind)
    with connect(api_url, token) as repo, progress_for(name, _interactive()) as progress:
        result = repo.get(name, version, out, kind, progress)
    return (f"{name} v{result.version}: {result.downloaded} downloaded, {result.skipped} already present, "
            f"{human_bytes(result.bytes_received)} received -> {result.folder}")


def list_command(kind: str, match: str | None, api_url: str | None, token: str | None) -> None:
    """Print a table of the records of KIND: name, latest version, its size, owner."""
    from rich.console import Console
    from rich.table import Table

    from eotdlfs.app.connection import connect

    record_noun(kind)
    with connect(api_url, token) as repo:
        records = repo.list(kind, match)
    table = Table("name", "versions", "latest", "size", "owner", box=None)
    for record in sorted(records, key=lambda r: r.name.lower()):
        published = record.published
        latest = published[-1] if published else None
        table.add_row(record.name, str(len(published)), f"v{latest.number}" if latest else "-",
                      human_bytes(latest.size) if latest else "-", record.owner)
    Console(width=200 if not sys.stdout.isatty() else None).print(table)
    if not records:
        print(f"no {kind}" + (f" matching {match!r}" if match else ""))


# --- a mount's commands: flush and status ---------------------------------------------------

def flush_command(folder: Path, timeout: float, say: Callable[[str], None]) -> dict:
    """Flush the staged record FOLDER and wait for the outcome, with a progress bar on a terminal
    and the mount's messages (waiting for X) on SAY; the final flush state."""
    return follow_flush(folder, timeout, progress_for("flush", _interactive()), say)


def follow_flush(folder: Path, timeout: float, progress: TransferProgress, say: Callable[[str], None]) -> dict:
    """`request_flush` with the mount's progress replayed on PROGRESS and its messages (waiting for X) on SAY."""
    seen = {"files": 0, "bytes": 0, "message": None, "started": False}

    def on_state(state: dict) -> None:
        if state["message"].startswith("waiting for") and state["message"] != seen["message"]:
            say(state["message"])
            seen["message"] = state["message"]
        if state["state"] == "flushing" and not seen["started"] and state["files_total"]:
            progress.start(state["files_total"], state["bytes_total"])
            seen["started"] = True
        if seen["started"]:
            progress.advance(files=state["files_done"] - seen["files"], bytes_done=state["bytes_done"] - seen["bytes"])
            seen["files"], seen["bytes"] = state["files_done"], state["bytes_done"]

    with progress:
        return request_flush(folder, on_state, timeout)


def format_status(status: dict[str, Any]) -> str:
    """`eotdlfs status`: a few human lines from a mount's status.json, staging details (if any) last."""
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
        lines.append(f"cache errors {cache['write_errors']} blocks could not be stored or looked up, last: "
                     f"{cache.get('last_error')} (reads still work: fetched from the server)")
    if fetch.get("pieces_let_go"):
        lines.append(f"cache slow   {fetch['pieces_let_go']} pieces fetched were not stored: the cache disk fell "
                     "behind (a later read fetches them again)")
    if cache.get("damaged_blocks"):
        lines.append(f"damaged      {cache['damaged_blocks']} cached blocks failed their check and were fetched again")
    failure = status.get("last_failure")
    if failure:  # what a reader got, with the file: says more than the fetch's last error
        lines.append(f"last failure {failure['path']}: {failure['error']} ({failure['errno']}, "
                     f"{time.time() - failure['at']:.0f} s ago)")
    elif fetch.get("last_fetch_error"):
        lines.append(f"last error   {fetch['last_fetch_error']}")
    if "staging" in status:
        lines.extend(format_staging(status["staging"]))
    return "\n".join(lines)


def _human(n: int | None) -> str:
    return "-" if n is None else human_bytes(n)


def format_staging(staging: dict) -> list[str]:
    """Status lines, one per staged record: what is pending and how its last flush went."""
    if "error" in staging:  # the mount could not read its staging journals (`collect_status`)
        return [f"staging      {staging['error']}"]
    records = staging.get("records", [])
    lines = [] if records else ["staging      nothing staged" + (f" (autoflush after {staging['autoflush_s']:g} s)"
                                                                 if staging.get("autoflush_s") else "")]
    for r in records:
        base = f"on v{r['base_version']}" if r["base_version"] else "new record"
        lines.append(f"staging      {r['record']} ({base}): {r['added']} added, {r['changed']} changed, "
                     f"{r['deleted']} deleted, {r['bytes_pending']} bytes pending; {_flush_words(r)}")
    # repr: a refused name may hold a newline or a tab
    lines.extend(f"refused name {r['path']!r}: {r['reason']}" for r in staging.get("refused_names", []))
    return lines


def _flush_words(record: dict) -> str:
    state = record["flush"]
    if state == "idle":
        return "no flush yet"
    if state == "failed":
        return f"last flush failed: {record['error']}"
    if state in ("waiting", "flushing"):
        return f"flush running: {record['message']}"
    return f"last flush: {record['message']}"
