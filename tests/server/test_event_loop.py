"""A request waiting on the database holds up no other request (the queries of the fast path in
front of FastAPI, `download.DownloadFastPath`, run on the event loop only when they cannot stall).

The stall is real: another connection holds a lock on the table the query reads, on a real
PostgreSQL, until the test lets go.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import requests
from serverapi import Api

WAIT_S = 30.0


def _wait_for_a_blocked_query(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        deadline = time.monotonic() + WAIT_S
        while not conn.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()[0]:
            assert time.monotonic() < deadline, "the request's query never waited for the lock"
            time.sleep(0.05)


@pytest.mark.parametrize("stalled_request", ["download/data.bin?version=1", "files?version=1&path=data.bin"])
def test_a_query_waiting_on_the_database_stalls_no_other_request(pg_server, stalled_request):
    server, db = pg_server
    api = Api(server, token=server.token("alice"))
    rid = api.create("stalled")
    api.new_version(rid)
    assert api.batch(rid, 1, {"data.bin": b"payload", "other.bin": b"other"}).status_code == 200
    with psycopg.connect(db) as holder, ThreadPoolExecutor(1) as pool:
        holder.execute("LOCK TABLE file_versions IN ACCESS EXCLUSIVE MODE")
        stalled = pool.submit(requests.get, f"{server.url}datasets/{rid}/{stalled_request}", timeout=WAIT_S * 2)
        _wait_for_a_blocked_query(db)
        # answered while the other request's query waits (before, the whole event loop waited with it)
        assert requests.get(server.url, timeout=5).status_code == 200
        assert not stalled.done()
        holder.rollback()
        answer = stalled.result()
    assert answer.status_code == 200, answer.text
    assert answer.content == b"payload" or answer.json()[0]["filename"] == "data.bin"
