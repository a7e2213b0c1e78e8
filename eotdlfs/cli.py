"""The `eotdlfs` command: each command parses its options and hands the work to a library call."""

from __future__ import annotations

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


if __name__ == "__main__":
    app()
