"""Fixtures of the server tests: the layout, `kind` (both kinds) and `api` (the session server as 'alice').

Every server test runs on each layout of `eotdlfs serve`: "local" (SQLite and blobs under
--root, the default) and "postgres-s3" (`--db` on a PostgreSQL and `--blobs` on an S3 bucket,
both real servers started here). The second needs PostgreSQL's binaries; it runs when
EOTDLFS_FULL_MATRIX=1 or in CI (CI=true), where missing binaries fail instead of skipping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from engines import MotoS3, Postgres, postgres_bindir
from tests.conftest import FULL_MATRIX, IN_CI
from serverapi import Api

from tests.conftest import RepoServer, _serve, stop_all

LAYOUTS = ["local", *([pytest.param("postgres-s3", marks=pytest.mark.slow)] if FULL_MATRIX else [])]


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    bindir = postgres_bindir()
    if bindir is None:
        if IN_CI:
            pytest.fail("PostgreSQL is not installed: run scripts/install.sh --test")
        pytest.skip("PostgreSQL is not installed (scripts/install.sh --test installs it)")
    yield from _serve(Postgres(bindir))


@pytest.fixture(scope="session")
def s3() -> Iterator[MotoS3]:
    yield from _serve(MotoS3())


@pytest.fixture(scope="session", params=LAYOUTS)
def layout(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def new_server(layout, request):
    """new_server(root, env=None) -> a stopped RepoServer of this layout, on fresh storage."""

    def make(root: Path, env: dict[str, str] | None = None) -> RepoServer:
        if layout == "local":
            return RepoServer(root, env=env)
        pg, s3 = request.getfixturevalue("postgres"), request.getfixturevalue("s3")
        return RepoServer(root, env={**s3.env, **(env or {})}, db=pg.database(), blobs=s3.bucket())

    return make


@pytest.fixture
def shared(request, tmp_path):
    """shared(n) -> n replicas of one repository: one PostgreSQL database, one bucket, roots of their own."""
    pg, s3 = request.getfixturevalue("postgres"), request.getfixturevalue("s3")
    servers: list[RepoServer] = []

    def make(n: int, args: tuple[str, ...] = ()) -> list[RepoServer]:
        db, blobs = pg.database(), s3.bucket()
        for i in range(n):
            servers.append(RepoServer(tmp_path / f"replica{len(servers)}", env=dict(s3.env), db=db, blobs=blobs,
                                      args=args))
            servers[-1].start()
        return servers[-n:]

    try:
        yield make
    finally:
        stop_all(servers)


@pytest.fixture
def pg_server(postgres, tmp_path):
    """A server on a PostgreSQL database of its own (blobs under its root), whatever the layout; and that
    database's URL."""
    db = postgres.database()
    for server in _serve(RepoServer(tmp_path / "root", db=db)):
        yield server, db


@pytest.fixture
def local_only(layout) -> None:
    """For tests of the local layout's own files (the SQLite file, the blob folder)."""
    if layout != "local":
        pytest.skip("checks the files of the local layout")


@pytest.fixture(params=["datasets", "models"])
def kind(request) -> str:
    return request.param


@pytest.fixture
def api(repo_server, kind) -> Api:
    """The session server, for KIND, as user 'alice'."""
    return Api(repo_server, kind, repo_server.token("alice"))
