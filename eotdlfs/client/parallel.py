"""Running one call over many items with a few threads, failing fast."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def in_parallel(fn: Callable[[T], R], items: Iterable[T], workers: int) -> list[R]:
    """FN over ITEMS with WORKERS threads, results in order; the first failure cancels what has not started
    and is raised."""
    pool = ThreadPoolExecutor(workers)
    try:
        return list(pool.map(fn, items))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
