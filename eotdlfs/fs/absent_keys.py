"""Keys the block cache's index did not hold, remembered a moment: a miss without asking again.

A seeking reader's 128 KiB kernel request asked the index three or four times whether its block
was there whole (each lookup a hand-over of the GIL, on a path where other threads wait for it:
the Python part of such a request went from 118 to 74 us, median, without them). Another
process's entry of a key is seen once its absence is `KEPT_S` old: a fetch of what was there
meanwhile costs bytes, never a wrong one. This process's own entries end the memory of their keys
at once, and a lookup that read the index before one of them was committed notes nothing (it may
have read just before the entry).

Locks. `_lock` is a leaf.
"""

from __future__ import annotations

import threading
import time
from typing import Iterable

KEPT_S = 1.0
MOST_KEYS = 1 << 16  # remembered at once (a reader jumping through a huge file notes a few per read)


class AbsentKeys:
    def __init__(self, kept_s: float = KEPT_S):
        self.kept_s = kept_s
        self._lock = threading.Lock()
        self._absent: dict[str, float] = {}  # key -> when the index did not hold it
        self._entries = 0  # this process's committed entering transactions

    def may_hold(self, keys: Iterable[str]) -> tuple[list[str], int]:
        """Those of KEYS worth asking the index for (all but those absent within `kept_s`), and a mark
        to hand `note` with those the index then did not hold."""
        now = time.monotonic()
        with self._lock:
            return [key for key in keys if now - self._absent.get(key, -self.kept_s) >= self.kept_s], self._entries

    def note(self, keys: Iterable[str], mark: int) -> None:
        """KEYS were not in the index as read after `may_hold` gave MARK: remembered, unless this process
        entered keys since (maybe these, after the read)."""
        now = time.monotonic()
        with self._lock:
            if mark != self._entries:
                return
            if len(self._absent) >= MOST_KEYS:
                self._absent.clear()
            self._absent.update(dict.fromkeys(keys, now))

    def entered(self, keys: Iterable[str]) -> None:
        """KEYS are in the index now (their transaction committed)."""
        with self._lock:
            self._entries += 1
            for key in keys:
                self._absent.pop(key, None)
