"""The bench's bookkeeping: samples per key, errors per group, live servers and mounts, the watchdog."""

from __future__ import annotations

import _thread
import shutil
import sys
import threading
import time
import traceback
from collections import defaultdict
from pathlib import Path
from typing import Callable, NamedTuple, Protocol, TypeVar

from benchlib import eotdlfs_side
from benchlib.dataset import Dataset


class Plan(NamedTuple):
    """How much each measurement does."""

    repeats: int
    rand_count: int
    rand_time_limit_s: float
    time_limit_s: float
    cog_windows: int = 50  # random 512x512 windows of the COG, one reader
    cog_small_windows: int = 25  # random 256x256 windows per reader, 4 readers at once
    delay_s: float = 0.02  # latency added each way by the delaying proxy
    only: tuple[str, ...] = ()  # groups of measurements to run (all when empty)
    steps: tuple[str, ...] = ()  # steps of the mount groups to run (all when empty), e.g. first_small


class Stoppable(Protocol):
    def stop(self) -> None: ...


S = TypeVar("S", bound=Stoppable)


class Bench:
    """State of one run: what was measured, what failed, and what must be stopped."""

    def __init__(self, work: Path, plan: Plan, profile_dir: Path | None = None):
        self.work = work
        self.plan = plan
        self.profile_dir = profile_dir
        self.dataset: Dataset | None = None
        self.samples: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, str] = {}
        self.notes: list[str] = []
        self._live: list[Stoppable] = []
        self._lock = threading.Lock()
        self._counter = 0
        self._started = time.monotonic()

    def log(self, message: str) -> None:
        print(f"[bench {time.monotonic() - self._started:6.1f}s] {message}", file=sys.stderr, flush=True)

    def fresh_dir(self, name: str) -> Path:
        """A new empty folder under the work dir (a suffix keeps repetitions apart)."""
        with self._lock:
            self._counter += 1
            path = self.work / f"{name}-{self._counter}"
        path.mkdir(parents=True)
        return path

    def env(self, api_url: str | None = None, token: str | None = None) -> dict[str, str]:
        home = self.work / "home"
        home.mkdir(exist_ok=True)
        return eotdlfs_side.isolated_env(home, api_url, token)

    def start(self, make: Callable[[], S]) -> S:
        """Start a server or mount and remember it, so stop_all reaches it whatever happens next."""
        thing = make()
        with self._lock:
            self._live.append(thing)
        return thing

    def stop(self, thing: Stoppable) -> None:
        with self._lock:
            if thing in self._live:
                self._live.remove(thing)
        thing.stop()

    def stop_all(self) -> None:
        """Stop everything still running, newest first (mounts before the servers they read from)."""
        while True:
            with self._lock:
                if not self._live:
                    return
                thing = self._live.pop()
            try:
                thing.stop()
            except Exception as exc:  # keep stopping the others
                self.log(f"stopping {thing!r} failed: {exc}")

    def record(self, key: str, value: float | None) -> None:
        if value is not None:
            self.samples[key].append(value)

    def attempt(self, group: str, run: Callable[[], None]) -> None:
        """Run one group of measurements; a failure is recorded (its keys stay null), the others still run."""
        self.log(f"running {group}")
        try:
            run()
        except Exception as exc:
            self.errors[group] = f"{type(exc).__name__}: {exc}"
            self.log(f"{group} failed:\n{traceback.format_exc()}")

    @staticmethod
    def drop(path: Path) -> None:
        """Delete a scratch folder (mount caches and downloads take up to GBs each)."""
        shutil.rmtree(path, ignore_errors=True)


class Watchdog:
    """Past LIMIT_S, stop every live mount and server (unblocking any read on them) and interrupt the bench."""

    def __init__(self, limit_s: float, bench: Bench):
        self._timer = threading.Timer(limit_s, self._fire, args=(bench,))
        self._timer.daemon = True

    @staticmethod
    def _fire(bench: Bench) -> None:
        bench.log("time limit reached: stopping every mount and server")
        bench.stop_all()
        _thread.interrupt_main()

    def __enter__(self) -> "Watchdog":
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
