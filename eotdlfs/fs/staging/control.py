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
    os.setxattr(folder, FLUSH_XATTR, b"1")
    deadline = time.monotonic() + timeout
    while True:
        try:
            state = read_flush_state(folder)
        except OSError as exc:
            if exc.errno not in MOUNT_GONE and not _mount_gone(folder):
                raise
            raise OSError(exc.errno, "the mount stopped during the flush; every staged change is kept, and the "
                          "flush resumes when it is mounted again", str(folder)) from None
        on_state(state)
        if state["run"] > before and Stage(state["state"]).finished and not state["queued"]:
            return state
        if time.monotonic() > deadline:
            raise TimeoutError(f"the flush of {folder} did not end within {timeout:.0f} s; "
                               "it goes on in the mount (see `eotdlfs status`)")
        time.sleep(POLL_S)


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
