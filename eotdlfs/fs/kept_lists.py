"""The namespace's lists kept on disk (record lists, published versions' file lists): JSON, written whole.

A remount finds them while the server is down, and a published version's file list, which never
changes, is fetched once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import threading
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from eotdlfs.repository import Record, Version

log = logging.getLogger(__name__)


def kept_lists_dir(cache_dir: Path, repository: str) -> Path:
    """Where CACHE_DIR keeps REPOSITORY's lists: a folder per repository, so that a mount of another
    one, down, does not serve this one's datasets as its own (they shared one before)."""
    readable = re.sub(r"[^A-Za-z0-9.-]+", "_", repository).strip("_")[-60:]
    return cache_dir / "state" / f"{readable}-{hashlib.sha1(repository.encode()).hexdigest()[:12]}"


def drop_unkeyed_lists(cache_dir: Path) -> None:
    """Lists kept before they were kept per repository, in CACHE_DIR/state itself: nothing reads
    them now, and a version's file list can be megabytes."""
    state = cache_dir / "state"
    for old in state.glob("records-*.json"):
        with contextlib.suppress(OSError):
            old.unlink()
    shutil.rmtree(state / "listings", ignore_errors=True)


def record_to_json(record: Record) -> dict:
    versions = [dict(asdict(v), created_at=v.created_at.isoformat()) for v in record.versions]
    return dict(asdict(record), versions=versions)


def record_from_json(data: dict) -> Record:
    versions = tuple(Version(v["number"], datetime.fromisoformat(v["created_at"]), v["size"], v["draft"])
                     for v in data["versions"])
    return Record(data["kind"], data["id"], data["name"], data["owner"], versions)


def write_json(path: Path, data) -> None:
    """Keep DATA on disk for the next mount; a full or read-only disk costs only that (the list in hand is served)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot keep %s on disk: %s", path, exc)
        with contextlib.suppress(OSError):
            tmp.unlink()
