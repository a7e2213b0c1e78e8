"""Which open drafts this writer created: a writer resumes only its own draft, never another writer's.

Drafts are invisible to readers, so an interrupted ingest can finish its draft later; but a
draft on the server does not say who fills it. Two writers of one record (two mounts, two
machines, two cache dirs) must never fill the same draft, or one published version would
mix both. So each writer keeps a ledger, one small SQLite file (`eotdlfs ingest`: the user
cache dir; a mount's flushes: its staging folder), keyed by kind and record id. Record ids
are the server's random ids, so the key needs no API URL: a writer resumes its draft also
when it reaches the same server by another URL (a proxy, another host name, a restart):
- the engine records a draft right after creating it, before sending any byte;
- it forgets the draft before discarding it (a discarded number may be handed out again,
  to someone else) and after publishing it.
A run killed between creating a draft and recording it leaves an orphan draft in nobody's
ledger: hidden from readers, never reused, harmless.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from eotdlfs.cachedir import user_cache_dir
from eotdlfs.client.hashcache import private_folder

LEDGER_FILE = "drafts.sqlite"


class DraftLedger:
    """The drafts one writer created and has not yet published or discarded; safe across threads and processes."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        # A connection per call: calls are rare (a few per ingest) and no handle outlives them.
        private_folder(self.path.parent)
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA synchronous=FULL")  # a recorded draft survives a power loss
        conn.execute("CREATE TABLE IF NOT EXISTS own_drafts (kind TEXT NOT NULL, record_id TEXT NOT NULL,"
                     " version INTEGER NOT NULL, PRIMARY KEY (kind, record_id))")
        return conn

    def draft(self, kind: str, record_id: str) -> int | None:
        """The draft this writer created for the record and still owns, if any."""
        with closing(self._connect()) as conn:
            row = conn.execute("SELECT version FROM own_drafts WHERE kind = ? AND record_id = ?",
                               (kind, record_id)).fetchone()
        return int(row[0]) if row else None

    def record(self, kind: str, record_id: str, version: int) -> None:
        with closing(self._connect()) as conn:
            conn.execute("INSERT OR REPLACE INTO own_drafts VALUES (?, ?, ?)", (kind, record_id, version))

    def forget(self, kind: str, record_id: str) -> None:
        with closing(self._connect()) as conn:
            conn.execute("DELETE FROM own_drafts WHERE kind = ? AND record_id = ?", (kind, record_id))


def user_ledger() -> DraftLedger:
    """The ledger of `eotdlfs ingest` on this machine (`$EOTDLFS_CACHE_DIR` overrides the user cache dir)."""
    return DraftLedger(user_cache_dir() / LEDGER_FILE)
