"""A NUL in a request's text, which PostgreSQL's text cannot hold (SQLite's can), is a 4xx on
PostgreSQL too: a lookup is answered as on SQLite (nothing has the name), a write refused (400).
Before, psycopg's DataError was a 500."""

from __future__ import annotations

import pytest
import requests
from serverapi import Api

LOOKUPS = {  # request -> (status, answer) as SQLite gives them
    "datasets?name=a%00b": (404, {"detail": "Dataset doesn't exist"}),
    "models?name=%00": (404, {"detail": "Model doesn't exist"}),
    "datasets?match=%00": (200, []),
    "datasets/%00/download/a.bin": (404, {"detail": "Dataset doesn't exist"}),
}


@pytest.mark.parametrize("request_path", list(LOOKUPS))
def test_a_lookup_of_a_text_with_a_nul_is_answered_as_on_sqlite(pg_server, request_path):
    server, _ = pg_server
    r = requests.get(server.url + request_path, timeout=30)
    assert (r.status_code, r.json()) == LOOKUPS[request_path]


def test_a_text_with_a_nul_to_store_is_refused(pg_server):
    server, _ = pg_server
    api = Api(server, token=server.token("alice"))
    r = api.post("datasets", json={"name": "nul-license", "authors": ["Ada"], "source": "http://example.com",
                                   "license": "M\x00IT"})
    assert (r.status_code, r.json()) == (400, {"detail": "A text in the request contains a NUL character"})
    assert api.get("datasets?name=nul-license").status_code == 404
