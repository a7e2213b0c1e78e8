"""A database that does not answer (a lock held by another session) is a 503 within
EOTDLFS_DB_STATEMENT_TIMEOUT_S, which the client retries, not a request that hangs for good or a 500;
a write that timed out left nothing behind, and its retry succeeds once the database answers.

The locks are real: another connection holds them on a real PostgreSQL, or on the SQLite file.
"""

from __future__ import annotations

import sqlite3
import time

import psycopg
import requests
from serverapi import Api

from tests.conftest import RepoServer, _serve

BOUND_S = 2  # EOTDLFS_DB_STATEMENT_TIMEOUT_S of these servers
SLACK_S = 8  # a loaded machine's latency on top of it; the old code waited for ever (or 30 s on SQLite)


def _timed(call, *args, **kw) -> tuple[requests.Response, float]:
    started = time.monotonic()
    answer = call(*args, **kw)
    return answer, time.monotonic() - started


def _assert_timed_out(answer: requests.Response, elapsed: float) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.json() == {"detail": f"the repository database did not answer within {BOUND_S} s"}
    assert int(answer.headers["Retry-After"]) >= 1
    assert BOUND_S * 0.9 <= elapsed < BOUND_S + SLACK_S


def test_a_table_locked_on_postgresql_is_a_503_then_the_retry_succeeds(postgres, tmp_path):
    db = postgres.database()
    env = {"EOTDLFS_DB_STATEMENT_TIMEOUT_S": str(BOUND_S)}
    for server in _serve(RepoServer(tmp_path / "root", db=db, env=env)):
        api = Api(server, token=server.token("alice"))
        rid = api.create("locked")
        api.new_version(rid)
        assert api.batch(rid, 1, {"data.bin": b"payload"}).status_code == 200
        api.new_version(rid)
        with psycopg.connect(db) as holder, psycopg.connect(db, autocommit=True) as look:
            holder.execute("LOCK TABLE version_files IN ACCESS EXCLUSIVE MODE")
            _assert_timed_out(*_timed(api.get, f"datasets/{rid}/files?version=1"))
            _assert_timed_out(*_timed(api.get, f"datasets/{rid}/download/data.bin?version=1"))  # the fast path
            _assert_timed_out(*_timed(api.batch, rid, 2, {"new.bin": b"new"}))
            # the write's rows before the lock it waited for were rolled back
            assert look.execute("SELECT count(*) FROM file_versions WHERE path = 'new.bin'").fetchone()[0] == 0
            assert requests.get(server.url, timeout=5).status_code == 200  # the server answers meanwhile
            holder.rollback()
        # the same requests, on the pool's connections that timed out, now succeed
        assert [f["filename"] for f in api.files(rid, 1)] == ["data.bin"]
        assert api.batch(rid, 2, {"new.bin": b"new"}).status_code == 200
        assert sorted(f["filename"] for f in api.files(rid, 2)) == ["new.bin"]
        assert api.download(rid, "new.bin").content == b"new"


def test_a_locked_sqlite_database_is_a_503_then_the_retry_succeeds(tmp_path):
    env = {"EOTDLFS_DB_STATEMENT_TIMEOUT_S": str(BOUND_S)}
    for server in _serve(RepoServer(tmp_path / "root", env=env)):
        api = Api(server, token=server.token("alice"))
        rid = api.create("locked")
        api.new_version(rid)
        assert api.batch(rid, 1, {"data.bin": b"payload"}).status_code == 200
        holder = sqlite3.connect(server.root / "repository.db", isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")  # another process's writer holds SQLite's write lock
            _assert_timed_out(*_timed(api.post, "datasets/version/" + rid))
            assert [f["filename"] for f in api.files(rid, 1)] == ["data.bin"]  # reads go on (WAL)
            holder.execute("ROLLBACK")
        finally:
            holder.close()
        assert api.new_version(rid) == 2
