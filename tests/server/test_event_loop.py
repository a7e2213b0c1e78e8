"""A request waiting on the database, or on credentials to sign a URL, holds up no other request
(the fast path in front of FastAPI, `download.DownloadFastPath`, runs such calls on the event
loop only when they cannot stall).

The stalls are real: another connection holds a lock on the table the query reads, on a real
PostgreSQL; a credential process takes its time; both until the test lets go.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import requests
from serverapi import Api

from tests.conftest import RepoServer, _serve

WAIT_S = 30.0


def _wait_for_a_blocked_query(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        deadline = time.monotonic() + WAIT_S
        while not conn.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()[0]:
            assert time.monotonic() < deadline, "the request's query never waited for the lock"
            time.sleep(0.05)


@pytest.mark.parametrize("stalled_request, headers", [("download/data.bin?version=1", {}),
                                                     ("download/data.bin?version=1", {"Range": "bytes=0-6"}),
                                                     ("files?version=1&path=data.bin", {})])
def test_a_query_waiting_on_the_database_stalls_no_other_request(pg_server, stalled_request, headers):
    server, db = pg_server
    api = Api(server, token=server.token("alice"))
    rid = api.create("stalled")
    api.new_version(rid)
    assert api.batch(rid, 1, {"data.bin": b"payload", "other.bin": b"other"}).status_code == 200
    with psycopg.connect(db) as holder, ThreadPoolExecutor(1) as pool:
        holder.execute("LOCK TABLE file_versions IN ACCESS EXCLUSIVE MODE")
        stalled = pool.submit(requests.get, f"{server.url}datasets/{rid}/{stalled_request}", headers=headers,
                              timeout=WAIT_S * 2)
        _wait_for_a_blocked_query(db)
        # answered while the other request's query waits (before, the whole event loop waited with it)
        assert requests.get(server.url, timeout=5).status_code == 200
        assert not stalled.done()
        holder.rollback()
        answer = stalled.result()
    assert answer.ok, answer.text
    assert answer.content == b"payload" or answer.json()[0]["filename"] == "data.bin"


SLOW_CREDENTIALS = """#!/bin/sh
[ -e {flag} ] && touch {flag}.asked
for i in $(seq {tenths}); do [ -e {flag} ] || break; sleep 0.1; done
printf '{{"Version": 1, "AccessKeyId": "testing", "SecretAccessKey": "testing", "Expiration": "%s"}}' \\
    "$(date -u -d '+2 minutes' +%Y-%m-%dT%H:%M:%SZ)"
"""


def test_a_presign_waiting_for_credentials_stalls_no_other_request(s3, tmp_path):
    """With --redirect-downloads, a 307's URL is signed with credentials botocore may have to
    fetch first (an instance's role, SSO, a credential_process): here a process that takes its
    time, asked again at each signing since its credentials expire within botocore's 10 minutes."""
    flag, script = tmp_path / "slow", tmp_path / "credentials.sh"
    script.write_text(SLOW_CREDENTIALS.format(flag=flag, tenths=int(WAIT_S * 10)))
    script.chmod(0o755)
    (tmp_path / "aws-config").write_text(f"[default]\ncredential_process = {script}\n")
    env = {**s3.env, "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
           "AWS_CONFIG_FILE": str(tmp_path / "aws-config")}
    for server in _serve(RepoServer(tmp_path / "root", env=env, blobs=s3.bucket(), args=("--redirect-downloads",))):
        api = Api(server, token=server.token("alice"))
        rid = api.create("presigned")
        api.new_version(rid)
        assert api.batch(rid, 1, {"data.bin": b"payload"}).status_code == 200
        flag.touch()
        with ThreadPoolExecutor(1) as pool:
            stalled = pool.submit(requests.get, f"{server.url}datasets/{rid}/download/data.bin", timeout=WAIT_S * 2,
                                  allow_redirects=False)
            deadline = time.monotonic() + WAIT_S
            while not (tmp_path / "slow.asked").exists():  # the signing is under way, asking the slow process
                assert time.monotonic() < deadline and not stalled.done(), "the download never asked for credentials"
                time.sleep(0.05)
            # answered while the other request's URL waits to be signed (before, the event loop waited with it)
            assert requests.get(server.url, timeout=5).status_code == 200
            assert not stalled.done()
            flag.unlink()
            assert stalled.result().status_code == 307
