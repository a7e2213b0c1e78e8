"""kill -9 of the server in the middle of an ingest: the repository stays whole and a re-run makes ONE version.

Each case puts the fault proxy between `eotdlfs ingest` and the server to catch the ingest
at one point (a zip batch half sent, a multipart part half sent, the answer to `complete`
or `publish` not yet delivered, `publish` never arriving), kills the server with SIGKILL
right there, restarts it on the same root, and checks: fsck passes, readers see no
version yet (or the whole one), and running the same ingest again ends with exactly one
published version whose every byte checks out.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest

from reliability.conftest import assert_fsck_ok, kill9
from reliability.faultproxy import FaultProxy
from reliability.ingestkit import MiB, bytes_lost, make_folder, record, run_ingest, start_ingest

STRIKE_TIMEOUT_S = 60

# case -> (fault mode, path pattern, keyword arguments of the fault)
CRASH_POINTS = {
    "mid-batch": ("stall", r"/batch\?", {"at": 4096, "delay": 2}),
    "mid-multipart": ("stall", r"/chunk/", {"at": 3 * MiB, "delay": 2, "after": 1}),
    "after-complete": ("slow", r"/complete/", {"delay": 2}),
    "publish-lost": ("drop", r"/publish\?", {}),
    "after-publish": ("slow", r"/publish\?", {"delay": 2}),
}


@pytest.fixture()
def crashable(server_factory: Callable[..., Any]) -> Any:
    """A server of this test's own, which it may kill -9 and restart (server_factory stops it)."""
    return server_factory()


def crash_during(server: Any, ingest: subprocess.Popen, moment: Callable[[], None], tally: Any) -> None:
    """Wait for MOMENT, kill -9 the server, let the ingest fail, restart the server and fsck it."""
    try:
        moment()
        kill9(server)
        ingest.wait(60)
    finally:
        if ingest.poll() is None:
            ingest.kill()
            ingest.wait(10)
    server.start()
    tally.crashes_survived += 1
    assert_fsck_ok(server.root)


def rerun_gives_one_version(server: Any, folder: Path, name: str, files: dict[str, bytes], tally: Any) -> None:
    rerun = run_ingest(folder, server.url, server.token("alice"), folder.parent / "cache")
    assert rerun.returncode == 0, rerun.stderr
    rec = record(server.url, "datasets", name)
    assert [v["version_id"] for v in rec["versions"]] == [1] and rec["drafts"] == [], rec
    lost = bytes_lost(server.url, "datasets", rec["id"], 1, files)
    tally.bytes_lost += lost
    assert lost == 0
    assert_fsck_ok(server.root)


# The default run crashes one upload and one publish; CI crashes at every point.
IN_CI_ONLY = {"mid-multipart", "after-complete", "after-publish"}


@pytest.mark.parametrize("point", [pytest.param(point, marks=pytest.mark.slow) if point in IN_CI_ONLY else point
                                   for point in sorted(CRASH_POINTS)])
def test_server_kill9_mid_ingest_then_rerun_makes_one_version(crashable, tmp_path: Path, tally, point: str) -> None:
    server, folder, name = crashable, tmp_path / "data", f"crash-{point}"
    files = make_folder(folder, name, small=30, large_bytes=17 * MiB, seed=len(point))
    mode, pattern, kw = CRASH_POINTS[point]
    with FaultProxy(server.url) as proxy:
        fault = proxy.inject(mode, pattern, count=1, **kw)
        ingest = start_ingest(folder, proxy.url, server.token("alice"), tmp_path / "cache", tmp_path / "ingest.log")

        def struck() -> None:
            assert fault.struck.wait(STRIKE_TIMEOUT_S), (tmp_path / "ingest.log").read_text()
            tally.faults_injected += 1

        crash_during(server, ingest, struck, tally)
    assert len(record(server.url, "datasets", name)["versions"]) <= 1  # nothing, or all of it if publish committed
    rerun_gives_one_version(server, folder, name, files, tally)


@pytest.mark.slow
def test_server_kill9_at_random_moments_converges_to_one_version(crashable, tmp_path: Path, tally) -> None:
    """Kill the server at a few fixed moments of one ingest, restarting it each time, then let it finish."""
    server, folder = crashable, tmp_path / "data"
    files = make_folder(folder, "crash-random", small=120, large_bytes=17 * MiB, seed=7)
    for delay in (0.5, 1.5):  # seconds after the ingest starts
        ingest = start_ingest(folder, server.url, server.token("alice"), tmp_path / "cache", tmp_path / "ingest.log")
        crash_during(server, ingest, lambda: _wait_quietly(ingest, delay), tally)
    rerun_gives_one_version(server, folder, "crash-random", files, tally)


def _wait_quietly(process: subprocess.Popen, seconds: float) -> None:
    try:
        process.wait(seconds)
    except subprocess.TimeoutExpired:
        pass
