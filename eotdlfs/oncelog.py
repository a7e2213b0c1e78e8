"""Warnings said once each: a broken server's listing comes back every few seconds, its faults with it."""

from __future__ import annotations

import logging
import threading

MAX_REMEMBERED = 10_000  # past this many distinct warnings, new ones are said every time


class OnceLog:
    def __init__(self, logger: logging.Logger):
        self._logger = logger
        # Guarded by _lock.
        self._lock = threading.Lock()
        self._said: set[str] = set()

    def warning(self, message: str) -> None:
        with self._lock:
            if message in self._said:
                return
            if len(self._said) < MAX_REMEMBERED:
                self._said.add(message)
        self._logger.warning("%s", message)
