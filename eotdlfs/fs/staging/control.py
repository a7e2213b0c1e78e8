"""How `eotdlfs flush` talks to the mount process: an extended attribute on the staged record's folder.

Setting `user.eotdlfs.flush` on `MNT/staging/KIND/NAME` asks the mount to flush that
record; reading it returns the record's flush state as JSON (`flush.FlushState`: run number,
`Stage`, message, progress, error). No socket, no extra file in the tree: it works for
any process that can see the mount, and the kernel never caches extended attributes.
`request_flush` is the other side, used by `eotdlfs flush` (`eotdlfs.app.commands`).
"""

from __future__ import annotations

import errno
import json
import os
import time
from enum import Enum
from pathlib import Path
from typing import Callable

from eotdlfs.fs.mount import read_status, wait_for_exit
from eotdlfs.fs.staging.journal import JOURNAL_FILE, STAGING_FOLDER, StagingJournal

FLUSH_XATTR = "user.eotdlfs.flush"
POLL_S = 0.05
# What the folder's xattr read fails with once the mount process died (killed, crashed).
MOUNT_GONE = (errno.ECONNABORTED, errno.ENOTCONN)


class Stage(str, Enum):
    """Where a record's flushes stand; its value is what `eotdlfs flush` and `status` read."""

    IDLE = "idle"
    WAITING = "waiting"
    FLUSHING = "flushing"
    DONE = "done"
    NOTHING = "nothing"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (Stage.DONE, Stage.NOTHING, Stage.FAILED)


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
    holder = _mount_holder(folder)
    os.setxattr(folder, FLUSH_XATTR, b"1")
    deadline = time.monotonic() + timeout
    while True:
        try:
            state = read_flush_state(folder)
        except OSError as exc:
            if exc.errno not in MOUNT_GONE and not _mount_gone(folder):
                raise
            # An unmount lets a running flush end before the process exits: its journal has the outcome.
            kept = _outcome_kept(holder, folder, before, deadline)
            if kept is not None:
                return kept
            raise OSError(exc.errno, "the mount stopped during the flush; every staged change is kept, and the "
                          "flush resumes when it is mounted again", str(folder)) from None
        on_state(state)
        if state["run"] > before and Stage(state["state"]).finished and not state["queued"]:
            return state
        if time.monotonic() > deadline:
            raise TimeoutError(f"the flush of {folder} did not end within {timeout:.0f} s; "
                               "it goes on in the mount (see `eotdlfs status`)")
        time.sleep(POLL_S)


def _mount_holder(folder: Path) -> tuple[int, Path] | None:
    """The PID and cache dir of the mount process serving FOLDER (MNT/staging/KIND/NAME), if it says."""
    try:
        status = read_status(folder.absolute().parents[2])
        return int(status["pid"]), Path(status["cache_dir"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _outcome_kept(holder: tuple[int, Path] | None, folder: Path, before: int, deadline: float) -> dict | None:
    """The flush state the mount process recorded in FOLDER's journal for a flush after run BEFORE,
    once that process has exited (waiting until DEADLINE); None when it recorded none."""
    if holder is None:
        return None
    pid, cache_dir = holder
    journal_folder = cache_dir / STAGING_FOLDER / folder.absolute().parent.name / folder.name
    if not wait_for_exit(pid, max(0.0, deadline - time.monotonic())) or not (journal_folder / JOURNAL_FILE).exists():
        return None
    journal = StagingJournal(journal_folder)
    try:
        kept = journal.get_meta("last_flush", {})
    finally:
        journal.close()
    if kept.get("run", 0) <= before or not Stage(kept.get("state", Stage.IDLE)).finished:
        return None
    return {**kept, "queued": False}


def _mount_gone(folder: Path) -> bool:
    """Whether the mount holding FOLDER (MNT/staging/KIND/NAME) died. Its root answers ENOTCONN
    until libfuse's auto_unmount takes the mount away; from then on FOLDER is ENOENT, and MNT is
    a plain folder again."""
    root = folder.absolute().parents[2]
    try:
        os.statvfs(root)
    except OSError as exc:
        return exc.errno in MOUNT_GONE
    return not os.path.ismount(root)
