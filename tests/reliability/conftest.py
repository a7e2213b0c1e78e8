"""Fixtures of the reliability suite, and the tally it reports at the end of a run.

The tally counts what the suite did to the system and what came out: faults injected,
crashes survived, bad inputs tried, 5xx answers seen (target 0), bytes lost (target 0).
"""

from __future__ import annotations

import os
import signal
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from eotdlfs.server.fsck import check

STATE_TABLES = ("records", "versions", "file_versions", "version_files", "uploads")


@dataclass
class Tally:
    faults_injected: int = 0
    crashes_survived: int = 0
    bad_inputs_tried: int = 0
    server_errors_seen: int = 0
    bytes_lost: int = 0


TALLY = Tally()


@pytest.fixture(scope="session")
def tally() -> Tally:
    return TALLY


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if any(asdict(TALLY).values()):
        terminalreporter.write_line("reliability tally: " + ", ".join(f"{k} {v}" for k, v in asdict(TALLY).items()))


@pytest.fixture(scope="session")
def server_class(repo_server: Any) -> type:
    """`RepoServer` of tests/conftest.py (not importable by name: every conftest is 'conftest')."""
    return type(repo_server)


@pytest.fixture(scope="module")
def module_server(server_class: type, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A server of its own for one test module (its tests may write anything to it)."""
    server = server_class(tmp_path_factory.mktemp("rel-server") / "root")
    try:
        server.start()
        yield server
    finally:
        server.stop()


def server_pid(server: Any) -> int:
    """The PID of a RepoServer's `eotdlfs serve` subprocess."""
    return server._proc.pid  # RepoServer keeps its Popen private; the suite needs it to crash it


def kill9(server: Any) -> None:
    """Crash the server: SIGKILL, no shutdown; `server.start()` brings it back on the same root and port."""
    proc = server._proc
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    server._proc = None


def repository_state(root: Path) -> dict[str, object]:
    """Every row of the repository's tables and every stored file's name: equal states = nothing changed."""
    conn = sqlite3.connect(f"file:{Path(root) / 'repository.db'}?mode=ro", uri=True)
    try:
        state: dict[str, object] = {t: sorted(map(tuple, conn.execute(f"SELECT * FROM {t}"))) for t in STATE_TABLES}
    finally:
        conn.close()
    state["files"] = sorted(str(p.relative_to(root)) for d in ("blobs", "uploads")
                            for p in (Path(root) / d).rglob("*") if p.is_file())
    return state


def assert_fsck_ok(root: Path) -> None:
    report = check(root)
    assert report.ok, report.problems


@dataclass
class Proxied:
    """What mount_factory needs of a server (url, token), with the url of a fault proxy in front of it."""

    url: str
    token: Callable[[str], str]
