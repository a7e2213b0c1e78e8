"""One ingest per record at a time for each draft ledger (two `eotdlfs ingest` runs sharing a cache dir, say).

Two ingests sharing a ledger would take the same draft for their own, and the first to
publish would expose the other's half-sent files. (Writers with different ledgers, such as
two mounts, never share a draft: the server's publish compare-and-swap orders them.) The lock
is a `flock` on a file next to the ledger, held for the whole ingest and released by the
kernel if the process dies, so kill -9 never leaves it stuck.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from eotdlfs.client.errors import Conflict
from eotdlfs.cachedir import user_cache_dir
from eotdlfs.client.hashcache import private_folder


@contextmanager
def ingest_lock(api_url: str, kind: str, name: str, folder: Path | None = None) -> Iterator[None]:
    """Hold the lock of record KIND/NAME at API_URL in FOLDER (default: the user cache dir's);
    Conflict at once if another process holds it."""
    folder = folder or user_cache_dir() / "locks"
    private_folder(folder)
    path = folder / (hashlib.sha1(f"{api_url}\n{kind}\n{name}".encode()).hexdigest() + ".lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Conflict(f"another ingest of {kind}/{name} is running on this machine; "
                           "run again when it has finished", 409) from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
