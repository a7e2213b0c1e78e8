"""Running one call over many items with a few threads, failing fast (client and server alike)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def in_parallel(fn: Callable[[T], R], items: Iterable[T], workers: int) -> list[R]:
    """FN over ITEMS with WORKERS threads, results in order; the first failure cancels what has not started
    and is raised. One item, or one worker, runs in the calling thread: no pool to start."""
    items = list(items)
    if len(items) <= 1 or workers <= 1:
        return [fn(item) for item in items]
    pool = ThreadPoolExecutor(workers)
    try:
        return list(pool.map(fn, items))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
