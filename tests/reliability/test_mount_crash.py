"""kill -9 of the mount in the middle of a flush: after a remount, the next flush ends with exactly one new version.

The fault proxy holds the flush at one point (a zip batch half sent; the server's answer to
`publish` not yet delivered), the mount process is killed with SIGKILL right there, the
mount point is cleaned and mounted again on the same cache, and `eotdlfs flush` runs again.
The draft of the interrupted flush is never visible (not in the mount's listing, not in the
API's versions); the end state is v2 = exactly what was
staged; the repository passes fsck. (A kill in the middle of a multipart part is
tests/staging/test_mount_staging.py::test_kill_during_flush_then_remount_gives_exactly_one_version.)
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from pathlib import Path

import pytest

from eotdlfs.client.ingest import ingest_folder
from reliability.conftest import Proxied, assert_fsck_ok
from reliability.faultproxy import FaultProxy
from tests.client.helpers import cli_env, client, make_folder, run_cli

KIND, NAME = "datasets", "mount-crash"
CRASH_POINTS = {
    "mid-batch": ("stall", r"/batch\?", {"at": 100, "delay": 60}),
    "publish-answer-lost": ("slow", r"/publish\?", {"delay": 60}),
}


def tree_sha1(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("point", sorted(CRASH_POINTS))
def test_mount_kill9_mid_flush_then_flush_gives_one_version(fresh_server, mount_factory, tmp_path: Path, tally,
                                                            point: str) -> None:
    server = fresh_server
    ingest_folder(client(server), KIND, make_folder(tmp_path / "src", NAME, 30))
    mode, pattern, kw = CRASH_POINTS[point]
    with FaultProxy(server.url) as proxy:
        mount = mount_factory(Proxied(proxy.url, server.token), ttl=1, cache_dir=tmp_path / "cache")
        target = mount.path / "staging" / KIND / NAME
        (target / "new.bin").write_bytes(os.urandom(300_000))
        (target / "part3" / "file0003.txt").write_text("changed before the crash\n")
        (target / "part4" / "file0004.txt").unlink()
        expected = tree_sha1(target)
        fault = proxy.inject(mode, pattern, count=1, **kw)
        os.setxattr(target, "user.eotdlfs.flush", b"1")
        assert fault.struck.wait(60)
        if point == "mid-batch":  # the flush's draft exists on the server; readers must not see it
            time.sleep(1.5)  # past the mount's listing TTL
            assert sorted(os.listdir(mount.path / KIND / NAME)) == ["latest", "v1"]
        os.kill(mount.pid, signal.SIGKILL)
        tally.faults_injected += 1
        proxy.clear()
        mount.unmount()
        published = [v["version_id"] for v in client(server).record_by_name(KIND, NAME)["versions"]]
        assert published == ([1, 2] if point == "publish-answer-lost" else [1])  # a draft is never shown
        mount.mount()
        tally.crashes_survived += 1
        result = run_cli(cli_env(tmp_path, server.url, server.token("alice")), "flush", str(target), "--timeout", "60")
        assert result.returncode == 0, result.stdout + result.stderr
    record = client(server).record_by_name(KIND, NAME)
    assert [v["version_id"] for v in record["versions"]] == [1, 2] and record["drafts"] == []
    listing = {f["filename"]: f["checksum"] for f in client(server).files(KIND, record["id"], 2)}
    assert listing == expected
    assert_fsck_ok(server.root)
