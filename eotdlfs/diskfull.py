"""Telling a full disk apart from other failures, for the server, the cache and staging alike."""

from __future__ import annotations

import errno
import sqlite3

SQLITE_FULL = 13  # SQLite's result code for "database or disk is full"


def is_disk_full(exc: BaseException) -> bool:
    """True when EXC says the disk (or quota) is full, from the OS or from SQLite."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(exc, sqlite3.OperationalError) and getattr(exc, "sqlite_errorcode", None) == SQLITE_FULL
