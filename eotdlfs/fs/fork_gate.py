"""A gate that the block cache's calls into SQLite pass through, closed while the process forks.

A thread inside SQLite when another forks leaves the child a copy of SQLite's mutexes as they
were: its memory allocator's (taken on every allocation) or the unix VFS's per-file one (shared
by every connection of the process to one file) stays locked for ever in the child, whose first
connection to the index then hangs (both seen in gdb stacks of hung children). Reads of the
index run on fetch workers, the hasher and the pieces writer without `BlockCache._db`, so the
fork waits here until no thread is inside, and lets none in until it is done.

Order: `_db` is taken before the gate (writes: `with self._db, SQLITE_GATE`) and the fork takes
every `_db` before closing the gate, so a thread inside never waits for a `_db` the fork holds.
A thread already inside passes again without waiting (a nested call must not wait for a fork
that waits for it), and so does the thread that closed the gate: its own calls into SQLite end
before it forks, and the garbage collector may close a connection in it (`block_index`) while
it runs the other fork handlers.
"""

from __future__ import annotations

import threading


class ForkGate:
    """Counts the threads inside; `close` (before a fork) waits until none are and keeps new ones out."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _inside, _closed and _closer; a plain lock: the way in is every read's
        self._inside = 0
        self._closed = False
        self._closer: int | None = None  # the thread that closed it
        self._opened = threading.Event()  # set while not closed
        self._opened.set()
        self._drained = threading.Event()  # set once none are inside after a close
        self._depth = threading.local()

    def __enter__(self) -> None:
        depth = getattr(self._depth, "n", 0)
        while not depth:
            with self._lock:
                if not self._closed or self._closer == threading.get_ident():
                    self._inside += 1
                    break
            self._opened.wait()
        self._depth.n = depth + 1

    def __exit__(self, *exc: object) -> None:
        self._depth.n -= 1
        if not self._depth.n:
            with self._lock:
                self._inside -= 1
                if self._closed and not self._inside:
                    self._drained.set()

    def close(self) -> None:
        with self._lock:
            self._closed, self._closer = True, threading.get_ident()
            self._opened.clear()
            if self._inside:
                self._drained.clear()
            else:
                self._drained.set()
        self._drained.wait()

    def open(self) -> None:
        with self._lock:
            self._closed, self._closer = False, None
            self._opened.set()

    def reset_in_child(self) -> None:
        """After a fork, in the child: only the forking thread exists, and it was outside."""
        self.__init__()


SQLITE_GATE = ForkGate()
