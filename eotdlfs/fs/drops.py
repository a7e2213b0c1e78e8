"""Files whose blocks are being dropped (they failed their checksum), for readers to wait on.

Between a file failing its checksum and the last of its blocks leaving memory and the cache,
a reader opened meanwhile would read the bad blocks not dropped yet, and its hashing would
fail again: it waits here until the drop is over.

Locks. `Drops._over` (a Condition) guards the count of drops under way per file; a leaf.
"""

from __future__ import annotations

import threading
import time


class Drops:
    def __init__(self):
        # Guarded by _over.
        self._over = threading.Condition(threading.Lock())
        self._under_way: dict[str, int] = {}  # checksum -> drops begun and not ended

    def begin(self, checksum: str) -> None:
        with self._over:
            self._under_way[checksum] = self._under_way.get(checksum, 0) + 1

    def end(self, checksum: str) -> None:
        with self._over:
            self._under_way[checksum] -= 1
            if not self._under_way[checksum]:
                del self._under_way[checksum]
            self._over.notify_all()

    def wait(self, checksum: str, timeout: float = 30.0) -> None:
        """Return once no drop of CHECKSUM is under way (or after TIMEOUT s)."""
        if checksum not in self._under_way:  # a dict lookup without the lock: the common case
            return
        deadline = time.monotonic() + timeout
        with self._over:
            while checksum in self._under_way and time.monotonic() < deadline:
                self._over.wait(max(0.0, deadline - time.monotonic()))
