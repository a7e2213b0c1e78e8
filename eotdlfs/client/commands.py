"""The work behind `eotdlfs ingest`, `get` and `list`: connect, run the library call, say what happened.

`cli.py` only parses options and turns `CLIENT_ERRORS` into its one-line `error: ...`.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from eotdlfs.client.api import ApiClient
from eotdlfs.client.errors import NothingToIngest, RepositoryError, Unauthorized
from eotdlfs.client.settings import resolve_settings
from eotdlfs.metadata import MetadataError, record_noun

CLIENT_ERRORS = (RepositoryError, MetadataError, OSError, ValueError)


def human_bytes(n: int) -> str:
    """1536 -> '1.5 KiB'."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


@contextmanager
def connect(api_url: str | None, token: str | None) -> Iterator[ApiClient]:
    """An API client for the configured repository; with no API URL, the embedded local one (stopped after)."""
    from eotdlfs.server.embedded import settings_or_local

    settings, embedded = settings_or_local(resolve_settings(api_url, token))
    api = ApiClient(settings)
    try:
        yield api
    finally:
        api.close()
        if embedded is not None:
            embedded.stop()


def _interactive() -> bool:
    return sys.stderr.isatty()


def ingest_command(path: Path, kind: str, api_url: str | None, token: str | None) -> str:
    """Ingest PATH; the one-line summary (or why nothing was done)."""
    from eotdlfs.client.ingest import ingest_folder
    from eotdlfs.client.progress import progress_for
    from eotdlfs.metadata import load_metadata

    record_noun(kind)
    name = load_metadata(path).name  # validated before any connection is made
    with connect(api_url, token) as api, progress_for(f"{name}", _interactive()) as progress:
        try:
            result = ingest_folder(api, kind, path, progress)
        except NothingToIngest as exc:
            return f"{exc}; no version created"
        except KeyboardInterrupt:
            raise RepositoryError("interrupted; run the same ingest again to resume where it stopped") from None
        except Unauthorized as exc:
            if api.settings.token or api.settings.api_key:
                raise
            raise Unauthorized(f"{exc} (no credentials: use EOTDL_TOKEN, EOTDL_API_KEY or --token-file)", exc.status) from exc
    resumed = f" (resumed: {result.resumed} already sent by an interrupted run)" if result.resumed else ""
    return (f"{name} v{result.version}: {result.uploaded} uploaded, {result.carried} carried, "
            f"{result.dropped} removed, {human_bytes(result.bytes_sent)} sent{resumed}")


def get_command(name: str, version: int | None, kind: str, out: Path, api_url: str | None, token: str | None) -> str:
    """Download NAME's version into OUT/NAME/vN; a line saying where and what was fetched."""
    from eotdlfs.client.download import download_version
    from eotdlfs.client.progress import progress_for

    record_noun(kind)
    with connect(api_url, token) as api, progress_for(name, _interactive()) as progress:
        result = download_version(api, kind, name, version, out, progress)
    return (f"{name} v{result.version}: {result.downloaded} downloaded, {result.skipped} already present, "
            f"{human_bytes(result.bytes_received)} received -> {result.folder}")


def list_command(kind: str, match: str | None, api_url: str | None, token: str | None) -> None:
    """Print a table of the records of KIND: name, latest version, its size, owner."""
    from rich.console import Console
    from rich.table import Table

    from eotdlfs.client.repository import parse_record

    record_noun(kind)
    with connect(api_url, token) as api:
        records = [parse_record(kind, d) for d in api.records(kind, match=match)]
    table = Table("name", "versions", "latest", "size", "owner", box=None)
    for record in sorted(records, key=lambda r: r.name.lower()):
        published = record.published
        latest = published[-1] if published else None
        table.add_row(record.name, str(len(published)), f"v{latest.number}" if latest else "-",
                      human_bytes(latest.size) if latest else "-", record.owner)
    Console(width=200 if not sys.stdout.isatty() else None).print(table)
    if not records:
        print(f"no {kind}" + (f" matching {match!r}" if match else ""))
