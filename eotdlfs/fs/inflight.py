"""Fetches from the server run in the background, one per key at a time; callers wait a bounded time.

A FUSE callback must never hang on a server that accepts connections and never answers: the
fetch (which may retry for minutes) runs in a thread of its own, callers that need the same
answer share it, and each waits at most `limit` seconds for it.

Locks. `BackgroundFetches._lock` guards the map of running fetches and is a leaf: it is held
only to look up, add or remove a future, never while a fetch runs or a caller waits.
"""

from __future__ import annotations

import _thread
import threading
from concurrent.futures import Future
from typing import Callable, Hashable, TypeVar

T = TypeVar("T")


class BackgroundFetches:
    def __init__(self, limit: float):
        # Set once.
        self.limit = limit
        # Guarded by _lock.
        self._lock = threading.Lock()
        self._running: dict[Hashable, Future] = {}

    def start(self, key: Hashable, fetch: Callable[[], T]) -> Future:
        """FETCH running in the background for KEY; the one already running for KEY if there is one."""
        with self._lock:
            future = self._running.get(key)
            if future is None:
                future = self._running[key] = Future()
                # Not threading.Thread: its start() waits until the new thread runs, which on a loaded
                # machine cost a fresh mount's first lookup (which starts its version's listing) 6-13 ms.
                # Such a thread is a daemon, as these were.
                _thread.start_new_thread(self._run, (key, fetch, future))
        return future

    def result(self, key: Hashable, fetch: Callable[[], T], what: str) -> T:
        """FETCH's answer for KEY, waited for at most `limit` s; after that TimeoutError naming WHAT."""
        future = self.start(key, fetch)
        try:
            return future.result(timeout=self.limit)
        except TimeoutError:
            if future.done():  # the fetch itself timed out: its own error says more
                raise
            raise TimeoutError(f"no answer from the repository within {self.limit:g} s for {what}") from None

    def _run(self, key: Hashable, fetch: Callable[[], T], future: Future) -> None:
        try:
            result, error = fetch(), None
        except BaseException as exc:  # handed to every waiter, who maps it to an errno
            result, error = None, exc
        # KEY is free before any waiter wakes: a caller that finds the answer stale at once
        # must start a new fetch, not be handed this finished one as "already running".
        with self._lock:
            del self._running[key]
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
