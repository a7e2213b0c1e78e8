"""A `--db` URL's own `options=` (and, without it, PGOPTIONS) apply together with the statement
bounds of EOTDLFS_DB_STATEMENT_TIMEOUT_S. Before, the bounds replaced them: a URL naming its schema
(`?options=-c search_path=...`) made the repository's tables in `public` instead."""

from __future__ import annotations

from urllib.parse import quote

import psycopg

from eotdlfs.server.db import Database


def _settings(db: Database, *names: str) -> list[str]:
    with db.query() as tx:
        return [tx.execute(f"SHOW {name}").fetchone()[name] for name in names]


def test_the_urls_options_and_the_statement_bounds_both_apply(postgres):
    url = postgres.database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA repo")
    db = Database(None, url + "?options=" + quote("-c search_path=repo -c work_mem=8MB"), timeout_s=7)
    try:
        assert _settings(db, "search_path", "work_mem", "statement_timeout", "lock_timeout") == \
            ["repo", "8MB", "7s", "7s"]
    finally:
        db.close()
    with psycopg.connect(url) as conn:  # the repository's tables are in the schema the URL named
        schemas = {r[0] for r in conn.execute("SELECT table_schema FROM information_schema.tables"
                                              " WHERE table_name = 'records'")}
    assert schemas == {"repo"}


def test_pgoptions_apply_when_the_url_has_none(postgres, monkeypatch):
    monkeypatch.setenv("PGOPTIONS", "-c work_mem=9MB")
    db = Database(None, postgres.database(), timeout_s=5)
    try:
        assert _settings(db, "work_mem", "statement_timeout") == ["9MB", "5s"]
    finally:
        db.close()


def test_a_urls_own_statement_timeout_wins(postgres):
    db = Database(None, postgres.database() + "?options=" + quote("-c statement_timeout=4s"), timeout_s=30)
    try:
        assert _settings(db, "statement_timeout", "lock_timeout") == ["4s", "30s"]
    finally:
        db.close()
