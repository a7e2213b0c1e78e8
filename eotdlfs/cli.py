"""The `eotdlfs` command: each command parses its options and hands the work to a library call."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

app = typer.Typer(
    help="The EOTDL repository as a filesystem, plus ingestion and download.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def fail(message: str | BaseException) -> None:
    """Print a one-line error and exit non-zero: the CLI's only way to report failure. An OSError
    says its reason (and path), without the "[Errno N]" its str() starts with."""
    if isinstance(message, OSError) and message.strerror:
        message = f"{message.strerror}: {message.filename}" if message.filename else message.strerror
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


DB_OPTION = typer.Option(None, "--db", help="Metadata database: sqlite:///PATH or postgresql://USER@HOST:PORT/DB"
                         " (default: SQLite under --root). Replicas on one database share tokens and API keys.")

BLOBS_OPTION = typer.Option(None, "--blobs", help="Blob store: a folder, s3://BUCKET or s3://BUCKET/PREFIX"
                            " (endpoint and keys from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...;"
                            " default: a folder under --root).")


@app.command()
def serve(
    root: Path = typer.Option(..., "--root", help="Folder holding the repository (created if missing)."),
    db: str | None = DB_OPTION,
    blobs: str | None = BLOBS_OPTION,
    redirect_downloads: bool = typer.Option(False, "--redirect-downloads", help="Answer downloads with a 307 to"
                                            " a short-lived presigned URL of the blob (S3 blobs),"
                                            " so bytes skip the server."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
) -> None:
    """Run the reference repository server (the EOTDL API plus eotdlfs extensions)."""
    from botocore.exceptions import BotoCoreError, ClientError
    from sqlalchemy.exc import SQLAlchemyError

    from eotdlfs.server.run import serve as run_server

    typer.echo(f"serving {root} on http://{host}:{port}/ (Ctrl-C stops)", err=True)
    try:
        run_server(root, host, port, db, blobs, redirect_downloads)
    except (OSError, ValueError, SQLAlchemyError, BotoCoreError, ClientError) as exc:
        fail(exc)


@app.command()
def token(
    root: Path | None = typer.Option(None, "--root", help="The repository folder of `eotdlfs serve`."),
    db: str | None = DB_OPTION,
    user: str = typer.Option(..., "--user", help="The user id (the token's `sub`)."),
) -> None:
    """Print a JWT for USER on stdout and a new API key on stderr."""
    from sqlalchemy.exc import SQLAlchemyError

    from eotdlfs.server.auth import create_api_key, issue_token

    if not user.strip():
        fail("--user must not be empty")
    if root is None and db is None:
        fail("give --root or --db")
    try:
        jwt_token, key = issue_token(root, user, db_url=db), create_api_key(root, user, db_url=db)
    except (OSError, ValueError, SQLAlchemyError) as exc:
        fail(exc)
    typer.echo(jwt_token)
    typer.echo(f"api key: {key}", err=True)


@app.command()
def fsck(
    root: Path | None = typer.Option(None, "--root", help="The repository folder of `eotdlfs serve`."),
    db: str | None = DB_OPTION,
    blobs: str | None = BLOBS_OPTION,
    quick: bool = typer.Option(False, "--quick", help="Check blob sizes only, do not hash them."),
) -> None:
    """Check a repository: every listed file's blob exists and hashes right, no version half-done."""
    from botocore.exceptions import BotoCoreError, ClientError
    from sqlalchemy.exc import SQLAlchemyError

    from eotdlfs.server.fsck import check

    if root is None and (db is None or blobs is None):
        fail("give --root, or --db and --blobs")
    try:
        report = check(root, hash_blobs=not quick, db_url=db, blobs_url=blobs)
    except (OSError, ValueError, SQLAlchemyError, BotoCoreError, ClientError) as exc:
        fail(exc)
    for kind, lines in (("problem", report.problems), ("orphan", report.orphans), ("note", report.notes)):
        for line in lines:
            typer.echo(f"{kind}: {line}")
    typer.echo(report.summary())
    if not report.ok:
        raise typer.Exit(1)


def check_seconds(option: str, seconds: float | None, zero: str = "") -> None:
    """ValueError unless SECONDS (given to OPTION) is a number of seconds, 0 or more. `--autoflush -1`, read
    as "off" as -1 often is, flushed after every write: a version, permanent, per `cp` of a file."""
    if seconds is not None and not 0 <= seconds < float("inf"):
        raise ValueError(f"{option} {seconds}: a number of seconds, 0 or more{zero}, expected")


@app.command()
def mount(
    # not readable=True: a crashed mount's MNT stats fine (the kernel's attribute cache) but
    # access() fails, so the check refused the remount that clears it
    mountpoint: Path = typer.Argument(..., readable=False, help="An empty folder to mount on."),
    api_url: str = typer.Option(None, "--api-url", help="Repository API (default: EOTDL_API_URL, config,"
                                " else an embedded local repository)."),
    cache_dir: Path = typer.Option(None, "--cache-dir", help="Block cache and state (default: the user cache dir)."),
    cache_size: str = typer.Option("20G", "--cache-size", help="Block cache limit, e.g. 500M, 20G (LRU eviction)."),
    foreground: bool = typer.Option(False, "--foreground", help="Serve in this process until unmounted."),
    allow_other: bool = typer.Option(False, "--allow-other", help="Let other users see the mount: they read, and "
                                     "write where the mode bits let them; only you flush."),
    autoflush: float = typer.Option(None, "--autoflush", help="Flush staged changes after this many idle seconds."),
    ttl: float = typer.Option(10.0, "--ttl", help="Seconds before record and version lists are refreshed."),
) -> None:
    """Mount every dataset and model version read-only, fetched lazily (staging is writable)."""
    from eotdlfs.cachedir import shared_cache_warning, user_cache_dir
    from eotdlfs.fs.mount import entries_hidden_by, mount_background, offline_from, parse_size

    try:
        size, cache_dir = parse_size(cache_size), cache_dir or user_cache_dir()
        check_seconds("--ttl", ttl)
        check_seconds("--autoflush", autoflush, " (0: off)")
        if foreground:
            from eotdlfs.app.mount import run_foreground  # the client, server and FUSE: only in the mount process

            return run_foreground(mountpoint, api_url, cache_dir, size, allow_other, autoflush, ttl)
        args = ["--cache-dir", str(cache_dir), "--cache-size", cache_size, "--ttl", str(ttl)]
        args += (["--api-url", api_url] if api_url else []) + (["--allow-other"] if allow_other else [])
        args += ["--autoflush", str(autoflush)] if autoflush else []
        hidden = entries_hidden_by(mountpoint)
        pid = mount_background(mountpoint, args, cache_dir)
    except (OSError, ValueError, RuntimeError) as exc:
        fail(exc)
    typer.echo(f"mounted {mountpoint} (process {pid}, log {cache_dir / 'mount.log'})")
    if hidden:
        typer.echo(f"warning: {mountpoint} is not empty: what it holds ({hidden} entries) is hidden until "
                   f"`eotdlfs umount {mountpoint}`", err=True)
    shared = shared_cache_warning(cache_dir)
    if shared:
        typer.echo(f"warning: {shared}", err=True)
    unreachable = offline_from(mountpoint)
    if unreachable:
        typer.echo(f"warning: cannot reach {unreachable}: mounted offline, showing the listing an earlier mount "
                   f"kept in {cache_dir}; it refreshes once the repository answers", err=True)


@app.command()
def umount(mountpoint: Path = typer.Argument(..., readable=False, help="The mount point.")) -> None:
    """Unmount an eotdlfs mount and wait for its process to exit."""
    from eotdlfs.fs.mount import unmount

    try:
        unmount(mountpoint)
    except OSError as exc:
        fail(exc)


@app.command()
def status(
    mountpoint: Path = typer.Argument(..., help="The mount point."),
    as_json: bool = typer.Option(False, "--json", help="Print the raw JSON."),
) -> None:
    """Cache use, hit rate, bytes fetched, server reachability (and staging state) of a mount."""
    from eotdlfs.app.commands import format_status
    from eotdlfs.fs.mount import read_status

    try:
        info = read_status(mountpoint)
    except (OSError, ValueError) as exc:
        fail(exc)
    typer.echo(json.dumps(info, indent=2, sort_keys=True) if as_json else format_status(info))


@app.command()
def flush(
    folder: Path = typer.Argument(..., help="A staged record: MNT/staging/datasets/NAME or MNT/staging/models/NAME."),
    timeout: float = typer.Option(3600.0, "--timeout", help="Seconds to wait for the result."),
) -> None:
    """Publish a record's staged changes as its next version (the mount ingests them; waits for the result)."""
    from eotdlfs.app.commands import flush_command

    folder = Path(os.path.abspath(folder))  # `.` and `..` name no record; symlinks on the way stay as given
    try:
        state = flush_command(folder, timeout, lambda message: typer.echo(message, err=True))
    except (OSError, TimeoutError) as exc:
        fail(exc)
    if state["state"] == "failed":
        fail(state["error"])
    typer.echo(f"{folder.name}: {state['message']}")


API_URL_OPTION = typer.Option(None, "--api-url", help="Repository API URL (default: EOTDL_API_URL, config, embedded).")
TOKEN_OPTION = typer.Option(
    None, "--token", help="Token (default: EOTDL_TOKEN/EOTDL_API_KEY, config, creds.json). Every local user sees it "
    "in `ps`: prefer EOTDL_TOKEN, the config file or --token-file.")
TOKEN_FILE_OPTION = typer.Option(
    None, "--token-file", help="Read the token from this file ('-': standard input), out of sight of `ps`.")
KIND_OPTION = typer.Option("datasets", "--kind", help="datasets or models.")


@app.command()
def ingest(
    path: Path = typer.Argument(..., help="Folder to ingest; its metadata.yml (or STAC catalog.json)"
                                " names the record."),
    kind: str = KIND_OPTION, api_url: str | None = API_URL_OPTION, token: str | None = TOKEN_OPTION,
    token_file: str | None = TOKEN_FILE_OPTION,
) -> None:
    """Ingest a folder as the next version: only new and changed files are uploaded."""
    from eotdlfs.app.commands import CLIENT_ERRORS, ingest_command
    from eotdlfs.client.settings import given_token

    try:
        typer.echo(ingest_command(path, kind, api_url, given_token(token, token_file)))
    except CLIENT_ERRORS as exc:
        fail(exc)


@app.command()
def get(
    name: str = typer.Argument(..., help="Dataset or model name."),
    version: int | None = typer.Option(None, "-v", "--version", help="Version (default: latest)."),
    kind: str = KIND_OPTION,
    out: Path = typer.Option(Path("."), "--out", help="Download into OUT/NAME/vN/."),
    api_url: str | None = API_URL_OPTION, token: str | None = TOKEN_OPTION,
    token_file: str | None = TOKEN_FILE_OPTION,
) -> None:
    """Download a version, verifying each file's SHA-1 and skipping files already present."""
    from eotdlfs.app.commands import CLIENT_ERRORS, get_command
    from eotdlfs.client.settings import given_token

    try:
        typer.echo(get_command(name, version, kind, out, api_url, given_token(token, token_file)))
    except CLIENT_ERRORS as exc:
        fail(exc)


@app.command("list")
def list_records(
    kind: str = KIND_OPTION,
    match: str | None = typer.Option(None, "--match", help="Only names containing TEXT (case-insensitive)."),
    api_url: str | None = API_URL_OPTION, token: str | None = TOKEN_OPTION,
    token_file: str | None = TOKEN_FILE_OPTION,
) -> None:
    """List datasets or models: name, versions, latest version's size, owner."""
    from eotdlfs.app.commands import CLIENT_ERRORS, list_command
    from eotdlfs.client.settings import given_token

    try:
        list_command(kind, match, api_url, given_token(token, token_file))
    except CLIENT_ERRORS as exc:
        fail(exc)


stac_app = typer.Typer(help="STAC (Q1+) datasets.", no_args_is_help=True)
app.add_typer(stac_app, name="stac")


@stac_app.command("search")
def stac_search(
    name: str = typer.Argument(..., help="Dataset name."),
    version: int | None = typer.Option(None, "-v", "--version", help="Version (default: latest)."),
    bbox: str | None = typer.Option(None, "--bbox", help="W,S,E,N in degrees (W > E crosses the antimeridian)."),
    datetime: str | None = typer.Option(None, "--datetime", help="A/B, A/.., ../B or one instant (RFC 3339)."),
    as_json: bool = typer.Option(False, "--json", help="Print the matching items as one GeoJSON FeatureCollection."),
    mount: Path | None = typer.Option(None, "--mount", help="Read through this eotdlfs mount and print paths on it."),
    kind: str = KIND_OPTION, api_url: str | None = API_URL_OPTION, token: str | None = TOKEN_OPTION,
    token_file: str | None = TOKEN_FILE_OPTION,
) -> None:
    """Print the paths of a STAC version's items within --bbox and --datetime (from the catalog alone)."""
    from eotdlfs.app.commands import CLIENT_ERRORS
    from eotdlfs.app.stac import search_lines
    from eotdlfs.client.settings import given_token

    try:
        lines = search_lines(name, version, bbox, datetime, as_json, mount, kind, api_url,
                             given_token(token, token_file))
    except CLIENT_ERRORS as exc:
        fail(exc)
    for line in lines:
        typer.echo(line)


if __name__ == "__main__":
    app()
