"""How `eotdlfs flush` talks to the mount process: an extended attribute on the staged record's folder.

Setting `user.eotdlfs.flush` on `MNT/staging/KIND/NAME` asks the mount to flush that
record; reading it returns the record's flush state as JSON (`FlushState`: run number,
state, message, progress, error). No socket, no extra file in the tree: it works for
any process that can see the mount, and the kernel never caches extended attributes.
The CLI side lives here too: waiting for a flush with a progress bar, and the staging
lines of `eotdlfs status`.
"""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path
from typing import Callable

from eotdlfs.client.progress import TransferProgress

FLUSH_XATTR = "user.eotdlfs.flush"
POLL_S = 0.05


def read_flush_state(folder: Path) -> dict:
    try:
        return json.loads(os.getxattr(folder, FLUSH_XATTR))
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise OSError(f"{folder} is not a staged record of an eotdlfs mount "
                          "(expected MNT/staging/datasets/NAME or MNT/staging/models/NAME)") from None
        raise


def request_flush(folder: Path, on_state: Callable[[dict], None], timeout: float) -> dict:
    """Ask the mount to flush FOLDER and wait for the outcome, calling ON_STATE with each state seen."""
    before = read_flush_state(folder)["run"]
    os.setxattr(folder, FLUSH_XATTR, b"1")
    deadline = time.monotonic() + timeout
    while True:
        state = read_flush_state(folder)
        on_state(state)
        if state["run"] > before and state["state"] in ("done", "nothing", "failed") and not state["queued"]:
            return state
        if time.monotonic() > deadline:
            raise TimeoutError(f"the flush of {folder} did not end within {timeout:.0f} s; "
                               "it goes on in the mount (see `eotdlfs status`)")
        time.sleep(POLL_S)


def follow_flush(folder: Path, timeout: float, progress: TransferProgress, say: Callable[[str], None]) -> dict:
    """`request_flush` with the mount's progress replayed on PROGRESS and its messages (waiting for X) on SAY."""
    seen = {"files": 0, "bytes": 0, "message": None, "started": False}

    def on_state(state: dict) -> None:
        if state["message"].startswith("waiting for") and state["message"] != seen["message"]:
            say(state["message"])
            seen["message"] = state["message"]
        if state["state"] == "flushing" and not seen["started"] and state["files_total"]:
            progress.start(state["files_total"], state["bytes_total"])
            seen["started"] = True
        if seen["started"]:
            progress.advance(files=state["files_done"] - seen["files"], bytes_done=state["bytes_done"] - seen["bytes"])
            seen["files"], seen["bytes"] = state["files_done"], state["bytes_done"]

    with progress:
        return request_flush(folder, on_state, timeout)


def format_staging(staging: dict) -> list[str]:
    """Status lines, one per staged record: what is pending and how its last flush went."""
    records = staging.get("records", [])
    if not records:
        return ["staging      nothing staged" + (f" (autoflush after {staging['autoflush_s']:g} s)"
                                                  if staging.get("autoflush_s") else "")]
    lines = []
    for r in records:
        base = f"on v{r['base_version']}" if r["base_version"] else "new record"
        lines.append(f"staging      {r['record']} ({base}): {r['added']} added, {r['changed']} changed, "
                     f"{r['deleted']} deleted, {r['bytes_pending']} bytes pending; {_flush_words(r)}")
    return lines


def _flush_words(record: dict) -> str:
    state = record["flush"]
    if state == "idle":
        return "no flush yet"
    if state == "failed":
        return f"last flush failed: {record['error']}"
    if state in ("waiting", "flushing"):
        return f"flush running: {record['message']}"
    return f"last flush: {record['message']}"
