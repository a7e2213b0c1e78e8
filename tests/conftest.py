"""Shared pytest fixtures.

Repository server (owned by the server tests; everyone may use it):

- `repo_server` (session scope) and `fresh_server` (function scope) run
  `python -m eotdlfs serve --root <tmp> --port <free port>` as a subprocess on 127.0.0.1
  and yield a `RepoServer`:
    .url           base URL, ends with '/'
    .root          the server's repository folder (Path)
    .port          its port
    .token(user)   a JWT for USER (HS256, signed with the server's secret)
    .api_key(user) a new X-API-Key for USER
    .stats()       GET /eotdlfs/stats as a dict (counters since the last start)
    .restart()     stop, then start again on the same root and port (nothing may be lost)
    .stop(), .start()
  The server is stopped in a finally, even when a test fails. The session server is
  shared: use unique record names (e.g. `unique_name`) and compare stats as deltas.
- `server_factory(env=None, root=None)` (function scope): starts one more server with extra
  environment (e.g. `{"EOTDLFS_MAX_BODY_BYTES": "1000"}`, see `eotdlfs.server.limits`) and/or
  a given root folder; all stopped at the end.
- `unique_name(prefix)`: a valid record name that no other test uses.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, TypeVar

import pytest
import requests

START_TIMEOUT_S = 30.0
IN_CI = os.environ.get("CI") == "true"
# CI, or EOTDLFS_FULL_MATRIX=1: also the tests marked slow (long suites, the server suite on
# PostgreSQL + S3), which keep the default run within about 12 minutes when left out.
FULL_MATRIX = IN_CI or os.environ.get("EOTDLFS_FULL_MATRIX") == "1"
T = TypeVar("T")
STOP_TIMEOUT_S = 10.0



def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Outside CI, the tests marked slow are skipped, saying how to run them."""
    if FULL_MATRIX:
        return
    skip = pytest.mark.skip(reason="slow: runs in CI, or with EOTDLFS_FULL_MATRIX=1")
    for item in items:
        if item.get_closest_marker("slow") is not None:  # not a parameter named "slow"
            item.add_marker(skip)

def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if PROC has not exited within STOP_TIMEOUT_S."""
    proc.terminate()
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(STOP_TIMEOUT_S)


class RepoServer:
    """`eotdlfs serve` in a subprocess on 127.0.0.1."""

    def __init__(self, root: Path, port: int | None = None, env: dict[str, str] | None = None,
                 db: str | None = None, blobs: str | None = None, args: tuple[str, ...] = ()):
        self.root = Path(root)
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.env = env or {}
        self.db, self.blobs = db, blobs  # `--db`, `--blobs` (None: SQLite and blobs under root)
        self.args = [*(["--db", db] if db else []), *(["--blobs", blobs] if blobs else []), *args]
        self.log = self.root.parent / f"{self.root.name}-server.log"
        self._proc: subprocess.Popen | None = None

    def start(self) -> None:
        if self._proc is not None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "eotdlfs", "serve", "--root", str(self.root), "--port", str(self.port),
                 *self.args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env={**os.environ, **self.env})
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                raise RuntimeError(f"eotdlfs serve exited at start; see {self.log}")
            try:
                if requests.get(self.url + "eotdlfs/capabilities", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"eotdlfs serve did not answer within {START_TIMEOUT_S}s; see {self.log}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc)

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing of the server's own shutdown runs."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)

    def restart(self) -> None:
        self.stop()
        self.start()

    def token(self, user: str) -> str:
        from eotdlfs.server.auth import issue_token

        return issue_token(self.root, user, db_url=self.db)

    def blob_store(self):
        """The server's blob store (folder or bucket), to look at what it holds."""
        from eotdlfs.server.blobs import open_blobs

        self._use_aws_env()
        return open_blobs(self.root, self.blobs)

    def fsck(self):
        """`eotdlfs.server.fsck.check` of the server's repository, whatever its layout."""
        from eotdlfs.server.fsck import check

        self._use_aws_env()
        return check(self.root, db_url=self.db, blobs_url=self.blobs)

    def _use_aws_env(self) -> None:
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("AWS_")})  # the same for every bucket

    def secret(self) -> bytes:
        """The secret the server signs tokens with."""
        from eotdlfs.server.auth import load_secret
        from eotdlfs.server.db import Database

        db = Database(self.root, self.db)
        try:
            return load_secret(self.root, db)
        finally:
            db.close()

    def api_key(self, user: str) -> str:
        from eotdlfs.server.auth import create_api_key

        return create_api_key(self.root, user, db_url=self.db)

    def stats(self) -> dict:
        response = requests.get(self.url + "eotdlfs/stats", timeout=10)
        response.raise_for_status()
        return response.json()


def _serve(server: T) -> Iterator[T]:
    """SERVER started, then stopped whatever happens (a RepoServer, or anything with start and stop)."""
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def new_server():
    """new_server(root, env=None) -> a RepoServer on ROOT, not started. The server suite overrides
    it to run on each storage layout (tests/server/conftest.py)."""
    return lambda root, env=None: RepoServer(root, env=env)


@pytest.fixture(scope="session")
def repo_server(new_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RepoServer]:
    yield from _serve(new_server(tmp_path_factory.mktemp("repo-server") / "root"))


@pytest.fixture
def fresh_server(new_server, tmp_path: Path) -> Iterator[RepoServer]:
    yield from _serve(new_server(tmp_path / "root"))


def stop_all(servers: list[RepoServer]) -> None:
    for server in servers:
        server.stop()


@pytest.fixture
def server_factory(new_server, tmp_path: Path) -> Iterator:
    servers: list[RepoServer] = []

    def make(env: dict[str, str] | None = None, root: Path | None = None) -> RepoServer:
        server = new_server(root or tmp_path / f"root{len(servers)}", env)
        servers.append(server)
        server.start()
        return server

    try:
        yield make
    finally:
        stop_all(servers)


_names = itertools.count(1)


@pytest.fixture
def unique_name():
    """unique_name('ds') -> 'ds-<pid>-<n>', a valid record name used by no other test."""

    def make(prefix: str = "rec") -> str:
        return f"{prefix}-{os.getpid()}-{next(_names)}"

    return make


# --- Mounts (owned by the fs tests; staging tests use them too) ------------------------------
# `mount_factory(server, ttl=10.0, cache_dir=None, extra_args=(), path=None)` mounts
# `python -m eotdlfs mount MNT --foreground --api-url <server.url> --cache-dir <tmp>` as a
# subprocess (token of user 'alice' in EOTDL_TOKEN), waits until the kernel shows it, and
# yields a `Mount` (.path, .cache_dir, .pid, .status(), .unmount(), .remount()). Every mount
# is unmounted (fusermount -u, then -z) and its process stopped by PID in a finally.

MOUNT_TIMEOUT_S = 30.0


class Mount:
    def __init__(self, server: RepoServer, path: Path, cache_dir: Path, ttl: float,
                 extra_args: tuple[str, ...] = (), user: str = "alice"):
        self.server, self.path, self.cache_dir = server, path, cache_dir
        self.ttl, self.extra_args, self.user = ttl, extra_args, user
        self.log = cache_dir.parent / f"{path.name}-mount.log"
        self._proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def mount(self) -> None:
        from eotdlfs.fs.mount import is_mounted

        self.path.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "EOTDL_TOKEN": self.server.token(self.user), "EOTDLFS_TIMEOUT": "5"}
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "eotdlfs", "mount", str(self.path), "--foreground",
                 "--api-url", self.server.url, "--cache-dir", str(self.cache_dir),
                 "--ttl", str(self.ttl), *self.extra_args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + MOUNT_TIMEOUT_S
        while not is_mounted(self.path):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.unmount()
                raise RuntimeError(f"mount of {self.path} failed; see {self.log}")
            time.sleep(0.05)

    def unmount(self) -> None:
        from eotdlfs.fs.mount import fusermount, is_mounted, stop_process, wait_for_exit

        try:
            if is_mounted(self.path) and fusermount(self.path).returncode != 0:
                fusermount(self.path, lazy=True)
        finally:
            proc, self._proc = self._proc, None
            if proc is not None and not wait_for_exit(proc.pid, 10):
                stop_process(proc.pid)
            if is_mounted(self.path):
                fusermount(self.path, lazy=True)

    def remount(self) -> None:
        self.unmount()
        self.mount()

    def status(self) -> dict:
        import json

        return json.loads((self.path / ".eotdlfs" / "status.json").read_text())


@pytest.fixture
def mount_factory(tmp_path: Path):
    mounts: list[Mount] = []

    def make(server: RepoServer, ttl: float = 10.0, cache_dir: Path | None = None,
             extra_args: tuple[str, ...] = (), user: str = "alice", path: Path | None = None) -> Mount:
        mount = Mount(server, path or tmp_path / f"mnt{len(mounts)}", cache_dir or tmp_path / f"cache{len(mounts)}",
                      ttl, tuple(extra_args), user)
        mounts.append(mount)
        mount.mount()
        return mount

    try:
        yield make
    finally:
        for mount in mounts:
            mount.unmount()
