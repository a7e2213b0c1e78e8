"""How far a range request's body has come in, for readers that need only its start.

A fetch brings several blocks in one request (8 MiB); a reader waiting for the first of them
copies its bytes as soon as they are in memory, not when the whole body is (on loopback 8 MiB
take several milliseconds; behind latency, longer), and a 1 MiB kernel request no longer waits
for a whole block to arrive before its first byte goes back.

Locks. `Arrival._changed` guards the body and the count, and is a leaf.
"""

from __future__ import annotations

import threading
import time


class Arrival:
    def __init__(self):
        # Guarded by _changed.
        self._changed = threading.Condition(threading.Lock())
        self._body: memoryview | None = None
        self._arrived = 0
        self._over = False
        self._wanted: int | None = None  # the fewest bytes a waiter waits for: wake no one before

    def advance(self, body: memoryview, arrived: int) -> None:
        """BODY holds the first ARRIVED bytes (a retry starts a new body, from 0)."""
        with self._changed:
            self._body, self._arrived = body, arrived
            if self._wanted is not None and arrived >= self._wanted:
                self._wanted = None
                self._changed.notify_all()

    def end(self) -> None:
        """The request is over (its bytes are handed out whole, or it failed): waiters stop,
        and go to the request's future; the body is let go (it may be 8 MiB)."""
        with self._changed:
            self._over, self._body, self._arrived = True, None, 0
            self._changed.notify_all()

    def wait(self, upto: int, timeout: float) -> memoryview | None:
        """The body once its first UPTO bytes arrived; None if the request ended first. Raises
        TimeoutError after TIMEOUT s."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._arrived < upto and not self._over:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self._arrived} of {upto} bytes arrived in {timeout:g} s")
                self._wanted = upto if self._wanted is None else min(self._wanted, upto)
                self._changed.wait(left)
            return self._body if self._arrived >= upto else None
