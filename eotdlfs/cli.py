"""The `eotdlfs` command: each command parses its options and hands the work to a library call."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    help="The EOTDL repository as a filesystem, plus ingestion and download.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def fail(message: str) -> None:
    """Print a one-line error and exit non-zero: the CLI's only way to report failure."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


@app.command()
def serve(
    root: Path = typer.Option(..., "--root", help="Folder holding the repository (created if missing)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
) -> None:
    """Run the reference repository server (the EOTDL API plus eotdlfs extensions)."""
    from eotdlfs.server.run import serve as run_server

    try:
        run_server(root, host, port)
    except OSError as exc:
        fail(str(exc))


@app.command()
def token(
    root: Path = typer.Option(..., "--root", help="The repository folder of `eotdlfs serve`."),
    user: str = typer.Option(..., "--user", help="The user id (the token's `sub`)."),
) -> None:
    """Print a JWT for USER on stdout and a new API key on stderr."""
    from eotdlfs.server.auth import create_api_key, issue_token

    try:
        jwt_token, key = issue_token(root, user), create_api_key(root, user)
    except OSError as exc:
        fail(str(exc))
    typer.echo(jwt_token)
    typer.echo(f"api key: {key}", err=True)


if __name__ == "__main__":
    app()
